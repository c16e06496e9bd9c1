// Command reprotect runs Azure Site Recovery's reprotect (failback)
// scenario against a private Azurite it starts itself, and prints each
// phase with its bytes and seconds:
//
//	go run ./examples/reprotect
//
// The story: a VM's disk ran in the primary region (the original, a page
// blob) and was replicated to the secondary; the VM failed over and now
// runs from a disk created in the secondary from a recovery point. Both
// sides kept a snapshot of that point. Reprotect replicates back: the
// original is kept (a snapshot of its prior state), only the differences
// are sent (the union of both sides' changes since the common point), and
// delta replication starts. A second run shows an original that is
// missing: it is seeded.
//
// Azurite answers a page-range diff with a plain listing of the blob, so
// here "the differences" covers every allocated page: correct, not
// minimal. On Azure the diff is exact. Node.js and npm must be installed
// (Azurite is installed from npm into the user's cache on first use).
package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/deltasync/deltasync/internal/azurite"
	"github.com/deltasync/deltasync/pageblob"
	"github.com/deltasync/deltasync/replicate"
	"github.com/deltasync/deltasync/replicate/blob"
	"github.com/deltasync/deltasync/transfer"
)

const (
	container = "reprotect"
	size      = 16 << 20
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "reprotect:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	fmt.Println("starting Azurite ...")
	az, err := azurite.Start(ctx, azurite.Options{})
	if err != nil {
		return err
	}
	defer az.Stop()
	if err := az.CreateContainer(ctx, container); err != nil {
		return err
	}
	fmt.Println("Azurite at", az.Endpoint)
	rng := rand.New(rand.NewPCG(1, 2))
	opts := func(create int64) *pageblob.Options {
		return &pageblob.Options{CreateSize: create, Getenv: func(string) string { return "" }}
	}

	// The primary (original) disk: half of it holds data.
	primary, err := pageblob.OpenTarget(ctx, az.BlobURL(container, "vm1-os-primary.vhd"), opts(size))
	if err != nil {
		return err
	}
	defer primary.Close()
	if err := write(ctx, primary, rng, size/2, 1<<20); err != nil {
		return err
	}
	// The recovery point the failover was made from, on the primary...
	commonPrimary, err := primary.Snapshot(ctx)
	if err != nil {
		return err
	}
	// ... and the failed-over disk in the secondary, created from it,
	// with its own snapshot of that point.
	secondary, err := pageblob.OpenTarget(ctx, az.BlobURL(container, "vm1-os-secondary.vhd"), opts(size))
	if err != nil {
		return err
	}
	defer secondary.Close()
	point, err := primary.OpenSnapshot(ctx, commonPrimary)
	if err != nil {
		return err
	}
	if _, err := transfer.Seed(ctx, point, secondary, &transfer.Options{NoJournal: true}); err != nil {
		return err
	}
	point.Close()
	commonSecondary, err := secondary.Snapshot(ctx)
	if err != nil {
		return err
	}
	// After the failover the VM writes 2% of the secondary; the primary
	// had taken a few writes (0.5%) that never replicated.
	if err := write(ctx, secondary, rng, size/50, 64<<10); err != nil {
		return err
	}
	if err := write(ctx, primary, rng, size/200, 16<<10); err != nil {
		return err
	}

	fmt.Printf("\n1. the original exists and shares the failover's recovery point (%d MiB disk)\n", size>>20)
	rep, err := replicate.Reprotect(ctx, replicate.ReprotectConfig{
		Source:      blob.Freezer{Blob: secondary},
		Target:      blob.Target{Blob: primary},
		Common:      &replicate.CommonPoint{SourceID: commonSecondary, TargetID: commonPrimary},
		Replication: replicate.Config{Name: "vm1-os", Policy: replicate.Policy{KeepLast: 3, KeepHourly: -1}, Reserve: 2},
	})
	printPhases(rep)
	if err != nil {
		return err
	}
	// Delta replication goes on: the VM writes, cycles follow.
	for i := range 2 {
		if err := write(ctx, secondary, rng, size/100, 64<<10); err != nil {
			return err
		}
		c, err := rep.Replicator.Cycle(ctx)
		if err != nil {
			return err
		}
		how := "hinted by the " + c.Reason
		if c.Full {
			how = "full comparison: " + c.Reason
		}
		fmt.Printf("   %-18s %9d bytes %7.3f s  %s, point %s\n", fmt.Sprintf("replicate %d", i+1), c.Bytes(), c.Elapsed.Seconds(), how, c.Point.ID)
	}
	if err := same(ctx, secondary, primary); err != nil {
		return err
	}
	st := rep.Replicator.Status()
	fmt.Printf("   status: %d cycles, lag %.3f s, %d recovery points, last error %v\n", st.Cycles, st.Lag.Seconds(), len(st.Points), st.LastError)

	fmt.Println("\n2. the original is missing")
	rep, err = replicate.Reprotect(ctx, replicate.ReprotectConfig{
		Source: blob.Freezer{Blob: secondary},
		Create: func(ctx context.Context, n int64) (replicate.Target, error) {
			b, err := pageblob.OpenTarget(ctx, az.BlobURL(container, "vm1-os-primary-new.vhd"), opts(n))
			if err != nil {
				return nil, err
			}
			return blob.Target{Blob: b}, nil
		},
		Replication: replicate.Config{Name: "vm1-os"},
		Cycles:      1,
	})
	printPhases(rep)
	if err != nil {
		return err
	}
	fmt.Println("\nboth originals now equal the failed-over disk; Azurite stopped")
	return nil
}

// write writes n bytes of random data in pieces of piece bytes at random
// offsets of b.
func write(ctx context.Context, b *pageblob.Blob, rng *rand.Rand, n, piece int64) error {
	p := make([]byte, piece)
	for done := int64(0); done < n; done += piece {
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		if _, err := b.WriteAtContext(ctx, p, rng.Int64N(size/piece)*piece); err != nil {
			return err
		}
	}
	return nil
}

func printPhases(rep *replicate.ReprotectReport) {
	if rep == nil {
		return
	}
	for _, p := range rep.Phases {
		fmt.Printf("   %-18s %9d bytes %7.3f s  %s\n", p.Name, p.Sent, p.Duration.Seconds(), p.Detail)
	}
}

// same proves that the two blobs hold the same bytes.
func same(ctx context.Context, a, b *pageblob.Blob) error {
	pa, pb := make([]byte, size), make([]byte, size)
	if _, err := a.ReadAtContext(ctx, pa, 0); err != nil {
		return err
	}
	if _, err := b.ReadAtContext(ctx, pb, 0); err != nil {
		return err
	}
	for i := range pa {
		if pa[i] != pb[i] {
			return fmt.Errorf("the original differs from the failed-over disk at byte %d", i)
		}
	}
	fmt.Println("   the original equals the failed-over disk")
	return nil
}
