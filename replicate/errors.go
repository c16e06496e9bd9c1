package replicate

import "errors"

var (
	// ErrNoBase: the changes since an earlier view or point cannot be
	// listed (the snapshot is gone, the source keeps no history). The
	// cycle compares everything instead.
	ErrNoBase = errors.New("replicate: no base for change hints")
	// ErrCorrupt: a dirty map, manifest or state file failed its
	// checksum or does not parse. It is refused, never trusted.
	ErrCorrupt = errors.New("replicate: corrupt file")
)
