package pageblob

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/deltasync/deltasync/internal/azurite"
	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/transfer"
)

// stallProxy forwards to Azurite until stalled; from then on it holds
// every request without answering, as a service that stopped answering
// does, until the client gives up or the test ends.
type stallProxy struct {
	upstream string
	srv      *httptest.Server
	fwd      *http.Transport
	stalled  atomic.Bool
	puts     atomic.Int64 // Put Page requests forwarded
	held     atomic.Int64 // requests held
	done     chan struct{}
}

func newStallProxy(t *testing.T, upstream string) *stallProxy {
	p := &stallProxy{upstream: upstream, fwd: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64}, done: make(chan struct{})}
	p.srv = httptest.NewServer(p)
	t.Cleanup(func() { close(p.done); p.srv.CloseClientConnections(); p.srv.Close() })
	return p
}

func (p *stallProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.stalled.Load() {
		p.held.Add(1)
		io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-p.done:
		}
		return
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host, out.Host = "http", p.upstream, p.upstream
	out.Header.Del("Connection")
	resp, err := p.fwd.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	if r.URL.Query().Get("comp") == "page" {
		p.puts.Add(1)
	}
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// TestAzuriteStalledCancel: a sync onto a page blob whose service stops
// answering in the middle (every request held, none answered) returns
// within 2 s of its context's cancellation, with the retry policy's
// default per-try timeout of minutes: cancellation reaches the Put Pages
// and reads already on the wire. The time measured is logged.
func TestAzuriteStalledCancel(t *testing.T) {
	const size = 64 << 20
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	accImage(t, img, size, 0.2, 31)
	name := blobName(t)
	proxy := newStallProxy(t, strings.SplitN(az.Endpoint, "/", 4)[2])
	viaProxy := proxy.srv.URL + "/" + azurite.Account + "/" + testContainer + "/" + name
	o, _ := testOptions(t)
	o.Retry = policy.RetryOptions{} // the defaults: minutes per try
	o.CreateSize = size
	// The target exists and differs everywhere: the sync writes all of it,
	// slowly enough to be stalled in the middle.
	if _, err := accRun(context.Background(), t, true, img, viaProxy, o, &transfer.Options{NoJournal: true}); err != nil {
		t.Fatal(err)
	}
	accChange(t, img, size, 0.5, rand.New(rand.NewPCG(31, 1)))

	src, err := localdisk.OpenSource(img, localdisk.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	o, _ = testOptions(t)
	o.Retry = policy.RetryOptions{}
	dst, err := OpenTarget(context.Background(), viaProxy, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	before := proxy.puts.Load()
	go func() {
		_, err := transfer.Sync(ctx, src, dst, &transfer.Options{NoJournal: true, BandwidthLimit: 16 << 20})
		done <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for proxy.puts.Load() < before+4 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	proxy.stalled.Store(true)
	// Wait until requests are on the wire and held.
	for proxy.held.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	t0 := time.Now()
	cancel()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the sync had not returned 30 s after its cancellation (%d requests held)", proxy.held.Load())
	}
	took := time.Since(t0)
	t.Logf("returned %v after the cancellation, %d requests held by the stalled service, error: %v", took, proxy.held.Load(), err)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
	if took > 2*time.Second {
		t.Errorf("returned %v after the cancellation, want within 2 s", took)
	}
	proxy.stalled.Store(false)
	closeCtx := time.Now()
	dst.Close()
	t.Logf("Close (the service answering again) took %v", time.Since(closeCtx))
}
