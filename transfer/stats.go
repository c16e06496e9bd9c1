package transfer

import "time"

// Stats describe a finished, failed or cancelled run. Byte counts are of
// this run only: a resumed run does not count what an earlier one did.
type Stats struct {
	// Compared is the bytes of the range compared by this run (from
	// ResumedFrom to the end of the range), including bytes known equal
	// from allocation maps without being read, and the target's excess.
	Compared int64
	// Equal is the bytes of Compared found already equal: skipped.
	Equal int64
	// Written is the bytes of source data written to the target,
	// including bytes added by rounding extents outward to the target's
	// alignment.
	Written int64
	// Zeroed is the bytes cleared on the target: by ZeroRange when the
	// target is a Zeroer, else by writing zeros (then also counted by the
	// bandwidth limit, but not in Written).
	Zeroed int64
	// Extents is the number of differing extents the comparison found.
	Extents int64
	// Writes and Zeroes count the WriteAt calls of source data and the
	// clearing operations (ZeroRange calls, or WriteAt calls of zeros).
	Writes, Zeroes int64
	// ExcessKept is the bytes of the target past the source's end that
	// were kept (see Options.TruncateExcess).
	ExcessKept int64
	// SourceRead and TargetRead are the bytes actually read from each
	// side, by the comparison, the copy and the verification together.
	SourceRead, TargetRead int64

	// ResizedFrom is the target's size before it was grown or truncated,
	// or -1 when its size was not changed.
	ResizedFrom int64
	// Resumed tells that the run continued from a journal, ResumedFrom
	// being the offset it restarted at.
	Resumed     bool
	ResumedFrom int64
	// Journaled tells that the run kept a journal; JournalSaves counts
	// its saves (each one after a flush of the target).
	Journaled    bool
	JournalSaves int
	// JournalWatermark is the offset up to which the journal's last save
	// calls the range done: where a rerun of a run that stopped resumes
	// (if the journal is trusted then). It is the range's start when
	// nothing was saved, and 0 when the run kept no journal.
	JournalWatermark int64
	// JournalDiscarded tells that a journal was found and not trusted:
	// mismatched or corrupt (Options.DiscardBadJournal), of an earlier
	// boot, poisoned by a failed write or flush, or without evidence that
	// nothing else wrote the target since (see Witness). The run then
	// compared everything. JournalDiscardedReason says why, in a sentence.
	JournalDiscarded       bool
	JournalDiscardedReason string
	// ProvenEmpty tells that Seed proved the rest of the target empty
	// from its allocation map, so the target was not read.
	ProvenEmpty bool
	// Verified tells that verification proved the disks equal.
	Verified bool
	// SourceChanged tells that the source changed during the run and
	// Options.AllowLive let it finish.
	SourceChanged bool

	// Time per phase: the compare-and-write pipeline, the flushes of the
	// target (including those before journal saves, which overlap Copy),
	// the verification, and the whole run.
	Copy, Flush, Verify, Elapsed time.Duration
}
