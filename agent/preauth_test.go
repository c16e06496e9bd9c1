package agent

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deltasync/deltasync/transfer"
)

// clientHello returns the first flight of a TLS client (its ClientHello
// record), as a client of this package sends it.
func clientHello(t testing.TB, pin string) []byte {
	t.Helper()
	cc := &captureConn{}
	_ = tls.Client(cc, pinTLS(pin)).Handshake() // fails: nothing answers
	if len(cc.b) < 100 || cc.b[0] != 0x16 {
		t.Fatalf("captured %d bytes, not a ClientHello", len(cc.b))
	}
	return cc.b
}

// captureConn keeps what is written to it; reads fail.
type captureConn struct {
	net.Conn
	b []byte
}

func (c *captureConn) Write(p []byte) (int, error) { c.b = append(c.b, p...); return len(p), nil }
func (c *captureConn) Read([]byte) (int, error)    { return 0, errors.New("no peer") }
func (c *captureConn) Close() error                { return nil }
func (c *captureConn) SetDeadline(time.Time) error { return nil }

// flood keeps connections to an agent open that never authenticate: idle
// ones that send nothing, slow ones that send a ClientHello a byte at a
// time and never finish it, and ones that send a whole ClientHello and
// then nothing (the agent does its part of the handshake for them). Each
// reconnects as soon as the agent closes it, as a hostile client would.
type flood struct {
	stop    chan struct{}
	wg      sync.WaitGroup
	dials   atomic.Int64
	failed  atomic.Int64 // dials that failed
	dropped atomic.Int64 // connections the agent closed
}

// floodMix says how many connections of each kind a flood keeps open.
type floodMix struct{ idle, slow, hello int }

func (m floodMix) total() int { return m.idle + m.slow + m.hello }

func startFlood(addr string, mix floodMix, hello []byte) *flood {
	f := &flood{stop: make(chan struct{})}
	stopped := func() bool {
		select {
		case <-f.stop:
			return true
		default:
			return false
		}
	}
	// wait blocks until the agent closes c (true) or the flood stops.
	wait := func(c net.Conn) bool {
		var b [64]byte
		for !stopped() {
			_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			_, err := c.Read(b[:])
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if err != nil {
				return true
			}
		}
		return false
	}
	const (
		idle = iota
		slow
		whole
	)
	run := func(kind int) {
		defer f.wg.Done()
		for !stopped() {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			f.dials.Add(1)
			if err != nil {
				f.failed.Add(1)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			closed := false
			switch kind {
			case whole:
				if _, err := c.Write(hello); err != nil {
					closed = true
				}
			case slow:
				for i := 0; i < len(hello)-1 && !stopped() && !closed; i++ {
					if _, err := c.Write(hello[i : i+1]); err != nil {
						closed = true
						break
					}
					// Sleep, noticing the agent's close meanwhile.
					_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
					var b [1]byte
					if _, err := c.Read(b[:]); err != nil {
						var ne net.Error
						closed = !errors.As(err, &ne) || !ne.Timeout()
					}
				}
			}
			if !closed {
				closed = wait(c)
			}
			if closed {
				f.dropped.Add(1)
			}
			c.Close()
		}
	}
	for i := range mix.total() {
		f.wg.Add(1)
		switch {
		case i < mix.idle:
			go run(idle)
		case i < mix.idle+mix.slow:
			go run(slow)
		default:
			go run(whole)
		}
	}
	return f
}

func (f *flood) end() {
	close(f.stop)
	f.wg.Wait()
}

// TestFloodProcess is the flood of TestPreAuthFlood, in a process of its
// own, as an attacker's would be: in the test's process its goroutines
// would starve the clients' own, which would then send their ClientHello
// late. It runs until its standard input ends, then prints its figures.
func TestFloodProcess(t *testing.T) {
	addr := os.Getenv("DELTASYNC_TEST_FLOOD")
	if addr == "" {
		t.Skip("run by TestPreAuthFlood")
	}
	var mix floodMix
	var pin string
	if _, err := fmt.Sscan(os.Getenv("DELTASYNC_TEST_FLOOD_ARGS"), &mix.idle, &mix.slow, &mix.hello, &pin); err != nil {
		t.Fatal(err)
	}
	f := startFlood(addr, mix, clientHello(t, pin))
	go func() {
		for range time.Tick(20 * time.Millisecond) {
			fmt.Printf("dials %d\n", f.dials.Load())
		}
	}()
	_, _ = io.Copy(io.Discard, os.Stdin)
	f.end()
	fmt.Printf("flood: %d dials (%d failed), %d dropped by the agent\n", f.dials.Load(), f.failed.Load(), f.dropped.Load())
}

// runFlood starts TestFloodProcess against addr and returns once it has
// dialed as many times as it keeps connections; stop ends it and returns
// its figures.
func runFlood(t *testing.T, addr, pin string, mix floodMix) (stop func() string) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestFloodProcess$", "-test.v")
	cmd.Env = append(os.Environ(), "DELTASYNC_TEST_FLOOD="+addr, fmt.Sprintf("DELTASYNC_TEST_FLOOD_ARGS=%d %d %d %s", mix.idle, mix.slow, mix.hello, pin))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started, ended := make(chan struct{}), make(chan struct{})
	var last string // the figures, once ended
	go func() {
		defer close(ended)
		going := started
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var n int
			if _, err := fmt.Sscanf(sc.Text(), "dials %d", &n); err == nil && n >= mix.total() && going != nil {
				close(going)
				going = nil
			}
			if strings.HasPrefix(sc.Text(), "flood:") {
				last = sc.Text()
			}
		}
	}()
	stop = sync.OnceValue(func() string {
		in.Close()
		<-ended
		if err := cmd.Wait(); err != nil {
			t.Errorf("flood process: %v", err)
		}
		return last
	})
	t.Cleanup(func() { stop() })
	select {
	case <-started:
	case <-ended:
		t.Fatal("the flood process ended")
	case <-time.After(10 * time.Second):
		t.Fatal("the flood did not get going within 10 s")
	}
	return stop
}

// TestPreAuthFlood: a flood from another process (1000 idle connections,
// 30 that send a ClientHello a byte at a time, 20 that send a whole
// ClientHello and nothing more, each reconnecting as soon as the agent
// drops it) does not keep legitimate clients out: 8 clients sync their
// disks through the agent while it lasts, each on its first try, within a
// few seconds; then, for longer than HandshakeTimeout (so that the
// flood's connections also time out and come back), a client opens and
// closes a disk again and again, and every open succeeds. The flood never
// takes a session slot. (Before the pre-authentication budget, it took
// every one, and each client failed at once with "TLS handshake: EOF".)
func TestPreAuthFlood(t *testing.T) {
	rng := newRand(t)
	const clients, size, bs = 8, 4 << 20, 64 << 10
	disks := map[string][]byte{}
	srcs := map[string][]byte{}
	for i := range clients {
		name := fmt.Sprintf("d%d", i)
		srcs[name] = randBytes(rng, size)
		dst := bytes.Clone(srcs[name])
		changeBlocks(rng, dst, bs, 8)
		disks[name] = dst
	}
	var logs atomic.Int64
	a := startAgent(t, disks, func(o *ServerOptions) {
		o.Logf = func(format string, args ...any) {
			// The flood would fill the test's log.
			if logs.Add(1) <= 100 {
				t.Logf(format, args...)
			}
		}
	})
	stop := runFlood(t, a.addr, a.pin, floodMix{idle: 1000, slow: 30, hello: 20})
	time.Sleep(300 * time.Millisecond) // the flood fills every budget there is
	limit := 10 * time.Second
	if raceEnabled {
		limit = 20 * time.Second
	}

	start := time.Now()
	errs := make([]error, clients)
	took := make([]time.Duration, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("d%d", i)
			src := writeTemp(t, name+".src", srcs[name])
			t0 := time.Now()
			_, errs[i] = syncTo(withTimeout(t, limit), t, a.client(), src, name, &transfer.Options{NoJournal: true})
			took[i] = time.Since(t0).Round(time.Millisecond)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	t.Logf("%d clients synced %d MiB each under the flood in %v (each: %v)", clients, size>>20, elapsed.Round(time.Millisecond), took)
	for i, err := range errs {
		if err != nil {
			t.Errorf("client %d under the flood: %v", i, err)
		}
	}
	if t.Failed() {
		return
	}
	for name, src := range srcs {
		sameBytes(t, name, a.bytes(t, name), src)
	}
	if elapsed > limit {
		t.Fatalf("the clients took %v under the flood (limit %v)", elapsed, limit)
	}

	opens, slowest := 0, time.Duration(0)
	for end := time.Now().Add(DefaultHandshakeTimeout + time.Second); time.Now().Before(end); opens++ {
		t0 := time.Now()
		d, err := a.client().OpenSource(withTimeout(t, limit), "d0")
		if err != nil {
			t.Fatalf("open %d under the flood: %v", opens, err)
		}
		slowest = max(slowest, time.Since(t0))
		d.Close()
	}
	t.Logf("%s; %d log lines", stop(), logs.Load())
	t.Logf("then %d opens in a row under the flood, the slowest in %v", opens, slowest.Round(time.Millisecond))
	if n := len(a.srv.sem); n != 0 {
		t.Fatalf("%d session slots taken with every client done", n)
	}
}

// TestPreAuthDeadline: a connection that does not authenticate within the
// handshake timeout is closed, whether it sends nothing, half a
// ClientHello, or a whole TLS handshake and no hello; a connection kept
// waiting holds no session slot.
func TestPreAuthDeadline(t *testing.T) {
	a := startAgent(t, map[string][]byte{"d": make([]byte, 1<<20)}, func(o *ServerOptions) {
		o.HandshakeTimeout = 300 * time.Millisecond
		o.MaxSessions = 1
	})
	hello := clientHello(t, a.pin)
	idle, err := net.Dial("tcp", a.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	half, err := net.Dial("tcp", a.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	if _, err := half.Write(hello[:len(hello)/2]); err != nil {
		t.Fatal(err)
	}
	tlsOnly := dialRaw(t, a.addr, pinTLS(a.pin)) // handshake, no hello
	// With the one session slot free, a client gets in meanwhile.
	d, err := a.client().OpenTarget(withTimeout(t, 5*time.Second), "d")
	if err != nil {
		t.Fatalf("open while three connections wait: %v", err)
	}
	d.Close()
	for name, c := range map[string]net.Conn{"idle": idle, "half a ClientHello": half, "TLS, no hello": tlsOnly.c} {
		start := time.Now()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var b [256]byte
		var err error
		for err == nil {
			_, err = c.Read(b[:])
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("%s: still open after 5 s", name)
		}
		t.Logf("%s: closed (%v) within %v of the check", name, err, time.Since(start).Round(time.Millisecond))
	}
}

// TestAgentBusy: when every session slot is taken, an authenticated
// client is told that the agent is busy and how many sessions it serves
// (ErrAgentBusy), not a bare end of the handshake; once a session ends,
// the next client gets in.
func TestAgentBusy(t *testing.T) {
	a := startAgent(t, map[string][]byte{"d": make([]byte, 1<<20)}, func(o *ServerOptions) {
		o.MaxSessions = 2
	})
	c := a.client()
	ctx := withTimeout(t, 10*time.Second)
	var open []*Disk
	for range 2 {
		d, err := c.OpenSource(ctx, "d")
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, d)
	}
	_, err := c.OpenSource(ctx, "d")
	if !errors.Is(err, ErrAgentBusy) {
		t.Fatalf("a third session: %v, want ErrAgentBusy", err)
	}
	if errors.Is(err, ErrBusy) {
		t.Fatalf("a busy agent reads as a busy disk: %v", err)
	}
	if !strings.Contains(err.Error(), "agent busy: 2 sessions in use") {
		t.Fatalf("the error does not say the agent is busy: %v", err)
	}
	t.Log(err)
	// An unauthenticated client is not told (it learns nothing).
	bad := a.client()
	bad.Token = "nope"
	if _, err := bad.OpenSource(ctx, "d"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("a wrong token on a busy agent: %v, want ErrUnauthorized", err)
	}
	// An old client sees the message too.
	old := a.client()
	old.protos = []string{alpn1}
	if _, err := old.OpenSource(ctx, "d"); err == nil || !strings.Contains(err.Error(), "agent busy: 2 sessions in use") {
		t.Fatalf("a version 1 client: %v", err)
	}
	open[0].Close()
	var d *Disk
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		if d, err = c.OpenSource(ctx, "d"); !errors.Is(err, ErrAgentBusy) {
			break // the agent may not have seen the session end yet
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("after a session ended: %v", err)
	}
	d.Close()
	open[1].Close()
}
