package pageblobtest

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// FaultKind is one fault the proxy injects.
type FaultKind int

const (
	FaultResetBefore FaultKind = iota // the connection is reset before the request is forwarded
	FaultResetAfter                   // forwarded and applied, then the connection is reset instead of answering
	Fault500                          // 500 InternalError, not forwarded
	Fault503                          // 503 ServerBusy with Retry-After: 1, not forwarded
	FaultSlow                         // forwarded after a delay of 0.2 to 1 s
	FaultKinds                        // how many kinds there are
)

func (k FaultKind) String() string {
	return [...]string{"reset-before", "reset-after-applied", "500", "503-retry-after", "slow"}[k]
}

// FaultProxy is an HTTP reverse proxy on loopback that injects faults
// into a fraction of the requests it forwards (Azure's own failure
// modes: resets before and after a request was applied, 500, 503 with
// Retry-After, slow answers). URL is its address: put it in place of
// the emulator's host:port.
type FaultProxy struct {
	URL      string
	srv      *httptest.Server
	upstream string // host:port
	rate     float64
	fwd      http.RoundTripper

	mu     sync.Mutex
	r      *rand.Rand
	counts [FaultKinds]atomic.Int64
	total  atomic.Int64
}

// NewFaultProxy starts a proxy to upstream (host:port) that faults a
// rate of the requests, drawn from seed; it stops when the test ends.
func NewFaultProxy(t testing.TB, upstream string, rate float64, seed uint64) *FaultProxy {
	p := &FaultProxy{upstream: upstream, rate: rate, r: rand.New(rand.NewPCG(seed, 3)),
		fwd: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64}}
	p.srv = httptest.NewServer(p)
	p.URL = p.srv.URL
	t.Cleanup(p.srv.Close)
	return p
}

func (p *FaultProxy) pick() (FaultKind, time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.r.Float64() >= p.rate {
		return 0, 0, false
	}
	return FaultKind(p.r.IntN(int(FaultKinds))), time.Duration(200+p.r.IntN(800)) * time.Millisecond, true
}

// reset hijacks the client's connection and closes it with a TCP RST.
func reset(w http.ResponseWriter) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		panic(err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

func (p *FaultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.total.Add(1)
	kind, delay, faulty := p.pick()
	if faulty {
		p.counts[kind].Add(1)
		switch kind {
		case FaultResetBefore:
			reset(w)
			return
		case Fault500:
			io.Copy(io.Discard, r.Body)
			w.Header().Set("x-ms-error-code", "InternalError")
			w.WriteHeader(http.StatusInternalServerError)
			return
		case Fault503:
			io.Copy(io.Discard, r.Body)
			w.Header().Set("x-ms-error-code", "ServerBusy")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		case FaultSlow:
			time.Sleep(delay)
		}
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host, out.Host = "http", p.upstream, p.upstream
	out.Header.Del("Connection")
	resp, err := p.fwd.RoundTrip(out)
	if err != nil {
		reset(w)
		return
	}
	defer resp.Body.Close()
	if faulty && kind == FaultResetAfter {
		io.Copy(io.Discard, resp.Body) // the request was applied
		reset(w)
		return
	}
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// Report says how many faults of each kind were injected in how many
// requests.
func (p *FaultProxy) Report() string {
	var parts []string
	var n int64
	for k := FaultKind(0); k < FaultKinds; k++ {
		c := p.counts[k].Load()
		n += c
		parts = append(parts, fmt.Sprintf("%s %d", k, c))
	}
	return fmt.Sprintf("%d faults in %d requests (%.1f%%): %s", n, p.total.Load(), 100*float64(n)/float64(max(p.total.Load(), 1)), strings.Join(parts, ", "))
}

// Count returns how many faults of kind k were injected.
func (p *FaultProxy) Count(k FaultKind) int64 { return p.counts[k].Load() }
