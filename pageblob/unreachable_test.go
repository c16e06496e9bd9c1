package pageblob

// Tests of hosts that cannot be reached: they fail at once, naming the
// host.

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// A host that cannot be reached fails at once (no retries), naming the
// host, with the retry policy's defaults (about 10 s of back-off before).
// Other failures are still retried.
func TestUnreachableFailsFast(t *testing.T) {
	ctx := context.Background()
	closed := closedPort(t)
	cases := []struct{ what, u, host string }{
		{"unresolvable host", "https://nosuchhost.invalid/disks/vm.vhd?sv=2021-12-02&sr=b&sp=r&sig=SECRETSIG", "nosuchhost.invalid"},
		{"closed port", "http://" + closed + "/devstoreaccount1/disks/vm.vhd", closed},
		{"closed port, SAS", "http://" + closed + "/devstoreaccount1/disks/vm.vhd?sv=2021-12-02&sr=b&sp=r&sig=SECRETSIG", closed},
	}
	for _, c := range cases {
		for _, open := range []struct {
			name string
			f    func(context.Context, string, *Options) (*Blob, error)
		}{{"Open", Open}, {"OpenTarget", OpenTarget}} {
			start := time.Now()
			_, err := open.f(ctx, c.u, &Options{Getenv: noEnv, CreateSize: 1 << 20})
			took := time.Since(start)
			t.Logf("%s, %s: %v: %v", c.what, open.name, took, err)
			if !errors.Is(err, ErrUnreachable) {
				t.Errorf("%s, %s: %v, want ErrUnreachable", c.what, open.name, err)
			}
			if err != nil && !strings.Contains(err.Error(), c.host) {
				t.Errorf("%s, %s: %q does not name the host %s", c.what, open.name, err, c.host)
			}
			if took > 2*time.Second {
				t.Errorf("%s, %s: failed after %v, want under 2 s", c.what, open.name, took)
			}
			if err != nil {
				noSecrets(t, c.what, err.Error())
			}
		}
	}
	// No route: an address of the documentation prefix, where the
	// kernel has no route (skipped where the machine has one).
	if _, err := net.DialTimeout("tcp", "[2001:db8::1]:443", time.Second); err != nil && unreachableTest(err) {
		start := time.Now()
		_, err := Open(ctx, "https://[2001:db8::1]/disks/vm.vhd?sv=2021-12-02&sr=b&sp=r&sig=SECRETSIG", &Options{Getenv: noEnv})
		if !errors.Is(err, ErrUnreachable) || time.Since(start) > 2*time.Second {
			t.Errorf("no route: %v after %v, want ErrUnreachable at once", err, time.Since(start))
		}
	} else {
		t.Logf("no-route case skipped: dialling 2001:db8::1 gave %v", err)
	}
	// A failure that may pass is still retried: a connection reset.
	var tries atomic.Int32
	srv := newResetServer(t, &tries)
	_, err := Open(ctx, "http://"+srv+"/devstoreaccount1/disks/vm.vhd", &Options{Getenv: noEnv, Retry: fastRetry()})
	if errors.Is(err, ErrUnreachable) || tries.Load() != 4 {
		t.Errorf("connection reset: %v after %d tries, want 4 tries (retried) and no ErrUnreachable", err, tries.Load())
	}
}

func unreachableTest(err error) bool {
	_, ok := unreachableReason(err)
	return ok
}

// newResetServer accepts connections and closes them at once, counting
// them.
func newResetServer(t *testing.T, n *atomic.Int32) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			c.Close()
		}
	}()
	return l.Addr().String()
}
