package pageblob

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/pageblob"

	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/disk/disktest"
	"github.com/deltasync/deltasync/internal/azurite"
	"github.com/deltasync/deltasync/transfer"
)

// Azurite's leases, as measured here (Azurite 3.37.0), follow Azure's
// rules wherever these tests depend on them: a lease renews under its id
// while active and after it expired if nothing touched the blob since; a
// write, a metadata or sequence-number change by anyone after expiry, an
// acquire and release by another, a release, or a break (with or without
// a write after it) make the renewal fail (409 LeaseIdMismatchWithLease
// Operation, or LeaseIsBrokenAndCannotBeRenewed after a break); acquiring
// an active lease under its own id succeeds; acquire honours If-Match
// (412 ConditionNotMet); lease actions do not move the ETag.

// killTarget stops b as SIGKILL stops the process that holds it: its
// renewals end and nothing is released.
func killTarget(b *Blob) {
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		if l := b.lease.Load(); l != nil {
			l.stop()
			<-l.done
		}
		b.cancel()
	})
}

// thirdParty is another client of the blob, with the account key: the
// SDK's own page blob client, which knows nothing of deltasync.
func thirdParty(t *testing.T, name string) *pageblob.Client {
	t.Helper()
	cred, err := blob.NewSharedKeyCredential(azurite.Account, azurite.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := pageblob.NewClientWithSharedKeyCredential(az.BlobURL(testContainer, name), cred, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// leaseAction sends a lease action as another client would, and returns
// the status.
func leaseAction(name string, hdr map[string]string) (int, error) {
	q, err := azurite.AccountSAS()
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequest(http.MethodPut, az.BlobURL(testContainer, name)+"?comp=lease&"+q, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("x-ms-version", "2021-12-02")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func breakLease(t *testing.T, name string) {
	t.Helper()
	if s, err := leaseAction(name, map[string]string{"x-ms-lease-action": "break", "x-ms-lease-break-period": "0"}); err != nil || s != http.StatusAccepted {
		t.Fatalf("break lease: %d %v", s, err)
	}
}

// putPage writes one page as the third party, without a lease.
func putPage(t *testing.T, c *pageblob.Client, off int64) {
	t.Helper()
	if _, err := c.UploadPages(context.Background(), streaming.NopCloser(bytes.NewReader(bytes.Repeat([]byte{0xEE}, 512))),
		blob.HTTPRange{Offset: off, Count: 512}, nil); err != nil {
		t.Fatalf("third party's Put Page: %v", err)
	}
}

// openAgain opens an existing blob as a target again, as a rerun would.
func openAgain(t *testing.T, name string, edit func(*Options)) *Blob {
	t.Helper()
	o, _ := testOptions(t)
	if edit != nil {
		edit(o)
	}
	b, err := OpenTarget(context.Background(), az.BlobURL(testContainer, name), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func parseToken(t *testing.T, tok string) witnessToken {
	t.Helper()
	var wt witnessToken
	if err := json.Unmarshal([]byte(tok), &wt); err != nil || wt.Lease == "" {
		t.Fatalf("token %q: %v", tok, err)
	}
	return wt
}

// interrupted starts a run on a new blob of 1 MiB: a Watch and a write,
// then the run's process dies (killTarget). It returns the blob's name,
// the watch's token and what the run wrote at 0.
func interrupted(t *testing.T, edit func(*Options)) (string, string, []byte) {
	t.Helper()
	ctx := context.Background()
	o, _ := testOptions(t)
	o.CreateSize = 1 << 20
	if edit != nil {
		edit(o)
	}
	name := blobName(t)
	a, err := OpenTarget(ctx, az.BlobURL(testContainer, name), o)
	if err != nil {
		t.Fatal(err)
	}
	w, err := a.Watch(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(64 << 10)
	if _, err := a.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	killTarget(a)
	return name, w.Token(), data
}

// A rerun after SIGKILL, with nothing else touching the blob, takes over
// the killed run's lease (Check renews it), keeps it for its run, and sets
// a new sequence number before its first write: a Put Page of the killed
// run still on its way is refused. No lease error stands in its way (the
// lease was still active: before, the rerun failed for a minute with
// "leased by another writer").
func TestWitnessResumeAfterKill(t *testing.T) {
	ctx := context.Background()
	name, tok, _ := interrupted(t, nil)
	old := parseToken(t, tok)
	b := openAgain(t, name, nil)
	if inc, err := b.Incomplete(ctx); err != nil || !inc {
		t.Fatalf("the killed run's blob is not marked incomplete: %v %v", inc, err)
	}
	why, err := b.Check(ctx, tok, "")
	if err != nil || why != "" {
		t.Fatalf("Check after a kill with nothing else touching the blob: %q, %v", why, err)
	}
	if !b.Resumed() {
		t.Error("Resumed is false after a successful Check")
	}
	w, err := b.Watch(ctx, true)
	if err != nil {
		t.Fatalf("Watch after Check: %v", err)
	}
	now := parseToken(t, w.Token())
	if now.Lease != old.Lease || now.Seq == old.Seq {
		t.Fatalf("rerun's token: same lease %v, sequence number %d (the killed run's %d)", now.Lease == old.Lease, now.Seq, old.Seq)
	}
	// A Put Page of the killed run, with its lease and its sequence
	// number, arriving now.
	c := thirdParty(t, name)
	_, err = c.UploadPages(ctx, streaming.NopCloser(bytes.NewReader(make([]byte, 512))), blob.HTTPRange{Offset: 512 << 10, Count: 512},
		&pageblob.UploadPagesOptions{
			SequenceNumberAccessConditions: &pageblob.SequenceNumberAccessConditions{IfSequenceNumberEqualTo: to.Ptr(old.Seq)},
			AccessConditions:               &blob.AccessConditions{LeaseAccessConditions: &blob.LeaseAccessConditions{LeaseID: to.Ptr(old.Lease)}},
		})
	if !bloberror.HasCode(err, bloberror.SequenceNumberConditionNotMet) {
		t.Fatalf("a write of the killed run after the rerun's Watch: %v, want SequenceNumberConditionNotMet", err)
	}
	if _, err := b.WriteAt(randBytes(4096), 4096); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Done(ctx); err != nil {
		t.Fatal(err)
	}
	if inc, err := b.Incomplete(ctx); err != nil || inc {
		t.Fatalf("still marked incomplete after Done: %v %v", inc, err)
	}
	if _, err := b.RecoveryPoint(ctx); err != nil {
		t.Fatalf("RecoveryPoint after Done: %v", err)
	}
}

// After SIGKILL, a third party that breaks the lease (and writes, or not)
// makes the evidence fail: Check says why and never shows the lease id;
// the rerun then takes a lease of its own and may write.
func TestWitnessKillThenBreak(t *testing.T) {
	ctx := context.Background()
	for _, write := range []bool{false, true} {
		t.Run(fmt.Sprintf("write=%v", write), func(t *testing.T) {
			name, tok, _ := interrupted(t, nil)
			breakLease(t, name)
			if write {
				putPage(t, thirdParty(t, name), 0)
			}
			b := openAgain(t, name, nil)
			why, err := b.Check(ctx, tok, "")
			if err != nil || why == "" {
				t.Fatalf("Check after the lease was broken: %q, %v; want a reason", why, err)
			}
			lease := parseToken(t, tok).Lease
			if strings.Contains(why, lease) {
				t.Fatalf("the reason shows the lease id: %s", why)
			}
			if b.Resumed() {
				t.Error("Resumed after failed evidence")
			}
			w, err := b.Watch(ctx, true)
			if err != nil {
				t.Fatalf("Watch after failed evidence: %v", err)
			}
			if parseToken(t, w.Token()).Lease == lease {
				t.Error("the rerun reuses a lease that was broken")
			}
			if _, err := b.WriteAt(randBytes(512), 0); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Azure renews an expired lease only if nobody changed or leased the blob
// since it expired; Azurite does the same (measured). Both outcomes,
// after 17 s with a 15 s lease.
func TestWitnessExpiredLease(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 17 s for a 15 s lease to expire")
	}
	ctx := context.Background()
	short := func(o *Options) { o.LeaseDuration = 15 * time.Second }
	cases := []struct {
		name    string
		touch   func(t *testing.T, blob string)
		resumes bool
	}{
		{"untouched", func(*testing.T, string) {}, true},
		{"written", func(t *testing.T, name string) { putPage(t, thirdParty(t, name), 0) }, false},
		{"metadata", func(t *testing.T, name string) {
			if _, err := thirdParty(t, name).SetMetadata(ctx, map[string]*string{"owner": to.Ptr("x")}, nil); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"leased-and-released", func(t *testing.T, name string) {
			id := newLeaseID()
			if s, err := leaseAction(name, map[string]string{"x-ms-lease-action": "acquire", "x-ms-lease-duration": "15", "x-ms-proposed-lease-id": id}); err != nil || s != http.StatusCreated {
				t.Fatalf("acquire: %d %v", s, err)
			}
			if s, err := leaseAction(name, map[string]string{"x-ms-lease-action": "release", "x-ms-lease-id": id}); err != nil || s != http.StatusOK {
				t.Fatalf("release: %d %v", s, err)
			}
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			name, tok, _ := interrupted(t, short)
			time.Sleep(17 * time.Second)
			c.touch(t, name)
			b := openAgain(t, name, short)
			why, err := b.Check(ctx, tok, "")
			if err != nil {
				t.Fatal(err)
			}
			if (why == "") != c.resumes {
				t.Fatalf("Check after the lease expired (%s): %q, want resumable %v", c.name, why, c.resumes)
			}
			if _, err := b.Watch(ctx, true); err != nil {
				t.Fatalf("Watch: %v", err)
			}
		})
	}
}

// A clean stop records the blob's ETag with the lease still held; Close
// releases the lease. The rerun takes the lease again only if the ETag is
// the same (If-Match). A lease another holder took meanwhile is an error
// naming its state and duration (the journal is kept), or with BreakLease
// is broken.
func TestWitnessCleanStop(t *testing.T) {
	ctx := context.Background()
	stopped := func(t *testing.T) (string, string, string) {
		t.Helper()
		a, _ := newTarget(t, 1<<20)
		w, err := a.Watch(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.WriteAt(randBytes(8192), 0); err != nil {
			t.Fatal(err)
		}
		ev, err := w.Stopped(ctx)
		if err != nil || ev == "" {
			t.Fatalf("Stopped: %q, %v", ev, err)
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		return a.loc.Blob, w.Token(), ev
	}
	t.Run("untouched", func(t *testing.T) {
		name, tok, ev := stopped(t)
		b := openAgain(t, name, nil)
		if why, err := b.Check(ctx, tok, ev); err != nil || why != "" {
			t.Fatalf("Check after a clean stop: %q, %v", why, err)
		}
		if _, err := b.Watch(ctx, true); err != nil {
			t.Fatal(err)
		}
		if _, err := b.WriteAt(randBytes(512), 0); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("written", func(t *testing.T) {
		name, tok, ev := stopped(t)
		putPage(t, thirdParty(t, name), 4096)
		b := openAgain(t, name, nil)
		why, err := b.Check(ctx, tok, ev)
		if err != nil || !strings.Contains(why, "ETag") {
			t.Fatalf("Check after a third party wrote: %q, %v", why, err)
		}
	})
	t.Run("leased", func(t *testing.T) {
		name, tok, ev := stopped(t)
		other := newLeaseID()
		if s, err := leaseAction(name, map[string]string{"x-ms-lease-action": "acquire", "x-ms-lease-duration": "-1", "x-ms-proposed-lease-id": other}); err != nil || s != http.StatusCreated {
			t.Fatalf("acquire: %d %v", s, err)
		}
		b := openAgain(t, name, nil)
		why, err := b.Check(ctx, tok, ev)
		if !errors.Is(err, ErrLeaseHeld) || why != "" || !strings.Contains(err.Error(), "lease state leased, duration infinite") {
			t.Fatalf("Check with another holder's lease: %q, %v; want ErrLeaseHeld with its state and duration", why, err)
		}
		for _, id := range []string{other, parseToken(t, tok).Lease} {
			if strings.Contains(err.Error(), id) {
				t.Fatalf("the error shows a lease id: %v", err)
			}
		}
		// BreakLease: the holder did not write, so the evidence holds.
		c := openAgain(t, name, func(o *Options) { o.BreakLease = true })
		if why, err := c.Check(ctx, tok, ev); err != nil || why != "" {
			t.Fatalf("Check with BreakLease: %q, %v", why, err)
		}
		if _, err := c.Watch(ctx, true); err != nil {
			t.Fatal(err)
		}
		_, err = thirdParty(t, name).UploadPages(ctx, streaming.NopCloser(bytes.NewReader(make([]byte, 512))), blob.HTTPRange{Offset: 0, Count: 512},
			&pageblob.UploadPagesOptions{AccessConditions: &blob.AccessConditions{LeaseAccessConditions: &blob.LeaseAccessConditions{LeaseID: to.Ptr(other)}}})
		if err == nil {
			t.Fatal("the broken holder could still write")
		}
	})
}

// A lease another holder has, seen by Watch: ErrLeaseHeld says its state
// and duration; BreakLease breaks it and the run takes its own.
func TestBreakLease(t *testing.T) {
	ctx := context.Background()
	a, _ := newTarget(t, 1<<20)
	name := a.loc.Blob
	a.Close()
	other := newLeaseID()
	if s, err := leaseAction(name, map[string]string{"x-ms-lease-action": "acquire", "x-ms-lease-duration": "-1", "x-ms-proposed-lease-id": other}); err != nil || s != http.StatusCreated {
		t.Fatalf("acquire: %d %v", s, err)
	}
	b := openAgain(t, name, nil)
	_, err := b.Watch(ctx, true)
	if !errors.Is(err, ErrLeaseHeld) || !strings.Contains(err.Error(), "lease state leased, duration infinite") {
		t.Fatalf("Watch of a blob another holds: %v", err)
	}
	c := openAgain(t, name, func(o *Options) { o.BreakLease = true })
	if _, err := c.Watch(ctx, true); err != nil {
		t.Fatalf("Watch with BreakLease: %v", err)
	}
	if _, err := c.WriteAt(randBytes(512), 0); err != nil {
		t.Fatal(err)
	}
}

// Watch marks the blob incomplete (keeping its other metadata) and Done
// clears the mark; no snapshot is cut of a blob so marked.
func TestIncompleteMark(t *testing.T) {
	ctx := context.Background()
	a, _ := newTarget(t, 1<<20)
	if _, err := thirdParty(t, a.loc.Blob).SetMetadata(ctx, map[string]*string{"owner": to.Ptr("ops")}, nil); err != nil {
		t.Fatal(err)
	}
	w, err := a.Watch(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if inc, err := a.Incomplete(ctx); err != nil || !inc {
		t.Fatalf("Incomplete after Watch: %v %v", inc, err)
	}
	if _, err := a.RecoveryPoint(ctx); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("RecoveryPoint of an incomplete blob: %v, want ErrIncomplete", err)
	}
	if _, err := a.Snapshot(ctx); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("Snapshot of an incomplete blob: %v, want ErrIncomplete", err)
	}
	// Through another Blob too (a later command's).
	r, err := Open(ctx, az.BlobURL(testContainer, a.loc.Blob), &Options{Getenv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Snapshot(ctx); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("Snapshot through a reader of an incomplete blob: %v, want ErrIncomplete", err)
	}
	if _, err := a.WriteAt(randBytes(512), 0); err != nil {
		t.Fatal(err)
	}
	if err := w.Done(ctx); err != nil {
		t.Fatal(err)
	}
	props, err := a.pb.GetProperties(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var owner string
	for k, v := range props.Metadata {
		if strings.EqualFold(k, IncompleteKey) {
			t.Errorf("the mark is still there after Done: %v", props.Metadata)
		}
		if strings.EqualFold(k, "owner") && v != nil {
			owner = *v
		}
	}
	if owner != "ops" {
		t.Errorf("the blob's own metadata was not kept: %v", props.Metadata)
	}
	if _, err := a.RecoveryPoint(ctx); err != nil {
		t.Fatalf("RecoveryPoint after Done: %v", err)
	}
}

// A prior state is kept once, before the first run's first write: never
// by a rerun that resumes it, nor by a run that finds the blob marked
// incomplete (its journal lost).
func TestNoPriorSnapshotOfInterruptedRun(t *testing.T) {
	ctx := context.Background()
	seed, _ := newTarget(t, 1<<20)
	if _, err := seed.WriteAt(randBytes(1<<20), 0); err != nil {
		t.Fatal(err)
	}
	name := seed.loc.Blob
	seed.Close()
	prior := func(o *Options) { o.KeepPrior = true }

	a := openAgain(t, name, prior)
	wa, err := a.Watch(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteAt(randBytes(4096), 0); err != nil {
		t.Fatal(err)
	}
	if a.PriorSnapshot() == "" {
		t.Fatal("the first run kept no prior state")
	}
	killTarget(a)

	b := openAgain(t, name, prior)
	if why, err := b.Check(ctx, wa.Token(), ""); err != nil || why != "" {
		t.Fatalf("Check: %q, %v", why, err)
	}
	wb, err := b.Watch(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteAt(randBytes(4096), 8192); err != nil {
		t.Fatal(err)
	}
	if id := b.PriorSnapshot(); id != "" {
		t.Fatalf("the resumed run took a prior snapshot %s of a half-synced blob", id)
	}
	wb.Abandon() // its journal lost: still marked incomplete
	b.Close()

	c := openAgain(t, name, prior)
	if _, err := c.Watch(ctx, true); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteAt(randBytes(4096), 16384); err != nil {
		t.Fatal(err)
	}
	if id := c.PriorSnapshot(); id != "" {
		t.Fatalf("a run onto a blob marked incomplete took a prior snapshot %s", id)
	}
	list, err := c.ListSnapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range list {
		if s.Kind == KindPrior {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d prior snapshots, want 1", n)
	}
}

// sparse is a disk of random 128 KiB regions between regions of zeros,
// so that a run onto a blank target writes each in a write of its own.
func sparse(size int) []byte {
	b := make([]byte, size)
	for off := 0; off < size; off += 256 << 10 {
		copy(b[off:], randBytes(128<<10))
	}
	return b
}

// leaseBreaker is a target whose lease a third party breaks: on the
// target's nth write, or at its flush (n = 0).
type leaseBreaker struct {
	*Blob
	n      int32
	writes atomic.Int32
	once   sync.Once
	err    error
}

func (x *leaseBreaker) brk() {
	x.once.Do(func() {
		s, err := leaseAction(x.loc.Blob, map[string]string{"x-ms-lease-action": "break", "x-ms-lease-break-period": "0"})
		if err == nil && s != http.StatusAccepted {
			err = fmt.Errorf("break: HTTP %d", s)
		}
		x.err = err
	})
}

func (x *leaseBreaker) WriteAt(p []byte, off int64) (int, error) {
	return x.WriteAtContext(x.Blob.ctx, p, off)
}

func (x *leaseBreaker) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if x.writes.Add(1) == x.n {
		x.brk()
	}
	return x.Blob.WriteAtContext(ctx, p, off)
}

func (x *leaseBreaker) Flush(ctx context.Context) error {
	if x.n == 0 {
		x.brk()
	}
	return x.Blob.Flush(ctx)
}

// A run that fails because its lease was lost (a write refused with 412,
// or the lease found broken at the final flush, after the last write)
// fails with a *transfer.WriteError, so the engine poisons its journal:
// the rerun does not resume from it, and compares everything.
func TestLeaseLostPoisonsJournal(t *testing.T) {
	for _, n := range []int32{3, 0} {
		t.Run(fmt.Sprintf("break-at-write-%d", n), func(t *testing.T) {
			ctx := context.Background()
			const size = 4 << 20
			src := disktest.NewMem(sparse(size))
			dst, _ := newTarget(t, size)
			o := &transfer.Options{Journal: transfer.DirStore{Dir: t.TempDir()}, JournalBytes: 256 << 10, Concurrency: 1}
			x := &leaseBreaker{Blob: dst, n: n}
			_, err := transfer.Sync(ctx, src, x, o)
			if x.err != nil {
				t.Fatal(x.err)
			}
			var we *transfer.WriteError
			if !errors.Is(err, ErrLeaseLost) || !errors.As(err, &we) {
				t.Fatalf("Sync after the lease was broken: %v, want ErrLeaseLost in a *transfer.WriteError", err)
			}
			dst.Close()
			again := openAgain(t, dst.loc.Blob, nil)
			st, err := transfer.Sync(ctx, src, again, o)
			if err != nil {
				t.Fatal(err)
			}
			if st.Resumed || !st.JournalDiscarded || !strings.Contains(st.JournalDiscardedReason, "failed to write") {
				t.Fatalf("rerun: resumed %v, discarded %v (%q); want the poisoned journal discarded", st.Resumed, st.JournalDiscarded, st.JournalDiscardedReason)
			}
			if !bytes.Equal(readAll(t, again, size), src.Bytes()) {
				t.Fatal("the rerun left the target different from the source")
			}
		})
	}
}

// transfer through the witness: a Sync killed mid-run resumes on the
// rerun (the lease taken over) and a Sync stopped by cancellation too;
// both end equal to the source, and the incomplete mark is gone.
func TestSyncResumesThroughWitness(t *testing.T) {
	ctx := context.Background()
	const size = 4 << 20
	src := disktest.NewMem(sparse(size))
	dst, _ := newTarget(t, size)
	o := &transfer.Options{Journal: transfer.DirStore{Dir: t.TempDir()}, JournalBytes: 256 << 10, Concurrency: 1}
	cctx, cancel := context.WithCancel(ctx)
	x := &cancelAfter{Blob: dst, n: 8, cancel: cancel}
	if _, err := transfer.Sync(cctx, src, x, o); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Sync: %v", err)
	}
	dst.Close()
	again := openAgain(t, dst.loc.Blob, nil)
	st, err := transfer.Sync(ctx, src, again, o)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Resumed || st.ResumedFrom == 0 {
		t.Fatalf("rerun after a cancelled run: resumed %v from %d (discarded: %q)", st.Resumed, st.ResumedFrom, st.JournalDiscardedReason)
	}
	if !bytes.Equal(readAll(t, again, size), src.Bytes()) {
		t.Fatal("the target differs from the source")
	}
	if inc, err := again.Incomplete(ctx); err != nil || inc {
		t.Fatalf("marked incomplete after a successful run: %v %v", inc, err)
	}
}

// cancelAfter cancels the run at its nth write.
type cancelAfter struct {
	*Blob
	n      int32
	writes atomic.Int32
	cancel context.CancelFunc
}

func (x *cancelAfter) WriteAt(p []byte, off int64) (int, error) {
	return x.WriteAtContext(x.Blob.ctx, p, off)
}

func (x *cancelAfter) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if x.writes.Add(1) == x.n {
		x.cancel()
	}
	return x.Blob.WriteAtContext(ctx, p, off)
}

// A managed disk upload writes its footer last: an upload interrupted
// before its end has no valid footer, including one that re-uploads over
// a finished upload (whose old footer its first write invalidates).
func TestManagedDiskFooterLast(t *testing.T) {
	ctx := context.Background()
	name := blobName(t)
	c := thirdParty(t, name)
	if _, err := c.Create(ctx, minManagedDisk, nil); err != nil { // done by Azure when the disk is created for upload
		t.Fatal(err)
	}
	const size = minManagedDisk - VHDFooterSize
	src := disktest.NewMem(randBytes(size))
	upload := func(t *testing.T, interrupt bool) {
		t.Helper()
		o, _ := testOptions(t)
		o.ManagedDisk = true
		d, err := OpenTarget(ctx, az.BlobURL(testContainer, name), o)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		var tgt disk.Target = d
		if interrupt {
			tgt = &cancelAfter{Blob: d, n: 2, cancel: cancel}
		}
		_, err = transfer.Seed(cctx, src, tgt, &transfer.Options{NoJournal: true, Concurrency: 1})
		if interrupt != (err != nil) {
			t.Fatalf("Seed (interrupted %v): %v", interrupt, err)
		}
	}
	footer := func() error {
		p := make([]byte, VHDFooterSize)
		if _, err := c.DownloadBuffer(ctx, p, &blob.DownloadBufferOptions{Range: blob.HTTPRange{Offset: size, Count: VHDFooterSize}}); err != nil {
			t.Fatal(err)
		}
		_, err := ParseVHDFooter(p)
		return err
	}
	upload(t, true)
	if err := footer(); err == nil {
		t.Fatal("an interrupted upload holds a valid VHD footer")
	}
	upload(t, false)
	if err := footer(); err != nil {
		t.Fatalf("a finished upload has no valid footer: %v", err)
	}
	whole := make([]byte, size)
	if _, err := c.DownloadBuffer(ctx, whole, &blob.DownloadBufferOptions{Range: blob.HTTPRange{Count: size}}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(whole, src.Bytes()) {
		t.Fatal("the upload differs from the source")
	}
	// Upload another disk over it, interrupted at its second write of
	// three.
	for _, off := range []int{0, 8 << 20, 16 << 20} {
		src.WriteAt(randBytes(1<<20), int64(off))
	}
	upload(t, true)
	if err := footer(); err == nil {
		t.Fatal("an interrupted re-upload kept the old valid footer")
	}
}

// rewriteLeaseRecord makes the lease record of blob name say that
// process pid (started at start) holds it.
func rewriteLeaseRecord(t *testing.T, b *Blob, pid int, start string) {
	t.Helper()
	path := b.leaseFile()
	r, ok := readLeaseRecord(path)
	if !ok {
		t.Fatalf("no lease record at %s", path)
	}
	r.Pid, r.Start = pid, start
	data, _ := json.Marshal(r)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A run killed before any journal named its lease (so no Check): the
// next run on this machine takes over the lease the dead run recorded,
// instead of failing for up to a minute with ErrLeaseHeld, and fences
// the dead run's writes with its own sequence number. A recorded holder
// that still runs is not robbed: the error names its process.
func TestLeaseTakenOverFromDeadRun(t *testing.T) {
	ctx := context.Background()
	o, _ := testOptions(t)
	o.CreateSize = 1 << 20
	name := blobName(t)
	a, err := OpenTarget(ctx, az.BlobURL(testContainer, name), o)
	if err != nil {
		t.Fatal(err)
	}
	wa, err := a.Watch(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	old := parseToken(t, wa.Token())
	killTarget(a)
	if fi, err := os.Stat(a.leaseFile()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("lease record: %v %v", fi, err)
	}

	// The recorded holder runs: another run of this tool.
	live := exec.Command("sleep", "60")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	defer live.Process.Kill()
	rewriteLeaseRecord(t, a, live.Process.Pid, processStart(live.Process.Pid))
	b := openAgain(t, name, nil)
	_, err = b.Watch(ctx, false)
	if !errors.Is(err, ErrLeaseHeld) || !strings.Contains(err.Error(), fmt.Sprintf("process %d", live.Process.Pid)) {
		t.Fatalf("Watch while the recorded holder runs: %v, want ErrLeaseHeld naming it", err)
	}
	_, cerr := b.Check(ctx, wa.Token(), "")
	if !errors.Is(cerr, ErrLeaseHeld) {
		t.Fatalf("Check of a lease a live run of this machine holds: %v, want ErrLeaseHeld", cerr)
	}
	for _, e := range []error{err, cerr} {
		if strings.Contains(e.Error(), old.Lease) {
			t.Fatalf("the error shows the lease id: %v", e)
		}
	}
	// Nor does a rerun whose journal is not trusted take it (Reclaim).
	if err := b.Reclaim(ctx, wa.Token()); err != nil || b.lease.Load() != nil {
		t.Fatalf("Reclaim of a lease a live run of this machine holds: %v, lease taken %v", err, b.lease.Load() != nil)
	}

	// The recorded holder is gone.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	rewriteLeaseRecord(t, a, dead.Process.Pid, "1")
	c := openAgain(t, name, nil)
	wc, err := c.Watch(ctx, false)
	if err != nil {
		t.Fatalf("Watch after the recorded holder died: %v", err)
	}
	now := parseToken(t, wc.Token())
	if now.Lease != old.Lease || now.Seq == old.Seq {
		t.Fatalf("took over: same lease %v, sequence number %d (the dead run's %d)", now.Lease == old.Lease, now.Seq, old.Seq)
	}
	if _, err := c.WriteAt(randBytes(512), 0); err != nil {
		t.Fatal(err)
	}
	if err := wc.Done(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := a.pb.UploadPages(ctx, streaming.NopCloser(bytes.NewReader(make([]byte, 512))), blob.HTTPRange{Offset: 512, Count: 512},
		&pageblob.UploadPagesOptions{SequenceNumberAccessConditions: &pageblob.SequenceNumberAccessConditions{IfSequenceNumberEqualTo: to.Ptr(old.Seq)},
			AccessConditions: &blob.AccessConditions{LeaseAccessConditions: &blob.LeaseAccessConditions{LeaseID: to.Ptr(old.Lease)}}}); !bloberror.HasCode(err, bloberror.SequenceNumberConditionNotMet) {
		t.Fatalf("a write of the dead run: %v, want SequenceNumberConditionNotMet", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(a.leaseFile()); !os.IsNotExist(err) {
		t.Fatalf("the lease record outlived its release: %v", err)
	}
}

// A run whose watch ended with no evidence (Stopped failed or never ran,
// and no Done or Abandon) keeps its lease at Close, so that the rerun
// renews it and resumes; one that recorded its evidence, finished or
// was abandoned releases it.
func TestCloseKeepsLeaseWithoutEvidence(t *testing.T) {
	ctx := context.Background()
	a, _ := newTarget(t, 1<<20)
	w, err := a.Watch(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteAt(randBytes(4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b := openAgain(t, a.loc.Blob, nil)
	if why, err := b.Check(ctx, w.Token(), ""); err != nil || why != "" {
		t.Fatalf("Check after a Close with no evidence: %q, %v (the lease was released?)", why, err)
	}
	wb, err := b.Watch(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wb.Stopped(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	c := openAgain(t, a.loc.Blob, nil)
	wc, err := c.Watch(ctx, true)
	if err != nil {
		t.Fatalf("Watch after a Close that recorded its evidence (the lease was kept?): %v", err)
	}
	wc.Abandon()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	d := openAgain(t, a.loc.Blob, nil)
	if _, err := d.Watch(ctx, true); err != nil {
		t.Fatalf("Watch after an abandoned watch's Close: %v", err)
	}
}
