package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deltasync/deltasync/disk/disktest"
)

// testAgent is an agent on loopback serving files in a temporary folder.
type testAgent struct {
	t     *testing.T
	addr  string
	dir   string
	pin   string
	token string // opens every disk
	cert  []byte
	srv   *Server
	stop  func()
}

// startAgent serves the given disks (name to contents) with one token
// for all of them; edit adjusts the options before the server starts.
func startAgent(t testing.TB, disks map[string][]byte, edit func(*ServerOptions)) *testAgent {
	t.Helper()
	dir := t.TempDir()
	certPEM, keyPEM, err := SelfSigned([]string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pin, err := CertificatePin(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	o := ServerOptions{
		Disks:       map[string]string{},
		Certificate: cert,
		Tokens:      []Token{{Hash: HashToken(tok), Disks: []string{"*"}}},
		Logf:        t.Logf,
	}
	for name, b := range disks {
		p := filepath.Join(dir, name+".img")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		o.Disks[name] = p
	}
	if edit != nil {
		edit(&o)
	}
	srv, err := NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	a := &testAgent{addr: ln.Addr().String(), dir: dir, pin: pin, token: tok, cert: certPEM, srv: srv}
	a.stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		srv.Close()
	})
	t.Cleanup(a.stop)
	return a
}

func (a *testAgent) client() *Client {
	return &Client{Addr: a.addr, Token: a.token, Pin: a.pin}
}

func (a *testAgent) path(name string) string { return filepath.Join(a.dir, name+".img") }

func (a *testAgent) bytes(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(a.path(name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// proxy is a TCP proxy on loopback that counts the bytes it forwards
// and, when cut > 0, drops every connection once cut bytes went from
// client to agent in all.
type proxy struct {
	addr     string
	up, down atomic.Int64 // client to agent, agent to client
	cut      atomic.Int64
	cutDone  atomic.Bool
	ln       net.Listener
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
}

func startProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: ln.Addr().String(), ln: ln}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			p.wg.Add(2)
			go p.pipe(s, c, &p.up)
			go p.pipe(c, s, &p.down)
		}
	}()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) pipe(dst, src net.Conn, n *atomic.Int64) {
	defer p.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if n == &p.up {
				if cut := p.cut.Load(); cut > 0 && p.up.Load()+int64(k) >= cut {
					p.cutDone.Store(true)
					p.closeConns()
					return
				}
			}
			n.Add(int64(k))
			if _, werr := dst.Write(buf[:k]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			// Pass the end on: a half-close keeps the other way open.
			if tc, ok := dst.(*net.TCPConn); ok && errors.Is(err, io.EOF) {
				tc.CloseWrite()
			} else {
				dst.Close()
			}
			return
		}
	}
}

func (p *proxy) closeConns() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

func (p *proxy) close() {
	p.ln.Close()
	p.closeConns()
	p.wg.Wait()
}

func (p *proxy) total() int64 { return p.up.Load() + p.down.Load() }

// randBytes returns n random bytes.
func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// changeBlocks overwrites k distinct random blocks of b (block size bs)
// with random data and returns how many bytes it changed.
func changeBlocks(rng *rand.Rand, b []byte, bs, k int) int64 {
	nb := len(b) / bs
	seen := map[int]bool{}
	var n int64
	for len(seen) < k {
		i := rng.IntN(nb)
		if seen[i] {
			continue
		}
		seen[i] = true
		copy(b[i*bs:(i+1)*bs], randBytes(rng, bs))
		n += int64(bs)
	}
	return n
}

// writeTemp writes b into a new file in t's temporary folder.
func writeTemp(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

func sameBytes(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: differs (len %d vs %d) at %d", what, len(got), len(want), firstDiff(got, want))
	}
}

// memDisk is disktest's Faulty disk as a serverDisk, for fuzzing
// sessions and injecting failures: 512-byte aligned writes of at most
// 64 MiB, as the agent's local disks state.
type memDisk struct{ *disktest.Faulty }

func newMemDisk(b []byte) *memDisk {
	f := disktest.NewFaulty(b)
	f.Align, f.MaxWrite = 512, 64<<20
	return &memDisk{f}
}

func (m *memDisk) Close() error { return nil }

// withTimeout is a context for one test step.
func withTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func readFile(p string) ([]byte, error) { return os.ReadFile(p) }
