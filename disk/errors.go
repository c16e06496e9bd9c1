package disk

import "errors"

// ErrDisconnected is wrapped by the errors of a disk reached over a
// connection (an agent's) when that connection was lost: the operation
// failed on the way, not on the disk. Such a disk applies by itself what
// it received and records, through its Witness, whether anything failed
// there and whether anything else wrote it since; so a run that fails
// with it does not poison its journal (as a failed write or flush of the
// disk itself does), and the rerun's Check decides. Only a disk whose
// Witness covers what happened after the connection dropped may wrap it.
var ErrDisconnected = errors.New("disk: disconnected")

// ErrFlushFailed is wrapped by the error of a Witness's Check whose
// evidence shows that a flush of the target failed after the journal's
// run stopped writing (a watchdog's flush of a killed run's writes): what
// that run wrote may be lost on the disk while the page cache holds it,
// clean, and a later fsync does not report the failure again. The engine
// then discards the journal, as for evidence that does not hold, and
// reads the target with O_DIRECT, as after a run whose own flush failed.
var ErrFlushFailed = errors.New("disk: a flush of the target failed")
