package pageblob

// ErrPreviousSnapshotNotFound: the previous snapshot of a diff (Diff's
// prevSnapshot, DiffFromURL's URL) no longer exists: Azure answers 409
// PreviousSnapshotNotFound. The changes since it cannot be listed; compare
// the disks instead. It matches ErrNotFound too.
var ErrPreviousSnapshotNotFound error = &sentinel{"pageblob: the previous snapshot of the diff was not found", ErrNotFound}

// Is reports whether the error is ErrPreviousSnapshotNotFound (Azure's
// code PreviousSnapshotNotFound); every other sentinel is matched through
// Unwrap.
func (e *Error) Is(target error) bool {
	return target == ErrPreviousSnapshotNotFound && e.Code == "PreviousSnapshotNotFound"
}
