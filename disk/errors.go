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
