package pageblob

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deltasync/deltasync/internal/azurite"
	"github.com/deltasync/deltasync/pageblob/pageblobtest"
)

// az is the Azurite server every Azurite test uses; testContainer exists on it.
var az *azurite.Server

const testContainer = "deltasync-test"

// TestMain starts a private Azurite (installing it with npm if needed).
// Without Node.js and npm the tests fail, loudly: CI must not pass
// without having run them.
func TestMain(m *testing.M) {
	// Targets record their leases under the state directory
	// (leasefile.go): a private one, not the user's.
	state, err := os.MkdirTemp("", "pageblob-test-state-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("XDG_STATE_HOME", state)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	s, err := azurite.Start(ctx, azurite.Options{})
	if err == nil {
		err = s.CreateContainer(ctx, testContainer)
	}
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pageblob tests need Azurite and could not start it: %v\n", err)
		if s != nil {
			s.Stop()
		}
		os.Exit(1)
	}
	az = s
	code := m.Run()
	s.Stop()
	os.RemoveAll(state)
	os.Exit(code)
}

var blobSeq atomic.Int64

// blobName returns a fresh blob name for a test.
func blobName(t *testing.T) string {
	name := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	return fmt.Sprintf("%s-%d-%d", strings.ToLower(name), time.Now().UnixNano()%1e6, blobSeq.Add(1))
}

// testOptions returns options for Azurite with a recorder under them,
// and checks the recorder when the test ends.
func testOptions(t *testing.T) (*Options, *pageblobtest.Recorder) {
	rec := &pageblobtest.Recorder{}
	t.Cleanup(func() { rec.Check(t) })
	return &Options{Transport: rec, Getenv: noEnv, Retry: fastRetry()}, rec
}

func noEnv(string) string { return "" }

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// newTarget creates a page blob of size bytes on Azurite and opens it as
// a target, closed when the test ends.
func newTarget(t *testing.T, size int64) (*Blob, *pageblobtest.Recorder) {
	t.Helper()
	o, rec := testOptions(t)
	o.CreateSize = size
	b, err := OpenTarget(context.Background(), az.BlobURL(testContainer, blobName(t)), o)
	if err != nil {
		t.Fatalf("OpenTarget: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b, rec
}

// readAll reads the whole disk.
func readAll(t *testing.T, r io.ReaderAt, size int64) []byte {
	t.Helper()
	p := make([]byte, size)
	if n, err := r.ReadAt(p, 0); err != nil && !(err == io.EOF && int64(n) == size) {
		t.Fatalf("ReadAt: %d bytes, %v", n, err)
	}
	return p
}

// rawRequest sends a request with the development key (an account SAS)
// straight to Azurite, as another client would.
func rawRequest(t *testing.T, method, u string, hdr map[string]string) *http.Response {
	t.Helper()
	q, err := azurite.AccountSAS()
	if err != nil {
		t.Fatal(err)
	}
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	req, err := http.NewRequest(method, u+sep+q, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("x-ms-version", "2021-12-02")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}
