package transfer

import "github.com/deltasync/deltasync/disk"

// Witness is a target that can show a later run that nothing but an
// earlier run wrote it: the evidence a journal is trusted on. It is
// defined in package disk, so that adapters implement it without
// importing transfer; see disk.Witness for the contract, and the package
// doc (# Evidence) for what each kind of target records.
type Witness = disk.Witness

// Watch is a witness's part of one run; see disk.Watch.
type Watch = disk.Watch

// Reclaimer is a Witness that can take over the hold (a lease) an
// untrusted journal's run left; see disk.Reclaimer.
type Reclaimer = disk.Reclaimer
