package blob

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/deltasync/deltasync/internal/azurite"
	"github.com/deltasync/deltasync/pageblob"
	"github.com/deltasync/deltasync/replicate"
	"github.com/deltasync/deltasync/transfer"
)

// TestCyclesAcrossAzuriteRestart: the storage service goes away in the
// middle of a cycle (Azurite stopped, down for two seconds, started
// again with its data). The cycle fails or rides it out on retries.
// Azurite forgets leases when it restarts (Azure keeps them), so the
// replicator's next cycle finds its lease on the target lost and fails,
// as it must (someone else may hold the blob now); the replicator is
// then restarted, as an operator or a supervisor would, from its state
// file. The cycles after that succeed, every point holds its view (read
// back directly), the target ends identical and the lag recovers.
func TestCyclesAcrossAzuriteRestart(t *testing.T) {
	ctx := context.Background()
	s, err := azurite.Start(ctx, azurite.Options{})
	if err != nil {
		t.Skipf("no Azurite: %v", err)
	}
	t.Cleanup(func() { s.Stop() })
	if err := s.CreateContainer(ctx, testContainer); err != nil {
		t.Fatal(err)
	}
	const size = 16 << 20
	rng := rand.New(rand.NewPCG(95, 96))
	opts := func(create int64) *pageblob.Options {
		return &pageblob.Options{CreateSize: create, Getenv: noEnv,
			Retry: policy.RetryOptions{MaxRetries: 3, RetryDelay: 100 * time.Millisecond, MaxRetryDelay: time.Second}}
	}
	srcURL, dstURL := blobURL(t, s, "src"), blobURL(t, s, "dst")
	src, err := pageblob.OpenTarget(ctx, srcURL, opts(size))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	mutate(t, rng, src, size, 60)
	ro, err := pageblob.Open(ctx, srcURL, opts(0)) // the replicator's view of the source
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	dst, err := pageblob.OpenTarget(ctx, dstURL, opts(size))
	if err != nil {
		t.Fatal(err)
	}
	const interval = time.Second
	state := filepath.Join(t.TempDir(), "state")
	open := func(dst *pageblob.Blob, bw int64) *replicate.Replicator {
		r, err := replicate.New(replicate.Config{Name: "vm1", Source: Freezer{ro}, Target: Target{Blob: dst, Owner: "vm1"},
			Policy:    replicate.Policy{Interval: interval, KeepLast: 20, KeepHourly: -1},
			Transfer:  &transfer.Options{BandwidthLimit: bw},
			StateFile: state})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := open(dst, 4<<20) // a cycle of 16 MiB takes about 4 s
	restarted := make(chan error, 1)
	go func() {
		time.Sleep(1500 * time.Millisecond)
		restarted <- s.Restart(ctx, 2*time.Second)
	}()
	_, err = r.Cycle(ctx) // the first cycle, through the restart
	t.Logf("the cycle across the restart: %v", err)
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	// The test's own writer of the source reopens it: Azurite forgot
	// its lease.
	src.Close()
	if src, err = pageblob.OpenTarget(ctx, srcURL, opts(0)); err != nil {
		t.Fatal(err)
	}
	mutate(t, rng, src, size, 5)
	if _, err := r.Cycle(ctx); !errors.Is(err, pageblob.ErrLeaseLost) {
		t.Logf("the cycle after the restart: %v (want the lease lost; Azurite may have kept it)", err)
	}
	// The replicator restarts: a new lease, the same state.
	r.Close(ctx)
	dst.Close()
	if dst, err = pageblob.OpenTarget(ctx, dstURL, opts(0)); err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	r = open(dst, 0)
	defer r.Close(ctx)
	direct := func(u string) []byte { return readDirect(t, u) }
	for i := range 3 {
		mutate(t, rng, src, size, 5)
		want := direct(srcURL)
		var rep replicate.CycleReport
		for try := 0; ; try++ {
			if rep, err = r.Cycle(ctx); err == nil {
				break
			}
			if try == 3 {
				t.Fatalf("cycle %d after the restart: %v", i+1, err)
			}
		}
		if got := direct(dstURL + "?snapshot=" + url.QueryEscape(rep.Point.ID)); !bytes.Equal(got, want) {
			t.Fatalf("cycle %d: point %s does not hold its view", i+1, rep.Point.ID)
		}
	}
	if !bytes.Equal(direct(dstURL), direct(srcURL)) {
		t.Fatal("the target differs from the source")
	}
	if lag := r.Status().Lag; lag > 2*interval+10*time.Second {
		t.Fatalf("lag %v after the restart", lag)
	}
}
