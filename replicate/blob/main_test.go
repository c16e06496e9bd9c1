package blob

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/disk/disktest"
	"github.com/deltasync/deltasync/internal/azurite"
	"github.com/deltasync/deltasync/pageblob"
	"github.com/deltasync/deltasync/replicate"
)

// The Azurite server is started by the first test that needs it and
// stopped by TestMain.
var (
	azOnce sync.Once
	az     *azurite.Server
	azErr  error
)

const testContainer = "replicate-test"

func TestMain(m *testing.M) {
	code := m.Run()
	if az != nil {
		az.Stop()
	}
	os.Exit(code)
}

// azuriteFor returns the shared Azurite server; a failure to start it
// fails the test (never skips).
func azuriteFor(t *testing.T) *azurite.Server {
	t.Helper()
	azOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		az, azErr = azurite.Start(ctx, azurite.Options{})
		if azErr == nil {
			azErr = az.CreateContainer(ctx, testContainer)
		}
	})
	if azErr != nil {
		t.Fatalf("starting Azurite: %v", azErr)
	}
	return az
}

var blobSeq atomic.Int64

func blobURL(t *testing.T, s *azurite.Server, what string) string {
	name := strings.ToLower(strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()))
	return s.BlobURL(testContainer, fmt.Sprintf("%s-%s-%d-%d", name, what, time.Now().UnixNano()%1e6, blobSeq.Add(1)))
}

func noEnv(string) string { return "" }

// newBlob creates a page blob of size bytes on Azurite, opened as a
// target (lease, sequence number), closed at the end of the test.
func newBlob(t *testing.T, s *azurite.Server, what string, size int64) *pageblob.Blob {
	t.Helper()
	b, err := pageblob.OpenTarget(context.Background(), blobURL(t, s, what), &pageblob.Options{CreateSize: size, Getenv: noEnv})
	if err != nil {
		t.Fatalf("OpenTarget: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// readAll reads a whole disk.
func readAll(t *testing.T, r disk.Source) []byte {
	t.Helper()
	p, err := disktest.ReadAll(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// mutate writes n random runs of 512-byte multiples into the disk; a
// quarter of them are zeros, cleared when the disk can clear.
func mutate(t *testing.T, rng *rand.Rand, w io.WriterAt, size int64, n int) {
	t.Helper()
	for range n {
		l := int64(1+rng.IntN(64)) * 512
		off := rng.Int64N(size/512-l/512) * 512
		p := make([]byte, l)
		if rng.IntN(4) != 0 {
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
		}
		if z, ok := w.(disk.Zeroer); ok && !bytes.ContainsFunc(p, func(r rune) bool { return r != 0 }) {
			if err := z.ZeroRange(context.Background(), off, l); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := w.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
	}
}

// pointEquals opens a recovery point and checks it holds want.
func pointEquals(t *testing.T, tg replicate.Points, id string, want []byte) {
	t.Helper()
	ps, err := tg.OpenPoint(context.Background(), id)
	if err != nil {
		t.Fatalf("OpenPoint %s: %v", id, err)
	}
	defer ps.Close()
	if err := disktest.SameBytes(context.Background(), ps, want); err != nil {
		t.Fatalf("point %s is not the source it was cut from: %v", id, err)
	}
}

// readDirect reads the whole blob (or snapshot) at u, opened apart from
// the code under test.
func readDirect(t *testing.T, u string) []byte {
	t.Helper()
	b, err := pageblob.Open(context.Background(), u, &pageblob.Options{Getenv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	return readAll(t, b)
}
