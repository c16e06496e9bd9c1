package pageblob

import (
	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/transfer"
)

// The Blob is a transfer.Source and a transfer.Target with every optional
// capability a page blob has (checked at compile time).
var (
	_ transfer.Source           = (*Blob)(nil)
	_ transfer.Target           = (*Blob)(nil)
	_ transfer.Zeroer           = (*Blob)(nil)
	_ transfer.Flusher          = (*Blob)(nil)
	_ transfer.Resizer          = (*Blob)(nil)
	_ transfer.WriteLimits      = (*Blob)(nil)
	_ transfer.Identifier       = (*Blob)(nil)
	_ transfer.Versioner        = (*Blob)(nil)
	_ transfer.AllocationMapper = (*Blob)(nil)
	_ transfer.RangeCopier      = (*Blob)(nil) // Put Page From URL, blob to blob
)

// A target is the journal's witness (disk.Witness, which transfer
// aliases): its lease is the evidence (witness.go).
var (
	_ disk.Witness     = (*Blob)(nil)
	_ transfer.Witness = (*Blob)(nil)
)
