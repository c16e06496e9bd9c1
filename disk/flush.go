package disk

import "context"

// Flusher makes every completed write durable (fdatasync, a device flush,
// nothing for a page blob whose writes are durable when acknowledged).
// Fallback: writes are taken as durable when WriteAt returns. Flush may
// be called while other writes are in flight; it must make durable at
// least every write that completed before it was called.
type Flusher interface {
	Flush(ctx context.Context) error
}

// WriteBehind is a target whose WriteAt returns before the write has
// reached the disk's host (queued for a remote agent, say): a write is
// known to be applied only when Flush returns. The engine then flushes
// before every journal save, whatever transfer.Options.Durability says, so a
// journal never counts a write that was still queued in this process.
type WriteBehind interface {
	WritesBehind() bool
}

// AppliedBarrier is a WriteBehind target whose host applies writes to a
// page cache of its own, as a local disk's kernel does (a remote agent):
// Applied returns once every write queued before it is applied on the
// host, not necessarily durable, and HostBootID names the host's current
// boot ("" when unknown). With the default durability (transfer.DurableEnd) the
// engine then saves journals after Applied rather than after a flush,
// stamped with the host's boot, as it stamps a local target's with this
// machine's: the record holds while that host does not reboot, and is
// discarded after it does.
type AppliedBarrier interface {
	Applied(ctx context.Context) error
	HostBootID() string
}
