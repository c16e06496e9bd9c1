package pageblob

import (
	"github.com/deltasync/deltasync/disk"

	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/deltasync/deltasync/internal/bootid"
)

// A target records the lease it holds in a file of its own under
// Options.StateDir (leases/, mode 0700; the file 0600, since a lease id is
// a secret), and removes it when it releases the lease. A run killed
// before its first journal save leaves its lease active (up to a minute)
// and no journal that names it; the record lets the next run on this
// machine take that lease over (a renewal under its id) instead of
// failing with ErrLeaseHeld, once the recorded process is gone: another
// boot, or no process with its pid and start time. Taking over trusts
// nothing the dead run wrote: without a journal the run compares
// everything. A record whose process is alive is another run of this
// tool writing the blob: its lease is not taken, and the error says so.

// leaseRecord is what a target records of its lease.
type leaseRecord struct {
	V     int    `json:"v"`
	Lease string `json:"lease"`
	Dur   int    `json:"dur"` // seconds, -1 infinite
	Pid   int    `json:"pid"`
	Start string `json:"start"` // the process's start time (/proc/PID/stat), "" where unknown
	Boot  string `json:"boot"`  // the machine's boot ID, "" where unknown
}

// leaseDir is where leases are recorded: StateDir/leases, by default
// $XDG_STATE_HOME/deltasync/leases or ~/.local/state/deltasync/leases.
func (b *Blob) leaseDir() string {
	dir := b.cl.opts.StateDir
	if dir == "" {
		d, err := disk.DefaultStateDir()
		if err != nil {
			return ""
		}
		dir = d
	}
	return filepath.Join(dir, "leases")
}

// leaseFile names the record of this blob's lease (by its identity).
func (b *Blob) leaseFile() string {
	dir := b.leaseDir()
	if dir == "" {
		return ""
	}
	h := sha256.Sum256([]byte("deltasync pageblob lease v1\x00" + b.loc.Identity()))
	return filepath.Join(dir, "lease-"+hex.EncodeToString(h[:16])+".json")
}

// recordLease records l as held by this process. It is best effort: a
// record that cannot be written only costs a later run the wait for the
// lease to expire.
func (b *Blob) recordLease(l *lease) {
	path := b.leaseFile()
	if path == "" {
		return
	}
	pid := os.Getpid()
	data, err := json.Marshal(leaseRecord{V: 1, Lease: l.id, Dur: leaseSeconds(l.dur), Pid: pid, Start: processStart(pid), Boot: bootid.Read()})
	if err != nil {
		return
	}
	dir := filepath.Dir(path)
	if os.MkdirAll(dir, 0o700) != nil {
		return
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return
	}
	_, werr := f.Write(data)
	if cerr := f.Close(); werr != nil || cerr != nil || os.Rename(f.Name(), path) != nil {
		os.Remove(f.Name())
	}
}

// forgetLease removes the record of lease id, if it is the one recorded.
func (b *Blob) forgetLease(id string) {
	path := b.leaseFile()
	if path == "" {
		return
	}
	if r, ok := readLeaseRecord(path); ok && r.Lease == id {
		os.Remove(path)
	}
}

func readLeaseRecord(path string) (leaseRecord, bool) {
	var r leaseRecord
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() > 4096 {
		return r, false
	}
	b, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(b, &r) != nil || r.V != 1 || r.Lease == "" {
		return leaseRecord{}, false
	}
	return r, true
}

// recordedLease returns the lease recorded for this blob by another
// process, and whether that process still runs. The record of this
// process is not returned.
func (b *Blob) recordedLease() (r leaseRecord, alive, ok bool) {
	path := b.leaseFile()
	if path == "" {
		return r, false, false
	}
	r, ok = readLeaseRecord(path)
	if !ok || (r.Pid == os.Getpid() && r.Start == processStart(r.Pid) && r.Boot == bootid.Read()) {
		return leaseRecord{}, false, false
	}
	return r, processAlive(r), true
}

// processAlive tells whether the process of a record may still run: the
// same boot, a process with its pid, and (where known) the same start
// time. When it cannot tell (no boot ID, no /proc), it says yes.
func processAlive(r leaseRecord) bool {
	boot := bootid.Read()
	if boot == "" || r.Boot == "" {
		return true
	}
	if boot != r.Boot {
		return false
	}
	if r.Pid <= 0 {
		return true
	}
	start := processStart(r.Pid)
	if start == "" {
		return false // no such process (this boot's /proc answers)
	}
	return r.Start == "" || start == r.Start
}

// processStart returns the start time of process pid (field 22 of
// /proc/PID/stat, clock ticks since boot), or "".
func processStart(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// takeOverLease takes over the lease a dead run of this machine recorded
// for this blob (see above): a renewal under its id, which Azure grants
// while the lease is active, or after it expired if nobody changed or
// leased the blob since. It returns nil when there is no such lease, or
// it cannot be renewed (the blob's lease is someone else's now).
func (b *Blob) takeOverLease(ctx context.Context) *lease {
	r, alive, ok := b.recordedLease()
	if !ok || alive {
		return nil
	}
	dur := time.Duration(r.Dur) * time.Second
	if r.Dur < 0 {
		dur = -1
	}
	l, err := b.renewLease(ctx, r.Lease, dur)
	if err != nil {
		return nil
	}
	return l
}

// liveHolder says which process of this machine holds the blob's lease,
// for the error of a lease held: "" when none is recorded as alive.
func (b *Blob) liveHolder() string {
	r, alive, ok := b.recordedLease()
	if !ok || !alive {
		return ""
	}
	return fmt.Sprintf("; a run of deltasync on this machine (process %d) holds it", r.Pid)
}
