package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/semaphore"
	"golang.org/x/sys/unix"

	"github.com/deltasync/deltasync/transfer"
)

// netns is a network namespace joined to this one by a veth pair, with
// netem delaying packets both ways.
type netns struct {
	name        string
	here, there string // addresses of each end
}

// newNetns makes the namespace, or skips the test saying why it cannot.
func newNetns(t *testing.T, delay string) *netns {
	t.Helper()
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is missing (apt-get install iproute2): %v", tool, err)
		}
	}
	id := os.Getpid() % 200
	n := &netns{
		name:  fmt.Sprintf("dsagent%d", os.Getpid()),
		here:  fmt.Sprintf("10.213.%d.1", id),
		there: fmt.Sprintf("10.213.%d.2", id),
	}
	va, vb := fmt.Sprintf("dsa%d", os.Getpid()), fmt.Sprintf("dsb%d", os.Getpid())
	run := func(args ...string) error {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := run("ip", "netns", "add", n.name); err != nil {
		t.Skipf("cannot make a network namespace (not root, or not permitted here): %v", err)
	}
	t.Cleanup(func() {
		_ = run("ip", "link", "del", va)
		_ = run("ip", "netns", "del", n.name)
	})
	in := func(args ...string) []string { return append([]string{"ip", "netns", "exec", n.name}, args...) }
	steps := [][]string{
		{"ip", "link", "add", va, "type", "veth", "peer", "name", vb},
		{"ip", "link", "set", vb, "netns", n.name},
		{"ip", "addr", "add", n.here + "/30", "dev", va},
		{"ip", "link", "set", va, "up"},
		in("ip", "addr", "add", n.there+"/30", "dev", vb),
		in("ip", "link", "set", vb, "up"),
		in("ip", "link", "set", "lo", "up"),
		{"tc", "qdisc", "add", "dev", va, "root", "netem", "delay", delay, "limit", "100000"},
		in("tc", "qdisc", "add", "dev", vb, "root", "netem", "delay", delay, "limit", "100000"),
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			t.Skipf("cannot set up the namespace and netem (TestLatency emulates the delay in user space instead): %v", err)
		}
	}
	return n
}

// listen opens a TCP listener inside the namespace: the socket is made
// on a thread moved into it, and keeps the namespace afterwards.
func (n *netns) listen(t *testing.T) net.Listener {
	t.Helper()
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		t.Skipf("cannot read this thread's namespace: %v", err)
	}
	defer orig.Close()
	target, err := os.Open("/var/run/netns/" + n.name)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		t.Skipf("setns: %v", err)
	}
	ln, lerr := net.Listen("tcp", n.there+":0")
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// This thread stays in the namespace: let it die with its
		// goroutine instead of running others.
		t.Fatalf("setns back: %v", err)
	}
	runtime.UnlockOSThread()
	if lerr != nil {
		t.Fatal(lerr)
	}
	return ln
}

// TestNetem syncs through an agent in another network namespace, 100 ms
// of round trip away (netem, 50 ms each way), and logs the throughput on
// changed bytes. It asserts only that the result is identical.
func TestNetem(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	n := newNetns(t, "50ms")
	rng := newRand(t)
	const size, bs = 64 << 20, 64 << 10
	src := randBytes(rng, size)
	dst := bytes.Clone(src)
	changed := changeBlocks(rng, dst, bs, size/bs/20)

	p := writeTemp(t, "d.img", dst)
	cert, key, _ := SelfSigned([]string{n.there})
	tc, err := tls.X509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	pin, _ := CertificatePin(cert)
	tok, _ := NewToken()
	srv, err := NewServer(ServerOptions{Disks: map[string]string{"d": p}, Certificate: tc,
		Tokens: []Token{{Hash: HashToken(tok), Disks: []string{"d"}}}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ln := n.listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		<-served
	}()

	c := &Client{Addr: ln.Addr().String(), Token: tok, Pin: pin}
	measureSync(t, c, src, p, changed)
}

// measureSync syncs src onto the agent's disk (at path p) through c and
// logs the round trip and the throughput on changed bytes.
func measureSync(t *testing.T, c *Client, src []byte, p string, changed int64) {
	start := time.Now()
	ping, err := net.DialTimeout("tcp", c.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	_ = ping.SetReadDeadline(time.Now().Add(2 * time.Second))
	ping.Write([]byte{0x16, 3, 1, 0, 0}) // the agent closes at this bad TLS record
	ping.Read(buf)
	rtt := time.Since(start)
	ping.Close()
	srcPath := writeTemp(t, "src.img", src)
	st, err := syncTo(withTimeout(t, 120*time.Second), t, c, srcPath, "d", &transfer.Options{NoJournal: true})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	sameBytes(t, "agent's disk", got, src)
	t.Logf("connect and one exchange %v; %d MiB disk, %.1f MiB changed: sync %v (copy %v, flush %v), %.1f MiB/s of changed data, %.0f MiB/s compared",
		rtt.Round(time.Millisecond), len(src)>>20, float64(changed)/(1<<20), st.Elapsed.Round(time.Millisecond),
		st.Copy.Round(time.Millisecond), st.Flush.Round(time.Millisecond),
		float64(changed)/(1<<20)/st.Elapsed.Seconds(), float64(len(src))/(1<<20)/st.Elapsed.Seconds())
}

// TestLatency syncs through a user-space proxy on loopback that delays
// every byte by 50 ms each way (100 ms round trip) and holds at most
// 16 MiB in flight each way, like a TCP window: where netem is missing
// (a kernel without sch_netem), this still shows what the protocol's own
// pipelining makes of a long round trip. It logs; it asserts identity.
func TestLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	rng := newRand(t)
	const size, bs = 64 << 20, 64 << 10
	src := randBytes(rng, size)
	for _, frac := range []int{20, 2} { // 5% and 50% of the blocks changed
		dst := bytes.Clone(src)
		changed := changeBlocks(rng, dst, bs, size/bs/frac)
		a := startAgent(t, map[string][]byte{"d": dst}, nil)
		p := startDelayProxy(t, a.addr, 50*time.Millisecond, 16<<20)
		c := a.client()
		c.Addr = p
		measureSync(t, c, src, a.path("d"), changed)
	}
}

// startDelayProxy forwards loopback connections to target, delaying each
// direction by oneWay with at most window bytes in flight.
func startDelayProxy(t *testing.T, target string, oneWay time.Duration, window int64) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		defer close(done)
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
			conns = append(conns, c, s)
			go delayPipe(s, c, oneWay, window)
			go delayPipe(c, s, oneWay, window)
		}
	}()
	return ln.Addr().String()
}

func delayPipe(dst, src net.Conn, delay time.Duration, window int64) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	ch := make(chan chunk, 1<<16)
	sem := semaphore.NewWeighted(window)
	go func() {
		defer close(ch)
		for {
			b := make([]byte, 64<<10)
			n, err := src.Read(b)
			if n > 0 {
				_ = sem.Acquire(context.Background(), int64(n))
				ch <- chunk{b[:n], time.Now()}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		time.Sleep(time.Until(c.at.Add(delay)))
		_, err := dst.Write(c.b)
		sem.Release(int64(len(c.b)))
		if err != nil {
			src.Close()
			for range ch {
			}
			return
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}
