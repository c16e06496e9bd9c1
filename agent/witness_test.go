package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/transfer"
)

var _ disk.Witness = (*Disk)(nil)

// killer dials the agent and can end every connection it made as the
// kernel does for a process killed with SIGKILL: at once, with a reset.
type killer struct {
	mu    sync.Mutex
	conns []*net.TCPConn
}

func (k *killer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	k.conns = append(k.conns, c.(*net.TCPConn))
	k.mu.Unlock()
	return c, nil
}

func (k *killer) kill() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range k.conns {
		_ = c.SetLinger(0)
		c.Close()
	}
	k.conns = nil
}

// killStore is a journal store that dies with its process: after the
// save numbered at, which runs kill, nothing more is saved or deleted.
type killStore struct {
	*transfer.MemStore
	at    int32
	kill  func()
	saves atomic.Int32
	dead  atomic.Bool
}

func (s *killStore) Save(ctx context.Context, key string, data []byte) error {
	if s.dead.Load() {
		return nil
	}
	err := s.MemStore.Save(ctx, key, data)
	if s.saves.Add(1) == s.at {
		s.dead.Store(true)
		s.kill()
	}
	return err
}

func (s *killStore) Delete(ctx context.Context, key string) error {
	if s.dead.Load() {
		return nil
	}
	return s.MemStore.Delete(ctx, key)
}

// endings counts the sessions the agent has ended (its log says so once
// a session's writes are applied and its evidence recorded).
type endings struct {
	mu   sync.Mutex
	n    int
	more chan struct{}
}

func logEndings(o *ServerOptions) *endings {
	e := &endings{more: make(chan struct{}, 1)}
	logf := o.Logf
	o.Logf = func(format string, args ...any) {
		logf(format, args...)
		line := fmt.Sprintf(format, args...)
		if strings.Contains(line, "session on disk") && (strings.Contains(line, " ended") || strings.HasSuffix(line, " done")) {
			e.mu.Lock()
			e.n++
			e.mu.Unlock()
			select {
			case e.more <- struct{}{}:
			default:
			}
		}
	}
	return e
}

// wait returns once n sessions have ended.
func (e *endings) wait(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		e.mu.Lock()
		got := e.n
		e.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-e.more:
		case <-deadline:
			t.Fatalf("%d sessions ended, want %d", got, n)
		}
	}
}

func incomplete(t *testing.T, path string) bool {
	t.Helper()
	_, err := unix.Getxattr(path, localdisk.IncompleteAttr, nil)
	if errors.Is(err, unix.ENOTSUP) {
		t.Skip("no user extended attributes here")
	}
	return err == nil
}

// killCase is an agent serving a disk that differs from src in half its
// blocks, and a client run through a killer.
type killCase struct {
	src, dst []byte
	srcPath  string
	a        *testAgent
	k        *killer
	c        *Client
	ends     *endings
	so       *ServerOptions
	journal  *transfer.MemStore
	opts     *transfer.Options
}

func newKillCase(t *testing.T, edit func(*ServerOptions)) *killCase {
	rng := newRand(t)
	const size, bs = 32 << 20, 64 << 10
	kc := &killCase{src: randBytes(rng, size), k: &killer{}, journal: &transfer.MemStore{}}
	kc.dst = bytes.Clone(kc.src)
	changeBlocks(rng, kc.dst, bs, size/bs/2)
	kc.srcPath = writeTemp(t, "src.img", kc.src)
	kc.a = startAgent(t, map[string][]byte{"d": kc.dst}, func(o *ServerOptions) {
		kc.ends = logEndings(o)
		if edit != nil {
			edit(o)
		}
		kc.so = o
	})
	kc.c = kc.a.client()
	kc.c.DialContext = kc.k.dial
	kc.c.WriteBuffer = 4 << 20
	kc.opts = &transfer.Options{Journal: kc.journal, JournalBytes: 1 << 20}
	return kc
}

// killed runs a sync that the client's death (SIGKILL) ends after its
// second journal save, and waits until the agent has ended its session.
func (kc *killCase) killed(t *testing.T, how string) {
	t.Helper()
	o := *kc.opts
	ctx, cancel := context.WithCancel(withTimeout(t, 30*time.Second))
	defer cancel()
	o.Journal = &killStore{MemStore: kc.journal, at: 2, kill: kc.k.kill}
	if how == "cancel" {
		// An interruption the process survives (SIGINT): the engine stops
		// cleanly and the Disk is closed.
		o.Journal = &cancelStore{MemStore: kc.journal, at: 2, cancel: cancel}
	}
	st, err := syncTo(ctx, t, kc.c, kc.srcPath, "d", &o)
	if err == nil {
		t.Fatalf("the run survived: %+v", st)
	}
	t.Logf("%s: %v", how, err)
	if len(kc.journal.Keys()) != 1 {
		t.Fatal("no journal left")
	}
	kc.ends.wait(t, 1)
	if !incomplete(t, kc.a.path("d")) {
		t.Fatal("the disk of an interrupted run is not marked incomplete")
	}
}

// cancelStore cancels the run after its save numbered at.
type cancelStore struct {
	*transfer.MemStore
	at     int32
	cancel func()
	saves  atomic.Int32
}

func (s *cancelStore) Save(ctx context.Context, key string, data []byte) error {
	err := s.MemStore.Save(ctx, key, data)
	if s.saves.Add(1) == s.at {
		s.cancel()
	}
	return err
}

// rerun syncs again and checks that the disk ends equal to the source
// and no longer marked incomplete.
func (kc *killCase) rerun(t *testing.T) transfer.Stats {
	t.Helper()
	st, err := syncTo(withTimeout(t, 30*time.Second), t, kc.c, kc.srcPath, "d", kc.opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rerun: resumed %v from %d, compared %d, discarded %v (%s)", st.Resumed, st.ResumedFrom, st.Compared, st.JournalDiscarded, st.JournalDiscardedReason)
	sameBytes(t, "agent's disk", kc.a.bytes(t, "d"), kc.src)
	if incomplete(t, kc.a.path("d")) {
		t.Fatal("the disk is still marked incomplete after a run that finished")
	}
	return st
}

// TestKillResume: a client killed mid-run (its connection reset, its
// journal as of its last save), or interrupted cleanly, with nothing
// written in between: the rerun resumes from the journal, comparing only
// what lies above it, because the agent recorded the disk's evidence
// when the session ended.
func TestKillResume(t *testing.T) {
	for _, how := range []string{"kill", "cancel"} {
		t.Run(how, func(t *testing.T) {
			kc := newKillCase(t, nil)
			kc.killed(t, how)
			st := kc.rerun(t)
			if !st.Resumed || st.ResumedFrom == 0 || st.JournalDiscarded {
				t.Fatalf("the rerun did not resume: %+v", st)
			}
			if size := int64(len(kc.src)); st.Compared > size-st.ResumedFrom {
				t.Fatalf("the rerun compared %d bytes, resuming from %d of %d", st.Compared, st.ResumedFrom, size)
			}
		})
	}
}

// TestKillForeignWrite: between a killed run and its rerun, something
// else writes the disk below the journal's watermark: a program on the
// agent's machine, or another session of the agent. The evidence fails,
// the rerun compares everything and ends identical. With a disk whose own
// evidence sees nothing (blind), the agent's record of its sessions
// still catches the other session.
func TestKillForeignWrite(t *testing.T) {
	garbage := bytes.Repeat([]byte{0xA5}, 64<<10)
	for _, tc := range []struct {
		name  string
		blind bool
		write func(t *testing.T, kc *killCase)
		want  string // in the reason
	}{
		{"local program", false, func(t *testing.T, kc *killCase) {
			f, err := os.OpenFile(kc.a.path("d"), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(garbage, 0); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}, "changed since the run stopped"},
		{"another session", false, agentWrite(garbage), ""},
		{"another session, blind disk", true, agentWrite(garbage), "another session of the agent changed the disk"},
		{"nothing, blind disk", true, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var edit func(*ServerOptions)
			if tc.blind {
				edit = func(o *ServerOptions) { o.open = openBlind }
			}
			kc := newKillCase(t, edit)
			kc.killed(t, "kill")
			if tc.write != nil {
				tc.write(t, kc)
			}
			st := kc.rerun(t)
			if tc.write == nil {
				if !st.Resumed {
					t.Fatalf("nothing was written and the rerun did not resume: %+v", st)
				}
				return
			}
			if st.Resumed || !st.JournalDiscarded || st.JournalDiscardedReason == "" {
				t.Fatalf("the disk was written between the runs and the rerun trusted the journal: %+v", st)
			}
			if !strings.Contains(st.JournalDiscardedReason, tc.want) {
				t.Fatalf("reason %q, want it to say %q", st.JournalDiscardedReason, tc.want)
			}
		})
	}
}

// agentWrite writes b at offset 0 of disk d through another session.
func agentWrite(b []byte) func(t *testing.T, kc *killCase) {
	return func(t *testing.T, kc *killCase) {
		ctx := withTimeout(t, 10*time.Second)
		d, err := kc.a.client().OpenTarget(ctx, "d")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.WriteAt(b, 0); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// blindDisk is a disk whose own evidence never fails.
type blindDisk struct{ *localdisk.Disk }

func (b blindDisk) Check(ctx context.Context, token, evidence string) (string, error) {
	return "", nil
}

func openBlind(path string, write bool) (serverDisk, error) {
	if !write {
		return localdisk.OpenSource(path, localdisk.SourceOptions{})
	}
	d, err := localdisk.OpenTarget(path, localdisk.TargetOptions{})
	if err != nil {
		return nil, err
	}
	return blindDisk{d}, nil
}

// gatedDisk's Flush waits for its gate.
type gatedDisk struct {
	*localdisk.Disk
	entered chan struct{}
	gate    chan struct{}
}

func (g gatedDisk) Flush(ctx context.Context) error {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	<-g.gate
	return g.Disk.Flush(ctx)
}

// TestDrainRefusesWriter: while the agent is still applying and flushing
// the writes of a killed client's session, a new session on the disk is
// refused (busy); once that session has ended, a new one opens and finds
// the evidence the agent recorded.
func TestDrainRefusesWriter(t *testing.T) {
	entered, gate := make(chan struct{}, 1), make(chan struct{})
	a := startAgent(t, map[string][]byte{"d": make([]byte, 4<<20)}, func(o *ServerOptions) {
		o.open = func(path string, write bool) (serverDisk, error) {
			d, err := localdisk.OpenTarget(path, localdisk.TargetOptions{})
			if err != nil {
				return nil, err
			}
			return gatedDisk{d, entered, gate}, nil
		}
	})
	k := &killer{}
	c := a.client()
	c.DialContext = k.dial
	ctx := withTimeout(t, 10*time.Second)
	d, err := c.OpenTarget(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	w, err := d.Watch(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(bytes.Repeat([]byte{1}, 1<<20), 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Applied(ctx); err != nil {
		t.Fatal(err)
	}
	k.kill()
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("the agent did not flush the disk when the session ended")
	}
	if d2, err := a.client().OpenTarget(ctx, "d"); !errors.Is(err, ErrBusy) {
		if err == nil {
			d2.Close()
		}
		t.Fatalf("a session opened the disk while the agent drained the last one: %v", err)
	}
	close(gate)
	var d2 *Disk
	for {
		d2, err = a.client().OpenTarget(ctx, "d")
		if !errors.Is(err, ErrBusy) || ctx.Err() != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	why, err := d2.Check(ctx, w.Token(), "")
	if err != nil || why != "" {
		t.Fatalf("check after the drain: %q, %v", why, err)
	}
}

// TestEvidenceFails: the cases where the agent's record itself says no.
func TestEvidenceFails(t *testing.T) {
	var failFlush atomic.Bool
	open := func(path string, write bool) (serverDisk, error) {
		d, err := localdisk.OpenTarget(path, localdisk.TargetOptions{})
		if err != nil {
			return nil, err
		}
		return failingFlush{d, &failFlush}, nil
	}
	for _, tc := range []struct {
		name string
		run  func(ctx context.Context, d *Disk, w disk.Watch) error
		want string
	}{
		{"written after stopped", func(ctx context.Context, d *Disk, w disk.Watch) error {
			if _, err := w.Stopped(ctx); err != nil {
				return err
			}
			_, err := d.WriteAt(make([]byte, 4096), 1<<20)
			return err
		}, "after its run had stopped"},
		{"flush fails at the end", func(ctx context.Context, d *Disk, w disk.Watch) error {
			failFlush.Store(true)
			return nil
		}, "flushing the disk failed"},
		{"done", func(ctx context.Context, d *Disk, w disk.Watch) error {
			return w.Done(ctx)
		}, "no record"},
		{"second watch", func(ctx context.Context, d *Disk, w disk.Watch) error {
			w.Abandon()
			_, err := d.Watch(ctx, true)
			return err
		}, "no record"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			failFlush.Store(false)
			a := startAgent(t, map[string][]byte{"d": make([]byte, 4<<20)}, func(o *ServerOptions) { o.open = open })
			ctx := withTimeout(t, 30*time.Second)
			d, err := a.client().OpenTarget(ctx, "d")
			if err != nil {
				t.Fatal(err)
			}
			w, err := d.Watch(ctx, true)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := d.WriteAt(bytes.Repeat([]byte{1}, 1<<20), 0); err != nil {
				t.Fatal(err)
			}
			if err := tc.run(ctx, d, w); err != nil {
				t.Fatal(err)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			failFlush.Store(false)
			d2, err := a.client().OpenTarget(ctx, "d")
			if err != nil {
				t.Fatal(err)
			}
			defer d2.Close()
			why, err := d2.Check(ctx, w.Token(), "")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(why, tc.want) {
				t.Fatalf("check: %q, want it to say %q", why, tc.want)
			}
		})
	}
}

type failingFlush struct {
	*localdisk.Disk
	fail *atomic.Bool
}

func (f failingFlush) Flush(ctx context.Context) error {
	if f.fail.Load() {
		return errors.New("injected EIO")
	}
	return f.Disk.Flush(ctx)
}

// TestAgentRestartForgets: an agent restarted between the runs has no
// record of the killed one: the rerun compares everything.
func TestAgentRestartForgets(t *testing.T) {
	kc := newKillCase(t, nil)
	kc.killed(t, "kill")
	kc.a.stop()
	srv, err := NewServer(*kc.so)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", kc.a.addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		<-done
		srv.Close()
	}()
	st, err := syncTo(withTimeout(t, 30*time.Second), t, kc.c, kc.srcPath, "d", kc.opts)
	if err != nil {
		t.Fatal(err)
	}
	if st.Resumed || !strings.Contains(st.JournalDiscardedReason, "no record") {
		t.Fatalf("rerun through a restarted agent: %+v", st)
	}
	sameBytes(t, "agent's disk", kc.a.bytes(t, "d"), kc.src)
}

// TestOldAgentNoEvidence: an agent from before protocol version 3 keeps
// no evidence: a run through it works, and the rerun after a kill
// compares everything.
func TestOldAgentNoEvidence(t *testing.T) {
	kc := newKillCase(t, func(o *ServerOptions) { o.protos = []string{alpn2, alpn1} })
	ctx := withTimeout(t, 10*time.Second)
	d, err := kc.c.OpenTarget(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	w, err := d.Watch(ctx, true)
	if err != nil || w.Token() != "" {
		t.Fatalf("watch through an old agent: token %q, %v", w.Token(), err)
	}
	if why, err := d.Check(ctx, watchTokenPrefix+"00", ""); err != nil || why == "" {
		t.Fatalf("check through an old agent: %q, %v", why, err)
	}
	d.Close()
	kc.ends.wait(t, 1)
	o := *kc.opts
	o.Journal = &killStore{MemStore: kc.journal, at: 2, kill: kc.k.kill}
	if _, err := syncTo(withTimeout(t, 30*time.Second), t, kc.c, kc.srcPath, "d", &o); err == nil {
		t.Fatal("the run survived")
	}
	kc.ends.wait(t, 2)
	st, err := syncTo(withTimeout(t, 30*time.Second), t, kc.c, kc.srcPath, "d", kc.opts)
	if err != nil {
		t.Fatal(err)
	}
	if st.Resumed || !st.JournalDiscarded {
		t.Fatalf("rerun through an old agent: %+v", st)
	}
	sameBytes(t, "agent's disk", kc.a.bytes(t, "d"), kc.src)
}
