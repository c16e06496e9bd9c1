package disk

import "context"

// Identifier names a disk stably across processes, for journals: a file's
// device and inode, a blob's URL without its SAS. It must not contain
// secrets. Fallback: the disk cannot be resumed from a journal.
type Identifier interface {
	Identity() string
}

// Versioner reports a token that changes whenever the disk's content may
// have changed (a file's size and modification time, a blob's ETag). A
// source whose version differs before and after a run was live, and the
// run fails unless the caller accepts a crash-inconsistent copy.
type Versioner interface {
	Version(ctx context.Context) (string, error)
}
