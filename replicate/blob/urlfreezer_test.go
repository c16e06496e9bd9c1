package blob

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deltasync/deltasync/internal/azurite"
	"github.com/deltasync/deltasync/pageblob"
	"github.com/deltasync/deltasync/replicate"
)

// TestURLFreezer replicates from a source whose snapshots are handed out
// by URL, as a managed disk's incremental snapshots are by Azure Resource
// Manager: the fake makes blob snapshots on Azurite, names them snap-N,
// and answers each name with a SAS URL. Cycles after the first are
// hinted by diffs against the previous snapshot's URL; the target ends
// identical each time; released snapshots are deleted; no SAS reaches the
// state file.
func TestURLFreezer(t *testing.T) {
	ctx := context.Background()
	s := azuriteFor(t)
	const size = 4 << 20
	rng := rand.New(rand.NewPCG(91, 92))
	srcURL := blobURL(t, s, "mdisk")
	src, err := pageblob.OpenTarget(ctx, srcURL, &pageblob.Options{CreateSize: size, Getenv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	mutate(t, rng, src, size, 20)
	sas, err := azurite.AccountSAS()
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	snaps := map[string]string{} // name -> Azure's snapshot timestamp
	n := 0
	f := URLFreezer{
		Snapshot: func(ctx context.Context) (string, time.Time, error) {
			ts, err := src.Snapshot(ctx)
			if err != nil {
				return "", time.Time{}, err
			}
			mu.Lock()
			defer mu.Unlock()
			n++
			name := fmt.Sprintf("snap-%d", n)
			snaps[name] = ts
			return name, snapshotTime(ts), nil
		},
		URL: func(ctx context.Context, id string) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			ts, ok := snaps[id]
			if !ok {
				return "", fmt.Errorf("no snapshot %s: %w", id, pageblob.ErrNotFound)
			}
			return srcURL + "?snapshot=" + url.QueryEscape(ts) + "&" + sas, nil
		},
		Delete: func(ctx context.Context, id string) error {
			mu.Lock()
			ts := snaps[id]
			delete(snaps, id)
			mu.Unlock()
			return src.DeleteSnapshot(ctx, ts)
		},
		Options: &pageblob.Options{Getenv: noEnv},
	}
	dst := newBlob(t, s, "replica", size)
	state := filepath.Join(t.TempDir(), "state")
	r, err := replicate.New(replicate.Config{Source: f, Target: Target{Blob: dst}, Policy: replicate.Policy{KeepLast: 2, KeepHourly: -1}, StateFile: state})
	if err != nil {
		t.Fatal(err)
	}
	for c := 1; c <= 4; c++ {
		if c > 1 {
			mutate(t, rng, src, size, 5)
		}
		rep, err := r.Cycle(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if full := c == 1; rep.Full != full || (!full && rep.Reason != "snapshot diff") {
			t.Fatalf("cycle %d: full %v (%s)", c, rep.Full, rep.Reason)
		}
		if !bytes.Equal(readAll(t, dst), readAll(t, src)) {
			t.Fatalf("cycle %d: the target differs from the source", c)
		}
	}
	r.Close(ctx)
	mu.Lock()
	left := len(snaps)
	mu.Unlock()
	if left != 1 { // the base of the next cycle
		t.Fatalf("%d snapshots left, want the base only", left)
	}
	b, _ := os.ReadFile(state)
	if strings.Contains(string(b), "sig=") || strings.Contains(string(b), "?snapshot") {
		t.Fatalf("the state file holds a URL or a SAS: %s", b)
	}
}
