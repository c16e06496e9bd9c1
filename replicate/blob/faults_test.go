package blob

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/deltasync/deltasync/pageblob"
	"github.com/deltasync/deltasync/pageblob/pageblobtest"
	"github.com/deltasync/deltasync/replicate"
)

// TestCyclesThroughFaults runs replication cycles between page blobs
// reached through a proxy that resets connections (before a request and
// after it was applied), answers 500 and 503 with Retry-After and delays
// answers, for 5% of the requests. A cycle may fail; it is then run again.
// Every point a successful cycle cut holds its view exactly (read back
// directly, not through the proxy), the target ends identical, and no
// orphan snapshot is left behind.
func TestCyclesThroughFaults(t *testing.T) {
	ctx := context.Background()
	s := azuriteFor(t)
	const size = 8 << 20
	seed := uint64(time.Now().UnixNano())
	t.Logf("fault seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 5))
	host := strings.SplitN(s.Endpoint, "/", 4)[2]
	proxy := pageblobtest.NewFaultProxy(t, host, 0.05, seed)
	via := func(u string) string { return strings.Replace(u, "http://"+host, proxy.URL, 1) }
	opts := func(create int64) *pageblob.Options {
		return &pageblob.Options{CreateSize: create, Getenv: noEnv,
			// Retry-After: 1 must be under MaxRetryDelay, or azcore gives up.
			Retry: policy.RetryOptions{MaxRetries: 4, RetryDelay: 50 * time.Millisecond, MaxRetryDelay: 2 * time.Second}}
	}
	srcURL, dstURL := blobURL(t, s, "src"), blobURL(t, s, "dst")
	writer := newBlobAt(t, srcURL, size) // the source's writer, direct
	mutate(t, rng, writer, size, 40)
	src, err := pageblob.Open(ctx, via(srcURL), opts(0))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := pageblob.OpenTarget(ctx, via(dstURL), opts(size))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	r, err := replicate.New(replicate.Config{Name: "vm1", Source: Freezer{src}, Target: Target{Blob: dst, Owner: "vm1"},
		Policy: replicate.Policy{KeepLast: 30, KeepHourly: -1}, StateFile: filepath.Join(t.TempDir(), "state")})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	direct := func(u string) []byte { return readDirect(t, u) }
	failed := 0
	for i := range 10 {
		if i > 0 {
			mutate(t, rng, writer, size, 5)
		}
		want := direct(srcURL)
		var rep replicate.CycleReport
		for try := 0; ; try++ {
			rep, err = r.Cycle(ctx)
			if err == nil {
				break
			}
			failed++
			t.Logf("cycle %d, try %d: %v", i+1, try+1, err)
			if try == 5 {
				t.Fatalf("cycle %d failed six times (%s)", i+1, proxy.Report())
			}
		}
		if got := direct(dstURL + "?snapshot=" + url.QueryEscape(rep.Point.ID)); !bytes.Equal(got, want) {
			t.Fatalf("cycle %d: point %s does not hold its view", i+1, rep.Point.ID)
		}
	}
	if !bytes.Equal(direct(dstURL), direct(srcURL)) {
		t.Fatal("the target differs from the source")
	}
	// No orphan: every owned snapshot of the target is a point the
	// replicator records (or one it still deletes, at the next cycle).
	rep, err := r.Cycle(ctx)
	for try := 0; err != nil && try < 5; try++ {
		rep, err = r.Cycle(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
	_ = rep
	known := map[string]bool{}
	for _, p := range r.Status().Points {
		known[p.ID] = true
	}
	plain, err := pageblob.Open(ctx, dstURL, &pageblob.Options{Getenv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	snaps, err := plain.ListSnapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, sn := range snaps {
		if sn.Owner == "vm1" && !known[sn.ID] {
			t.Errorf("orphan snapshot %s left", sn.ID)
		}
	}
	t.Logf("%d failed cycles, run again; %s", failed, proxy.Report())
}

// newBlobAt creates a page blob at u, opened as a target.
func newBlobAt(t *testing.T, u string, size int64) *pageblob.Blob {
	t.Helper()
	b, err := pageblob.OpenTarget(context.Background(), u, &pageblob.Options{CreateSize: size, Getenv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}
