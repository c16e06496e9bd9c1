package pageblob

import (
	"github.com/deltasync/deltasync/disk"
)

// The Blob is a disk.Source and a disk.Target with every optional
// capability a page blob has (checked at compile time).
var (
	_ disk.Source           = (*Blob)(nil)
	_ disk.Target           = (*Blob)(nil)
	_ disk.Zeroer           = (*Blob)(nil)
	_ disk.Flusher          = (*Blob)(nil)
	_ disk.Resizer          = (*Blob)(nil)
	_ disk.WriteLimits      = (*Blob)(nil)
	_ disk.Identifier       = (*Blob)(nil)
	_ disk.Versioner        = (*Blob)(nil)
	_ disk.AllocationMapper = (*Blob)(nil)
	_ disk.RangeCopier      = (*Blob)(nil) // Put Page From URL, blob to blob
)

// A target is the journal's witness (disk.Witness, which transfer
// aliases): its lease is the evidence (witness.go).
var (
	_ disk.Witness = (*Blob)(nil)
	_ disk.Witness = (*Blob)(nil)
)
