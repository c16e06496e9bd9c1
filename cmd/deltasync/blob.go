package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/pageblob"
	"github.com/deltasync/deltasync/replicate"
)

// Page blobs as SRC or DST. A page blob is named by its URL:
//
//	https://ACCOUNT.blob.core.windows.net/CONTAINER/BLOB[?SAS]
//	https://md-XXXX.zN.blob.storage.azure.net/CONTAINER/BLOB?SAS   (managed disk upload)
//	http://127.0.0.1:PORT/devstoreaccount1/CONTAINER/BLOB          (Azurite)
//
// or CONTAINER/BLOB when AZURE_STORAGE_CONNECTION_STRING is set (its
// endpoint is the account's) and no file or directory here is named
// CONTAINER.
//
// Credentials are the URL's SAS, else AZURE_STORAGE_CONNECTION_STRING,
// AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY (each for its own account
// only), Azurite's development key, or DefaultAzureCredential:
// pageblob.Open decides, and pageblob.ParseURL is the one place a URL is
// parsed. The kind used for each side is printed in the summary and in
// --json (source_credential, target_credential), never the secret; a SAS
// is never printed: arguments are shown through pageblob.Redact.
//
// Fixed VHDs (-vhd) are described in vhd.go. For tests against Azurite,
// DELTASYNC_EMULATE_MANAGED_DISK=1 takes an emulator URL (loopback) as a
// managed disk upload (pageblob.Options.ManagedDisk); it applies to no
// other URL.

// blobFlags are the flags of seed and sync that concern page blob
// targets, and what a run with one left behind.
type blobFlags struct {
	keepPrior bool
	snapshot  bool
	// Retention of the recovery points -snapshot cuts (-keep-*): off
	// unless a rule is given.
	keep       keepFlags
	vhd        vhdFlag // vhd.go
	breakLease bool

	// srcSize is the source's size, set once the source is open: a
	// missing blob is created with it.
	srcSize int64

	// The snapshots the run took, for the summary and --json.
	priorSnapshot, recoveryPoint string
	deleted                      []string // recovery points deleted by -keep-*
	// The credential kind of each page blob side (pageblob.Credential),
	// and why the target's server-side copy fell back to reading and
	// writing, if it did (pageblob.CopyStats).
	srcCredential, dstCredential string
	copyFallback                 string
}

func (bf *blobFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&bf.keepPrior, "keep-prior", true, "page blob target that exists: keep its prior state as a snapshot taken before the first write (printed, and prior_snapshot in --json); "+
		"taken once, by the first run: a rerun that resumes, or finds the blob marked incomplete by an unfinished run, takes none")
	fs.BoolVar(&bf.breakLease, "break-lease", false, "page blob target leased by another holder: break its lease and take over, instead of failing. "+
		"Not needed for this tool's own interrupted run, whose lease a rerun takes over. "+
		"Use it only for a holder known to be gone (a crashed tool's infinite lease): a holder still writing (another sync, a VM using the disk) is cut off midway, its writes fail, and its view of the disk is no longer true")
	fs.BoolVar(&bf.snapshot, "snapshot", true, "page blob target: cut a recovery point (a snapshot) at the end of a successful run (recovery_point in --json)")
	registerVHD(fs, &bf.vhd, true)
	bf.keep.register(fs)
}

// keepFlags are the retention rules of sync -snapshot's recovery points.
type keepFlags struct {
	last, hourly, daily, weekly, monthly int
	within                               time.Duration
	tz                                   string
}

func (k *keepFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&k.last, "keep-last", 0, "page blob target with -snapshot: after cutting the run's recovery point, keep only the newest N recovery points deltasync cut (the rules below add to it; default: keep all). Prior states and other snapshots are never deleted")
	fs.IntVar(&k.hourly, "keep-hourly", 0, "with -snapshot: also keep the newest recovery point of each of the last N hours that have one")
	fs.IntVar(&k.daily, "keep-daily", 0, "with -snapshot: also keep the newest recovery point of each of the last N days that have one")
	fs.IntVar(&k.weekly, "keep-weekly", 0, "with -snapshot: also keep the newest recovery point of each of the last N ISO weeks that have one")
	fs.IntVar(&k.monthly, "keep-monthly", 0, "with -snapshot: also keep the newest recovery point of each of the last N months that have one")
	fs.DurationVar(&k.within, "keep-within", 0, "with -snapshot: also keep every recovery point taken within this duration before the newest")
	fs.StringVar(&k.tz, "keep-tz", "UTC", "time zone of the hours, days, weeks and months of -keep-*")
}

// policy returns the retention policy, or ok false when no rule is given.
func (k *keepFlags) policy() (p replicate.Policy, ok bool, err error) {
	if k.last == 0 && k.hourly == 0 && k.daily == 0 && k.weekly == 0 && k.monthly == 0 && k.within == 0 {
		return p, false, nil
	}
	if k.last < 0 || k.hourly < 0 || k.daily < 0 || k.weekly < 0 || k.monthly < 0 || k.within < 0 {
		return p, false, errors.New("-keep-*: a count or duration is negative")
	}
	loc, err := time.LoadLocation(k.tz)
	if err != nil {
		return p, false, fmt.Errorf("-keep-tz %q: %v", k.tz, err)
	}
	off := func(n int) int {
		if n == 0 {
			return -1
		}
		return n
	}
	return replicate.Policy{KeepLast: max(k.last, 1), KeepHourly: off(k.hourly), KeepDaily: k.daily, KeepWeekly: k.weekly,
		KeepMonthly: k.monthly, KeepWithin: k.within, Location: loc}, true, nil
}

// isBlobURL tells a page blob location from a path: a URL, or
// CONTAINER/BLOB (isContainerBlob).
func isBlobURL(arg string) bool {
	return strings.HasPrefix(arg, "https://") || strings.HasPrefix(arg, "http://") || isContainerBlob(arg)
}

// containerName is Azure's rule for container names: 3 to 63 lower-case
// letters, digits and single hyphens, starting and ending with a letter
// or digit.
var containerName = regexp.MustCompile(`^[a-z0-9](-?[a-z0-9])+$`)

// isContainerBlob tells CONTAINER/BLOB, a blob of the account of
// AZURE_STORAGE_CONNECTION_STRING, from a relative path: the connection
// string is set, CONTAINER is a valid container name, BLOB is not empty,
// and nothing named CONTAINER exists in the current directory.
func isContainerBlob(arg string) bool {
	if os.Getenv("AZURE_STORAGE_CONNECTION_STRING") == "" {
		return false
	}
	c, b, ok := strings.Cut(arg, "/")
	if !ok || b == "" || strings.HasSuffix(b, "/") || len(c) < 3 || len(c) > 63 || !containerName.MatchString(c) {
		return false
	}
	_, err := os.Lstat(c)
	return errors.Is(err, fs.ErrNotExist)
}

// shown returns an argument as it may be printed: a URL without its SAS.
func shown(arg string) string {
	if isBlobURL(arg) {
		return pageblob.Redact(arg)
	}
	return arg
}

// openContext is the context of opening a blob: cancelled by Ctrl-C or
// SIGTERM (opening sends requests, retried for minutes when the network
// is down). It derives from the process's signal context, so that the
// signal is in caught before an open fails with its cancellation (a
// context of its own, cancelled by its own signal.Notify, raced the
// record: "context canceled", exit 2 instead of 143).
func openContext() (context.Context, context.CancelFunc) {
	return context.WithCancel(signalCtx)
}

// openBlobSource opens a page blob (or a snapshot, ?snapshot=) read-only:
// with -vhd, the disk inside it when it ends in a fixed VHD footer
// (vhd.go). A managed disk is always read so.
func openBlobSource(arg string, rf *runFlags) (disk.Source, io.Closer, error) {
	loc, err := pageblob.Locate(arg, nil)
	if err != nil {
		return nil, nil, err
	}
	set, on := rf.blob.vhd.given()
	managed := loc.Kind == pageblob.ManagedDisk
	if managed && set && !on {
		return nil, nil, fmt.Errorf("-vhd=false: %s is a managed disk, always read as the disk inside its VHD", shown(arg))
	}
	ctx, stop := openContext()
	defer stop()
	b, err := pageblob.Open(ctx, arg, nil)
	if err != nil {
		return nil, nil, err
	}
	if !managed && (!set || on) {
		t, err := readTail(b, b.Size())
		if err != nil {
			b.Close()
			return nil, nil, fmt.Errorf("%s: %w", shown(arg), err)
		}
		switch {
		case !set && t.fixed:
			noteRawVHD(arg, t)
		case set && t.other != "":
			b.Close()
			return nil, nil, errNotFixedVHD(arg, t)
		case set && t.fixed:
			b.Close()
			if b, err = pageblob.Open(ctx, arg, &pageblob.Options{VHD: true}); err != nil {
				return nil, nil, err
			}
		}
	}
	rf.blob.srcCredential = string(b.Credential().Kind)
	return b, b, nil
}

// emulatedManagedDisk reports whether an emulator URL is to be taken as
// a managed disk upload (DELTASYNC_EMULATE_MANAGED_DISK=1, for tests).
func emulatedManagedDisk(loc pageblob.BlobURL) bool {
	return loc.Kind == pageblob.Emulator && os.Getenv("DELTASYNC_EMULATE_MANAGED_DISK") == "1"
}

// openBlobTarget opens a page blob as a target, creating it with the
// source's size when create is set (seed) and it is missing. It keeps the
// prior state of a blob that exists (-keep-prior). With -vhd it is a
// fixed VHD; without the flag, a blob that ends in a VHD footer is
// refused (vhd.go).
func openBlobTarget(arg string, rf *runFlags, create bool) (opened, error) {
	loc, err := pageblob.Locate(arg, nil)
	if err != nil {
		return nil, err
	}
	bf := &rf.blob
	set, on := bf.vhd.given()
	emulated := emulatedManagedDisk(loc)
	managed := loc.Kind == pageblob.ManagedDisk || emulated
	if managed && set && !on {
		return nil, fmt.Errorf("-vhd=false: %s is a managed disk upload, always a fixed VHD", shown(arg))
	}
	vhd := on || managed
	if n := bf.srcSize; n%pageblob.PageSize != 0 {
		return nil, fmt.Errorf("the source is %d bytes, not a multiple of 512: a page blob holds whole 512-byte pages; "+
			"pad the image to %d bytes (truncate -s %d FILE) and run again", n, roundUp512(n), roundUp512(n))
	}
	// The lease is recorded with the journals, so that a rerun after a
	// SIGKILL takes it over even before a journal named it.
	o := &pageblob.Options{VHD: on, ManagedDisk: emulated, KeepPrior: bf.keepPrior, BreakLease: bf.breakLease, StateDir: rf.journalDir}
	if create && !managed {
		if bf.srcSize == 0 {
			return nil, errors.New("the source is empty: there is nothing to seed a page blob with")
		}
		if vhd && bf.srcSize%pageblob.VHDAlign != 0 {
			return nil, fmt.Errorf("the source is %d bytes: a VHD page blob (-vhd) holds a disk of a whole number of MiB; pad the image to %d bytes and run again",
				bf.srcSize, (bf.srcSize+pageblob.VHDAlign-1)/pageblob.VHDAlign*pageblob.VHDAlign)
		}
		o.CreateSize = bf.srcSize
	}
	ctx, stop := openContext()
	defer stop()
	b, err := pageblob.OpenTarget(ctx, arg, o)
	if err != nil {
		if !create && errors.Is(err, pageblob.ErrNotFound) {
			return nil, fmt.Errorf("%w (use 'deltasync seed' for a new target)", err)
		}
		return nil, err
	}
	if !set && !managed {
		t, err := readTail(b, b.Size())
		switch {
		case err != nil:
			err = fmt.Errorf("%s: %w", shown(arg), err)
		case t.vhd():
			err = errVHDTarget(arg, t)
		}
		if err != nil {
			b.Close()
			return nil, err
		}
	}
	bf.dstCredential = string(b.Credential().Kind)
	return &blobTarget{Blob: b, flags: bf, managed: managed}, nil
}

func roundUp512(n int64) int64 { return (n + 511) / 512 * 512 }

// blobTarget is a page blob target that reports the snapshots its run
// took. It embeds the Blob, so every capability of the Blob is kept.
type blobTarget struct {
	*pageblob.Blob
	flags   *blobFlags
	managed bool // a managed disk upload
}

// Watch and Check are the Blob's (the journal's evidence; see pageblob's
// doc, # Resuming), with the way out of a lease another holder has.
func (t *blobTarget) Watch(ctx context.Context, resumable bool) (disk.Watch, error) {
	w, err := t.Blob.Watch(ctx, resumable)
	return w, leaseHint(err)
}

func (t *blobTarget) Check(ctx context.Context, token, evidence string) (string, error) {
	why, err := t.Blob.Check(ctx, token, evidence)
	return why, leaseHint(err)
}

// leaseHint names the flag that breaks a lease another holder has.
func leaseHint(err error) error {
	if errors.Is(err, pageblob.ErrLeaseHeld) {
		return fmt.Errorf("%w; wait for its holder to release it, or rerun with -break-lease if the holder is gone (a holder still writing is cut off midway)", err)
	}
	return err
}

// finish cuts the recovery point of a successful run (-snapshot); the
// run's writes are flushed already. Managed disk uploads have no
// snapshots and get none.
func (t *blobTarget) finish(ctx context.Context) error {
	t.notePrior()
	if !t.flags.snapshot || t.managed {
		return nil
	}
	id, err := t.RecoveryPoint(ctx)
	if err != nil {
		return fmt.Errorf("the run succeeded but cutting its recovery point failed: %w", err)
	}
	t.flags.recoveryPoint = id
	fmt.Fprintf(os.Stderr, "deltasync: recovery point of %s: snapshot %s\n", t.URL(), id)
	return t.retain(ctx)
}

// retain deletes the recovery points deltasync cut that the -keep-*
// rules do not keep; prior states and snapshots of anything else stay.
func (t *blobTarget) retain(ctx context.Context) error {
	p, ok, err := t.flags.keep.policy()
	if !ok || err != nil {
		return err
	}
	list, err := t.ListSnapshots(ctx)
	if err != nil {
		return fmt.Errorf("the run succeeded and its recovery point was cut, but listing the recovery points for -keep-* failed "+
			"(listing needs list permission on the container): %w", err)
	}
	var pts []replicate.Point
	for _, s := range list {
		if s.Kind == pageblob.KindRecoveryPoint && !s.Time.IsZero() {
			pts = append(pts, replicate.Point{ID: s.ID, Time: s.Time})
		}
	}
	_, drop := p.Retain(pts)
	for _, d := range drop {
		if err := t.DeleteSnapshot(ctx, d.ID); err != nil {
			return fmt.Errorf("the run succeeded and its recovery point was cut, but deleting the old recovery point %s failed: %w", d.ID, err)
		}
		t.flags.deleted = append(t.flags.deleted, d.ID)
	}
	if len(drop) > 0 {
		fmt.Fprintf(os.Stderr, "deltasync: -keep-*: deleted %d old recovery points of %s\n", len(drop), t.URL())
	}
	return nil
}

// Close reports the prior state's snapshot, if one was taken (also when
// the run failed: it is what the target held before), and closes the
// blob, releasing its lease.
func (t *blobTarget) Close() error {
	t.notePrior()
	if why := t.CopyStats().Fallback; why != "" && t.flags.copyFallback == "" {
		t.flags.copyFallback = why
		fmt.Fprintf(os.Stderr, "deltasync: no server-side copy into %s (%s): read the source and wrote instead\n", t.URL(), why)
	}
	return t.Blob.Close()
}

// credentialNote ends the summary line of a run with a page blob side:
// the kind of credential of each (never the secret).
func (bf *blobFlags) credentialNote() string {
	var s []string
	if bf.srcCredential != "" {
		s = append(s, "source credential "+bf.srcCredential)
	}
	if bf.dstCredential != "" {
		s = append(s, "target credential "+bf.dstCredential)
	}
	if len(s) == 0 {
		return ""
	}
	return "; " + strings.Join(s, ", ")
}

// notePrior prints and records the prior state's snapshot, once.
func (t *blobTarget) notePrior() {
	if id := t.PriorSnapshot(); id != "" && t.flags.priorSnapshot == "" {
		t.flags.priorSnapshot = id
		fmt.Fprintf(os.Stderr, "deltasync: prior state of %s kept as snapshot %s\n", t.URL(), id)
	}
}

// finishTarget ends a successful run on its target: a page blob gets its
// recovery point. Other targets need nothing.
func finishTarget(ctx context.Context, dst opened) error {
	if t, ok := dst.(*blobTarget); ok {
		return t.finish(ctx)
	}
	return nil
}
