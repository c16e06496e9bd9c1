//go:build linux

package main

// End-to-end tests of the command: the binary is built once (TestMain) and
// run as a user would, on real files in a temporary folder and, as root,
// on loop devices. Every seed and sync passes -journal-dir into the test's
// folder (and XDG_STATE_HOME points there too), so nothing touches the
// user's state directory.
//
// Power loss cannot be simulated with the real command; it is covered by
// transfer's TestPowerLossResume and TestCrashModes.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// bin is the deltasync binary built by TestMain.
var bin string

func TestMain(m *testing.M) {
	if os.Getenv("DELTASYNC_SIGNAL_CHILD") == "1" {
		os.Exit(m.Run()) // a child of TestOpenContextAfterCaughtProcess: no binary needed
	}
	dir, err := os.MkdirTemp("", "deltasync-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	bin = filepath.Join(dir, "deltasync")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	kiB = 1 << 10
	miB = 1 << 20
	// bs is the default comparison block size: changes made on this grid
	// are written whole, so written bytes can be predicted exactly.
	bs = 64 * kiB
)

// outcome is what a finished run of the command left.
type outcome struct {
	args           []string
	stdout, stderr string
	code           int
}

func (o outcome) String() string {
	return fmt.Sprintf("deltasync %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(o.args, " "), o.code, o.stdout, o.stderr)
}

// command prepares a run of the binary with a private state directory.
func command(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "XDG_STATE_HOME="+stateHome(t))
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	return cmd, &so, &se
}

var stateHomes = map[string]string{}

// stateHome is a folder for XDG_STATE_HOME, one per top-level test.
func stateHome(t *testing.T) string {
	name, _, _ := strings.Cut(t.Name(), "/")
	if d, ok := stateHomes[name]; ok {
		return d
	}
	d, err := os.MkdirTemp("", "deltasync-e2e-state-")
	if err != nil {
		t.Fatal(err)
	}
	stateHomes[name] = d
	t.Cleanup(func() {
		// Nothing may have been put there: every run names -journal-dir.
		if es, _ := os.ReadDir(filepath.Join(d, "deltasync")); len(es) > 0 {
			t.Errorf("the default state directory was used: %v", es)
		}
		os.RemoveAll(d)
		delete(stateHomes, name)
	})
	return d
}

// runCmd runs the command to its end (at most two minutes) and returns what
// it left. A Go panic also exits with status 2, so a panic is always an
// error of the test.
func runCmd(t *testing.T, args ...string) outcome {
	t.Helper()
	return runCmdEnv(t, nil, args...)
}

// runCmdEnv is runCmd with more environment variables.
func runCmdEnv(t *testing.T, env []string, args ...string) outcome {
	t.Helper()
	cmd, so, se := command(t, args...)
	cmd.Env = append(cmd.Env, env...)
	timer := time.AfterFunc(2*time.Minute, func() { cmd.Process.Kill() })
	err := cmd.Run()
	timer.Stop()
	o := outcome{args: args, stdout: so.String(), stderr: se.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		o.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("deltasync %s: %v", strings.Join(args, " "), err)
	}
	noPanic(t, o.stderr)
	return o
}

func noPanic(t *testing.T, stderr string) {
	t.Helper()
	if strings.Contains(stderr, "panic:") || strings.Contains(stderr, "goroutine ") {
		t.Errorf("the command panicked:\n%s", stderr)
	}
}

// want checks the exit status and that stderr says each of says
// (case-insensitive).
func want(t *testing.T, o outcome, code int, says ...string) {
	t.Helper()
	if o.code != code {
		t.Fatalf("exit %d, want %d\n%s", o.code, code, o)
	}
	for _, s := range says {
		if !strings.Contains(strings.ToLower(o.stderr), strings.ToLower(s)) {
			t.Errorf("stderr does not say %q\n%s", s, o)
		}
	}
}

// figures parses the --json line of a seed or a sync.
func figures(t *testing.T, o outcome) result {
	t.Helper()
	want(t, o, 0)
	var r result
	if err := json.Unmarshal([]byte(o.stdout), &r); err != nil {
		t.Fatalf("--json output: %v\n%s", err, o)
	}
	return r
}

func newRand(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("DELTASYNC_E2E_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("random seed %d (DELTASYNC_E2E_SEED)", seed)
	return rand.New(rand.NewPCG(seed, 0x5eed))
}

// randomBytes returns n random bytes.
func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	var seed [32]byte
	for i := range seed {
		seed[i] = byte(rng.Uint32())
	}
	rand.NewChaCha8(seed).Read(b)
	return b
}

// change rewrites n distinct bs-blocks of b (random data, or zeros for the
// first zeros of them) and returns their offsets.
func change(rng *rand.Rand, b []byte, n, zeros int) []int64 {
	var offs []int64
	seen := map[int]bool{}
	for len(offs) < n {
		k := rng.IntN(len(b) / bs)
		if seen[k] {
			continue
		}
		seen[k] = true
		blk := b[k*bs : (k+1)*bs]
		if len(offs) < zeros {
			clear(blk)
		} else {
			copy(blk, randomBytes(rng, bs))
		}
		offs = append(offs, int64(k*bs))
	}
	return offs
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// restore makes path hold b: it rewrites in place only the blocks that
// differ (rewriting the whole file, truncated, would leave the filesystem
// a file's worth of new allocations to write back) and syncs them, so
// that the run that follows does not wait for the test's own writes.
func restore(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cur := make([]byte, bs)
	for off := 0; off < len(b); off += bs {
		blk := b[off:min(len(b), off+bs)]
		n, _ := f.ReadAt(cur[:len(blk)], int64(off))
		if n == len(blk) && bytes.Equal(cur[:n], blk) {
			continue
		}
		if _, err := f.WriteAt(blk, int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(int64(len(b))); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readInto reads the file at path into *buf, reusing its memory (large
// allocations are slow under the race detector), and returns the bytes;
// err is the error of opening or reading.
func readInto(path string, buf *[]byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	n := int(fi.Size())
	if fi.Mode().IsRegular() && n <= cap(*buf) {
		// unix.Pread: os.File's reads tell the race detector about every
		// byte read, which costs more than the read.
		b := (*buf)[:n]
		for off := 0; off < n; {
			m, err := unix.Pread(int(f.Fd()), b[off:min(n, off+4*miB)], int64(off))
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return nil, err
			}
			if m == 0 {
				return nil, fmt.Errorf("%s: %d bytes, not %d", path, off, n)
			}
			off += m
		}
		return b, nil
	}
	b, err := os.ReadFile(path)
	if err == nil && cap(b) > cap(*buf) {
		*buf = b
	}
	return b, err
}

// scratch is sameBytes's buffer (tests do not run in parallel).
var scratch []byte

// sameBytes checks that path holds exactly b.
func sameBytes(t *testing.T, what, path string, b []byte) {
	t.Helper()
	got, err := readInto(path, &scratch)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(b) {
		t.Fatalf("%s: %s is %d bytes, want %d", what, path, len(got), len(b))
	}
	if !bytes.Equal(got, b) {
		i := 0
		for got[i] == b[i] {
			i++
		}
		t.Fatalf("%s: %s differs from what it should hold, first at offset %d", what, path, i)
	}
}

func journals(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.journal"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// watermark reads a journal file of transfer's format (magic, length,
// JSON, SHA-256) and returns its watermark; ok is false when there is
// none, or it cannot be read.
func watermark(path string) (w int64, ok bool) {
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 12+32 || string(b[:8]) != "DSJRNL01" {
		return 0, false
	}
	n := int(binary.BigEndian.Uint32(b[8:12]))
	if 12+n+32 != len(b) {
		return 0, false
	}
	var rec struct{ Watermark int64 }
	if json.Unmarshal(b[12:12+n], &rec) != nil {
		return 0, false
	}
	return rec.Watermark, true
}

// watched is a run of the command watched from outside: the watermarks
// its journal went through, as seen by polling its folder.
type watched struct {
	saves    []int64 // distinct watermarks seen, in order
	exited   bool    // it ended by itself (before any kill)
	exitErr  error
	stderr   string
	duration time.Duration
}

// watch starts args and polls the journal folder every millisecond until
// the run ends or, unless kill is negative, kill has passed; then it kills
// the run with SIGKILL and waits for it.
func watch(t *testing.T, jdir string, kill time.Duration, args ...string) watched {
	t.Helper()
	cmd, _, se := command(t, args...)
	began := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() { ended <- cmd.Wait() }()
	var w watched
	seen := func() {
		for _, j := range journals(t, jdir) {
			if m, ok := watermark(j); ok && (len(w.saves) == 0 || w.saves[len(w.saves)-1] != m) {
				w.saves = append(w.saves, m)
			}
		}
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var deadline <-chan time.Time
	if kill >= 0 {
		tm := time.NewTimer(kill)
		defer tm.Stop()
		deadline = tm.C
	}
	limit := time.NewTimer(2 * time.Minute)
	defer limit.Stop()
loop:
	for {
		select {
		case err := <-ended:
			w.exited, w.exitErr = true, err
			break loop
		case <-deadline:
			break loop
		case <-limit.C:
			t.Errorf("deltasync %s: still running after two minutes", strings.Join(args, " "))
			break loop
		case <-tick.C:
			seen()
		}
	}
	if !w.exited {
		cmd.Process.Signal(syscall.SIGKILL)
		if err := <-ended; err == nil {
			w.exited = true // it ended just before the signal
		} else if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			w.exited, w.exitErr = true, err
		}
	}
	w.duration = time.Since(began)
	seen()
	w.stderr = se.String()
	noPanic(t, w.stderr)
	return w
}

// diskDiff compares a disk's blocks, as they are after an interrupted run,
// with the source and with what the disk held before the run.
type diskDiff struct {
	remaining   int64 // bytes of the blocks that still differ from the source
	fixedEnd    int64 // end of the last block the interrupted run made equal
	brokenBlock int64 // offset of a block equal before and not after, or -1
}

func compareBlocks(src, before, now []byte) diskDiff {
	d := diskDiff{brokenBlock: -1}
	pad := make([]byte, bs)
	at := func(b []byte, off, n int) []byte { // past the end reads as zeros
		if off+n <= len(b) {
			return b[off : off+n]
		}
		clear(pad)
		if off < len(b) {
			copy(pad, b[off:])
		}
		return pad[:n]
	}
	for off := 0; off < len(src); off += bs {
		n := min(bs, len(src)-off)
		s := src[off : off+n]
		eqBefore := bytes.Equal(s, at(before, off, n))
		eqNow := bytes.Equal(s, at(now, off, n))
		switch {
		case eqBefore:
			if !eqNow && d.brokenBlock < 0 {
				d.brokenBlock = int64(off)
			}
		case eqNow:
			d.fixedEnd = int64(off + n)
		default:
			d.remaining += int64(n)
		}
	}
	return d
}

// changedFrom counts the bytes of the blocks at or after off that differ
// between src and before (nil: all zeros).
func changedFrom(src, before []byte, off int64) int64 {
	var n int64
	zeros := make([]byte, bs)
	for o := int(off / bs * bs); o < len(src); o += bs {
		e := min(len(src), o+bs)
		b := zeros[:e-o]
		if before != nil {
			b = before[o:e]
		}
		if !bytes.Equal(src[o:e], b) {
			n += int64(e - o)
		}
	}
	return n
}

// TestKillResume kills sync runs (and seed runs into a new file) with
// SIGKILL at random moments and reruns them to completion. Each rerun
// must leave the target identical to the source; resume exactly from the
// journal the killed run left (and from nothing when it left none); and
// write exactly what the killed run left undone, which is at most the
// bytes changed from its watermark on plus one journal interval. Most
// reruns must resume. How much of the killed run's work is redone (the
// span between its watermark and the last block it finished) is logged.
func TestKillResume(t *testing.T) {
	if testing.Short() {
		t.Skip("about 20 s (40 s with -race); skipped with -short")
	}
	const (
		size         = 96 * miB
		journalBytes = 4 * miB
		syncKills    = 20
		seedKills    = 5
	)
	rng := newRand(t)
	dir := t.TempDir()
	jdir := filepath.Join(dir, "journal")
	srcPath, dstPath, newPath := filepath.Join(dir, "source.img"), filepath.Join(dir, "target.img"), filepath.Join(dir, "new.img")

	// The source: random data, 1 block in 32 zeros. The target: the
	// source with a third of its blocks rewritten (where the source has
	// zeros, the target then has data, to be cleared).
	src := randomBytes(rng, size)
	var srcZero int64
	for off := 0; off < size; off += bs {
		if rng.IntN(32) == 0 {
			clear(src[off : off+bs])
			srcZero += bs
		}
	}
	before := bytes.Clone(src)
	var changedData, changedZero int64
	for off := 0; off < size; off += bs {
		if rng.IntN(3) == 0 {
			copy(before[off:off+bs], randomBytes(rng, bs))
			if bytes.Count(src[off:off+bs], []byte{0}) == bs {
				changedZero += bs
			} else {
				changedData += bs
			}
		}
	}
	nonZero := int64(size) - srcZero
	writeFile(t, srcPath, src)
	flags := []string{"-journal-dir", jdir, "-journal-bytes", strconv.Itoa(journalBytes)}
	syncArgs := func(extra ...string) []string {
		return append(append(append([]string{"sync"}, flags...), extra...), srcPath, dstPath)
	}
	seedArgs := func(extra ...string) []string {
		return append(append(append([]string{"seed"}, flags...), extra...), srcPath, newPath)
	}

	// An uninterrupted run of each, slowed down to last about a second,
	// gives the span in which to kill. It also checks the figures
	// exactly, and that the journal is saved every journal interval: of
	// the 24 saves, polling sees most.
	syncLimit := strconv.FormatInt(changedData, 10)
	seedLimit := strconv.FormatInt(nonZero, 10)
	restore(t, dstPath, before)
	w := watch(t, jdir, -1, syncArgs("-json", "-bwlimit", syncLimit)...)
	if w.exitErr != nil {
		t.Fatalf("uninterrupted sync: %v: %s", w.exitErr, w.stderr)
	}
	syncSpan := w.duration
	sameBytes(t, "uninterrupted sync", dstPath, src)
	if len(w.saves) < size/journalBytes/3 {
		t.Errorf("uninterrupted sync: %d journal saves seen, want about %d (one every %d bytes)", len(w.saves), size/journalBytes, journalBytes)
	}
	r := figures(t, runCmd(t, syncArgs("-json")...))
	if r.BytesWritten != 0 || r.BytesZeroed != 0 || r.Resumed {
		t.Fatalf("a sync of identical disks wrote %d, cleared %d, resumed %v", r.BytesWritten, r.BytesZeroed, r.Resumed)
	}
	restore(t, dstPath, before)
	r = figures(t, runCmd(t, syncArgs("-json")...))
	if r.BytesWritten != changedData || r.BytesZeroed != changedZero || r.BytesCompared != size || r.Resumed {
		t.Fatalf("sync: wrote %d zeroed %d compared %d resumed %v, want %d, %d, %d, false",
			r.BytesWritten, r.BytesZeroed, r.BytesCompared, r.Resumed, changedData, changedZero, size)
	}
	w = watch(t, jdir, -1, seedArgs("-bwlimit", seedLimit)...)
	if w.exitErr != nil {
		t.Fatalf("uninterrupted seed: %v: %s", w.exitErr, w.stderr)
	}
	seedSpan := w.duration
	sameBytes(t, "uninterrupted seed", newPath, src)
	os.Remove(newPath)
	r = figures(t, runCmd(t, seedArgs("-json")...))
	if r.BytesWritten != nonZero || r.BytesZeroed != 0 || r.Resumed {
		t.Fatalf("seed: wrote %d zeroed %d resumed %v, want %d, 0, false", r.BytesWritten, r.BytesZeroed, r.Resumed, nonZero)
	}
	t.Logf("uninterrupted, limited: sync %v (%d bytes to write, %d to clear), seed %v (%d bytes)", syncSpan, changedData, changedZero, seedSpan, nonZero)

	type tally struct {
		runs, resumed, ended            int
		maxRedone, maxRewritten, excess int64
	}
	var tallies [2]tally
	var nowBuf []byte
	for i := range syncKills + seedKills {
		seed := i >= syncKills
		kind, ta := "sync", &tallies[0]
		args, rerun, dst, span, initial := syncArgs("-bwlimit", syncLimit), syncArgs("-json"), dstPath, syncSpan, before
		if seed {
			kind, ta = "seed", &tallies[1]
			args, rerun, dst, span, initial = seedArgs("-bwlimit", seedLimit), seedArgs("-json"), newPath, seedSpan, nil
			if err := os.Remove(newPath); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
		} else {
			restore(t, dstPath, before)
		}
		if js := journals(t, jdir); len(js) != 0 {
			t.Fatalf("run %d: journals left by a finished run: %v", i, js)
		}
		ta.runs++

		delay := time.Duration(rng.Int64N(int64(span)))
		w := watch(t, jdir, delay, args...)
		if w.exited {
			if w.exitErr != nil {
				t.Fatalf("run %d: %v before it was killed: %s", i, w.exitErr, w.stderr)
			}
			ta.ended++
		}
		now, err := readInto(dst, &nowBuf)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		d := compareBlocks(src, initial, now)
		if d.brokenBlock >= 0 {
			t.Errorf("run %d: the killed run changed the block at %d, which was equal to the source's", i, d.brokenBlock)
		}
		saved, haveJournal := int64(0), false
		if js := journals(t, jdir); len(js) == 1 {
			saved, haveJournal = watermark(js[0])
			if !haveJournal {
				t.Fatalf("run %d: unreadable journal %s", i, js[0])
			}
		}

		r := figures(t, runCmd(t, rerun...))
		sameBytes(t, fmt.Sprintf("run %d, killed after %v, rerun", i, delay), dst, src)
		if r.Resumed {
			ta.resumed++
		}
		if r.Resumed != haveJournal || r.ResumedFrom != saved {
			t.Errorf("run %d: the rerun resumed=%v from %d; the killed run left a journal: %v, at %d", i, r.Resumed, r.ResumedFrom, haveJournal, saved)
		}
		// The rerun writes what was left to do, no more: what the killed
		// run finished below its watermark is trusted, and above it
		// comparison finds what it already wrote equal.
		done := r.BytesWritten + r.BytesZeroed
		if done != d.remaining {
			t.Errorf("run %d: the rerun wrote and cleared %d bytes; %d remained to do", i, done, d.remaining)
		}
		ta.excess = max(ta.excess, done-changedFrom(src, initial, r.ResumedFrom))
		if limit := changedFrom(src, initial, r.ResumedFrom) + journalBytes; done > limit {
			t.Errorf("run %d: the rerun wrote and cleared %d bytes, more than the %d changed from %d on plus one journal interval",
				i, done, limit-journalBytes, r.ResumedFrom)
		}
		if want := int64(size) - r.ResumedFrom; r.BytesCompared != want {
			t.Errorf("run %d: the rerun compared %d bytes from %d, want %d", i, r.BytesCompared, r.ResumedFrom, want)
		}
		// What the killed run had done past its watermark (the bytes of
		// the range it had finished, and of the writes among them) is
		// compared again by the rerun; a rerun that trusted the watermark
		// and wrote blindly would write it again.
		redone, rewritten := int64(0), int64(0)
		if haveJournal || d.remaining > 0 {
			redone = max(0, d.fixedEnd-r.ResumedFrom)
			rewritten = changedFrom(src, initial, r.ResumedFrom) - d.remaining
			ta.maxRedone = max(ta.maxRedone, redone)
			ta.maxRewritten = max(ta.maxRewritten, rewritten)
		}
		t.Logf("run %2d %s: killed at %4dms (%2d saves seen); %5.1f MiB left to do; rerun resumed=%-5v from %5.1f MiB, wrote+cleared %5.1f MiB; done past the watermark: %4.1f MiB of range, %4.1f MiB of writes",
			i, kind, delay.Milliseconds(), len(w.saves), float64(d.remaining)/miB, r.Resumed, float64(r.ResumedFrom)/miB, float64(done)/miB,
			float64(redone)/miB, float64(rewritten)/miB)
	}
	for k, ta := range tallies {
		kind := []string{"sync", "seed"}[k]
		t.Logf("%s: %d of %d reruns resumed (%d runs ended before the kill); rerun writes minus bytes changed past the watermark: at most %d; done past the watermark: at most %.1f MiB of range, %.1f MiB of writes",
			kind, ta.resumed, ta.runs, ta.ended, ta.excess, float64(ta.maxRedone)/miB, float64(ta.maxRewritten)/miB)
		if ta.resumed*2 <= ta.runs-ta.ended {
			t.Errorf("%s: only %d of %d reruns resumed", kind, ta.resumed, ta.runs)
		}
	}
}

// pair writes a source of size random bytes and a target that is the
// source with a third of its blocks rewritten; it returns both contents.
func pair(t *testing.T, rng *rand.Rand, srcPath, dstPath string, size int) (src, dst []byte) {
	t.Helper()
	src = randomBytes(rng, size)
	dst = bytes.Clone(src)
	for off := 0; off < size; off += bs {
		if rng.IntN(3) == 0 {
			copy(dst[off:min(size, off+bs)], randomBytes(rng, bs))
		}
	}
	writeFile(t, srcPath, src)
	writeFile(t, dstPath, dst)
	return src, dst
}

// TestSameDisk: a source and a target that are one file or device are
// refused, with a message that says so, and the file is not changed.
func TestSameDisk(t *testing.T) {
	rng := newRand(t)
	dir := t.TempDir()
	jdir := filepath.Join(dir, "journal")
	a := filepath.Join(dir, "a.img")
	data := randomBytes(rng, 2*miB)
	writeFile(t, a, data)
	link, sym := filepath.Join(dir, "hardlink.img"), filepath.Join(dir, "symlink.img")
	if err := os.Link(a, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(a, sym); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
	}{
		{"same path", []string{"sync", a, a}},
		{"hard link", []string{"sync", a, link}},
		{"hard link, allow-live", []string{"sync", "-allow-live", a, link}},
		{"symbolic link", []string{"sync", a, sym}},
		{"seed onto itself", []string{"seed", link, a}},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{c.args[0], "-journal-dir", jdir}, c.args[1:]...)
			want(t, runCmd(t, args...), 2, "same disk")
			sameBytes(t, "after the refusal", a, data)
		})
	}
	// verify of a file against itself is refused too: "identical" would
	// prove nothing about a second copy (localdisk.CheckSides).
	want(t, runCmd(t, "verify", a, link), 2, "share storage", a, link)
}

// TestBadInput: a missing source, an unwritable target, a directory:
// each refused with exit status 2 and a message naming the problem, and
// the target left as it was.
func TestBadInput(t *testing.T) {
	rng := newRand(t)
	dir := t.TempDir()
	jdir := filepath.Join(dir, "journal")
	srcPath, dstPath := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
	_, dst := pair(t, rng, srcPath, dstPath, 4*miB)
	missing := filepath.Join(dir, "missing.img")

	t.Run("missing source", func(t *testing.T) {
		want(t, runCmd(t, "sync", "-journal-dir", jdir, missing, dstPath), 2, missing, "no such file")
		sameBytes(t, "target", dstPath, dst)
		newPath := filepath.Join(dir, "new.img")
		want(t, runCmd(t, "seed", "-journal-dir", jdir, missing, newPath), 2, missing, "no such file")
		if _, err := os.Stat(newPath); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a seed from a missing source created its target: %v", err)
		}
	})
	t.Run("missing target", func(t *testing.T) {
		want(t, runCmd(t, "sync", "-journal-dir", jdir, srcPath, missing), 2, missing, "no such file", "deltasync seed")
	})
	t.Run("target is a directory", func(t *testing.T) {
		d := filepath.Join(dir, "folder")
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		want(t, runCmd(t, "sync", "-journal-dir", jdir, srcPath, d), 2, d, "directory")
		want(t, runCmd(t, "seed", "-journal-dir", jdir, srcPath, d), 2, d, "directory")
		want(t, runCmd(t, "sync", "-journal-dir", jdir, d, dstPath), 2, d, "directory")
		sameBytes(t, "target", dstPath, dst)
	})
	t.Run("immutable target", func(t *testing.T) {
		if _, err := exec.LookPath("chattr"); err != nil {
			t.Skip("no chattr")
		}
		if out, err := exec.Command("chattr", "+i", dstPath).CombinedOutput(); err != nil {
			t.Skipf("chattr +i: %v: %s", err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command("chattr", "-i", dstPath).CombinedOutput(); err != nil {
				t.Errorf("chattr -i: %v: %s", err, out)
			}
		})
		want(t, runCmd(t, "sync", "-journal-dir", jdir, srcPath, dstPath), 2, dstPath, "read-only")
		sameBytes(t, "immutable target", dstPath, dst)
	})
	t.Run("bad flags", func(t *testing.T) {
		want(t, runCmd(t, "sync", "-journal-dir", jdir, "-block-size", "1000", srcPath, dstPath), 2, "block size")
		want(t, runCmd(t, "sync", "-journal-dir", jdir, "-fsync", "sometimes", srcPath, dstPath), 2, "-fsync")
		want(t, runCmd(t, "sync", "-journal-dir", jdir, "-direct-reads", "maybe", srcPath, dstPath), 2, "-direct-reads")
		want(t, runCmd(t, "sync", "-journal-dir", jdir, srcPath), 2, "SRC and DST")
		want(t, runCmd(t, "frobnicate"), 2, "unknown command")
		sameBytes(t, "target", dstPath, dst)
	})
	if js := journals(t, jdir); len(js) != 0 {
		t.Errorf("refused runs left journals: %v", js)
	}
}

// TestJournalRefused: a journal left by a killed run is used only by the
// same run. Another source, a source of another size, a corrupt or a
// truncated journal: each is refused, naming the reason, and the target
// is left exactly as the killed run left it (not even resized); with
// -discard-bad-journal the run starts over and succeeds.
func TestJournalRefused(t *testing.T) {
	rng := newRand(t)
	const size = 16 * miB
	for _, c := range []struct {
		name    string
		spoil   func(t *testing.T, srcPath, journal string) (src []byte) // returns the source it made
		extra   []string
		refused string // "" when the journal is good
	}{
		{"same run resumes", nil, nil, ""},
		{"source grew", func(t *testing.T, srcPath, _ string) []byte {
			src := append(readFile(t, srcPath), randomBytes(rng, miB)...)
			writeFile(t, srcPath, src)
			return src
		}, nil, "source size differs"},
		{"another source, -truncate", func(t *testing.T, srcPath, _ string) []byte {
			other := filepath.Join(filepath.Dir(srcPath), "other.img")
			src := randomBytes(rng, size/2)
			writeFile(t, other, src)
			if err := os.Rename(other, srcPath); err != nil { // another inode at the same path
				t.Fatal(err)
			}
			return src
		}, []string{"-truncate"}, "source identity differs"},
		{"corrupt journal", func(t *testing.T, srcPath, journal string) []byte {
			b := readFile(t, journal)
			b[len(b)/2] ^= 0x20
			writeFile(t, journal, b)
			return nil
		}, nil, "checksum mismatch"},
		{"truncated journal", func(t *testing.T, srcPath, journal string) []byte {
			b := readFile(t, journal)
			writeFile(t, journal, b[:len(b)/2])
			return nil
		}, nil, "does not match its"},
		{"empty journal", func(t *testing.T, srcPath, journal string) []byte {
			writeFile(t, journal, nil)
			return nil
		}, nil, "truncated"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			jdir := filepath.Join(dir, "journal")
			srcPath, dstPath := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
			src, _ := pair(t, rng, srcPath, dstPath, size)
			common := append([]string{"sync", "-journal-dir", jdir, "-journal-bytes", "1M"}, c.extra...)
			journal := killAfterJournal(t, jdir, append(common, "-memory", "256K", "-bwlimit", "4M", srcPath, dstPath)...)
			left := readFile(t, dstPath)
			if c.spoil != nil {
				if s := c.spoil(t, srcPath, journal); s != nil {
					src = s
				}
			}
			o := runCmd(t, append(common, "-json", srcPath, dstPath)...)
			if c.refused == "" {
				r := figures(t, o)
				if !r.Resumed || r.ResumedFrom <= 0 {
					t.Errorf("the rerun did not resume: %s", o)
				}
				sameBytes(t, "after resuming", dstPath, src)
				return
			}
			want(t, o, 2, "journal", "refused", c.refused)
			sameBytes(t, "target after the refusal", dstPath, left)
			if js := journals(t, jdir); len(js) != 1 {
				t.Errorf("the refused journal should be left for inspection; journals: %v", js)
			}
			r := figures(t, runCmd(t, append(common, "-json", "-discard-bad-journal", srcPath, dstPath)...))
			if r.Resumed || r.ResumedFrom != 0 {
				t.Errorf("-discard-bad-journal resumed from %d", r.ResumedFrom)
			}
			sameBytes(t, "after -discard-bad-journal", dstPath, src)
			if js := journals(t, jdir); len(js) != 0 {
				t.Errorf("journals left after a successful run: %v", js)
			}
		})
	}
}

// killAfterJournal starts args, waits until a journal is saved in jdir
// (the run has done some work), kills the run with SIGKILL and returns
// the journal's path.
func killAfterJournal(t *testing.T, jdir string, args ...string) string {
	t.Helper()
	cmd, _, se := command(t, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	// A journal is saved before the first write (its watermark 0, to
	// hand a lease over): wait for one that calls something done.
	for time.Now().Before(deadline) {
		if js := journals(t, jdir); len(js) == 1 {
			if w, ok := watermark(js[0]); ok && w > 0 {
				break
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	if err := cmd.Wait(); err == nil {
		t.Fatalf("deltasync %s ended before it could be killed: slow it down", strings.Join(args, " "))
	}
	noPanic(t, se.String())
	js := journals(t, jdir)
	if len(js) != 1 {
		t.Fatalf("want one journal in %s after killing the run, have %v (stderr %s)", jdir, js, se)
	}
	return js[0]
}

// TestUnalignedSize: a size that is not a multiple of 512 (1000003 bytes)
// is synchronised exactly. A target of the same size, a new one (seed),
// a shorter one (grown) end identical. A longer target keeps its tail by
// default (it then reads as the source followed by its old tail, and
// verify says where they differ); -truncate cuts it to the source's size.
func TestUnalignedSize(t *testing.T) {
	rng := newRand(t)
	const size = 1000003
	dir := t.TempDir()
	jdir := filepath.Join(dir, "journal")
	srcPath := filepath.Join(dir, "src.img")
	src := randomBytes(rng, size)
	writeFile(t, srcPath, src)
	sync := func(t *testing.T, dst []byte, args ...string) (string, result) {
		dstPath := filepath.Join(t.TempDir(), "dst.img")
		if dst != nil {
			writeFile(t, dstPath, dst)
		}
		cmd := "sync"
		if dst == nil {
			cmd = "seed"
		}
		r := figures(t, runCmd(t, append(append([]string{cmd, "-journal-dir", jdir, "-json"}, args...), srcPath, dstPath)...))
		return dstPath, r
	}
	t.Run("same size", func(t *testing.T) {
		dst := bytes.Clone(src)
		copy(dst[size-3:], []byte{^src[size-3], ^src[size-2], ^src[size-1]}) // the partial last sector
		copy(dst[5*bs:], randomBytes(rng, 100))
		p, r := sync(t, dst)
		sameBytes(t, "target", p, src)
		if r.BytesWritten == 0 || r.BytesWritten > bs+(size%bs) {
			t.Errorf("wrote %d bytes for two changed blocks", r.BytesWritten)
		}
		want(t, runCmd(t, "verify", srcPath, p), 0)
	})
	t.Run("seed", func(t *testing.T) {
		p, _ := sync(t, nil)
		sameBytes(t, "seeded target", p, src)
	})
	t.Run("shorter target", func(t *testing.T) {
		p, _ := sync(t, randomBytes(rng, 500000))
		sameBytes(t, "grown target", p, src)
	})
	t.Run("longer target", func(t *testing.T) {
		old := randomBytes(rng, size+99997)
		p, r := sync(t, old)
		sameBytes(t, "target with its tail kept", p, append(bytes.Clone(src), old[size:]...))
		_ = r
		want(t, runCmd(t, "verify", srcPath, p), 1, fmt.Sprintf("first difference at offset %d", size))
		p2 := filepath.Join(t.TempDir(), "dst.img")
		writeFile(t, p2, old)
		want(t, runCmd(t, "sync", "-journal-dir", jdir, "-truncate", srcPath, p2), 0)
		sameBytes(t, "target truncated to the source", p2, src)
	})
}

// TestSourceTruncated: a source cut short while a sync reads it gives a
// clear error (a read past its new end, a memory fault under a mapping,
// or ErrSourceChanged), exit status 2, no panic; the next run does not
// trust what the failed one journaled.
func TestSourceTruncated(t *testing.T) {
	rng := newRand(t)
	for _, mode := range []string{"mmap", "no-mmap"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			jdir := filepath.Join(dir, "journal")
			srcPath, dstPath := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
			pair(t, rng, srcPath, dstPath, 64*miB)
			args := []string{"sync", "-journal-dir", jdir, "-memory", "1M", "-bwlimit", "16M"}
			if mode == "no-mmap" {
				args = append(args, "-no-mmap")
			}
			cmd, so, se := command(t, append(args, srcPath, dstPath)...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond)
			if err := os.Truncate(srcPath, 10*miB); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			o := outcome{args: args, stdout: so.String(), stderr: se.String(), code: cmd.ProcessState.ExitCode()}
			noPanic(t, o.stderr)
			if err == nil || o.code != 2 {
				t.Fatalf("want exit 2, got %v\n%s", err, o)
			}
			msg := strings.ToLower(o.stderr)
			if !strings.Contains(msg, "truncated") && !strings.Contains(msg, "source changed") && !strings.Contains(msg, "ended early") {
				t.Errorf("stderr does not say the source was truncated or changed\n%s", o)
			}
			t.Logf("%s", strings.TrimSpace(o.stderr))
			// The source is now 10 MiB: a journal of the failed run, if
			// it kept one, does not match, and starting over succeeds.
			o = runCmd(t, "sync", "-journal-dir", jdir, "-truncate", srcPath, dstPath)
			if o.code != 0 {
				want(t, o, 2, "journal", "refused")
				figures(t, runCmd(t, "sync", "-journal-dir", jdir, "-json", "-truncate", "-discard-bad-journal", srcPath, dstPath))
			}
			sameBytes(t, "after a run with the truncated source", dstPath, readFile(t, srcPath))
		})
	}
}

// TestVerifyExitCodes: 0 identical, 1 differing (naming the first
// differing offset), 2 on error.
func TestVerifyExitCodes(t *testing.T) {
	rng := newRand(t)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	data := randomBytes(rng, 4*miB)
	writeFile(t, a, data)
	writeFile(t, b, data)
	o := runCmd(t, "verify", a, b)
	want(t, o, 0)
	if !strings.Contains(o.stdout, "identical") {
		t.Errorf("stdout does not say identical\n%s", o)
	}
	var v map[string]any
	o = runCmd(t, "verify", "-json", a, b)
	want(t, o, 0)
	if err := json.Unmarshal([]byte(o.stdout), &v); err != nil || v["identical"] != true {
		t.Errorf("verify -json: %v %v\n%s", v, err, o)
	}

	const at = 3*bs + 1000
	changed := bytes.Clone(data)
	changed[at] ^= 1
	changed[2*miB] ^= 1
	writeFile(t, b, changed)
	want(t, runCmd(t, "verify", a, b), 1, fmt.Sprintf("first difference at offset %d", at/bs*bs))
	o = runCmd(t, "verify", "-json", a, b)
	want(t, o, 1)
	if err := json.Unmarshal([]byte(o.stdout), &v); err != nil || v["identical"] != false || v["first_difference"] != float64(at/bs*bs) {
		t.Errorf("verify -json: %v %v\n%s", v, err, o)
	}
	writeFile(t, b, data[:len(data)-512])
	want(t, runCmd(t, "verify", a, b), 1, fmt.Sprintf("first difference at offset %d", len(data)-512))

	missing := filepath.Join(dir, "missing.img")
	want(t, runCmd(t, "verify", a, missing), 2, missing, "no such file")
	want(t, runCmd(t, "verify", missing, a), 2, missing, "no such file")
	want(t, runCmd(t, "verify", a), 2, "SRC and DST")
}

// TestDemo: the demo runs its four steps.
func TestDemo(t *testing.T) {
	o := runCmd(t, "demo", "-size", "64M", "-dir", t.TempDir())
	want(t, o, 0)
	for _, s := range []string{"1. seed", "2. change", "3. sync", "4. verify", "identical"} {
		if !strings.Contains(o.stdout, s) {
			t.Errorf("the demo does not print %q\n%s", s, o)
		}
	}
}

// loopDevice attaches a loop device (of the given logical sector size,
// 0 for the default) backed by a file holding contents, and detaches it
// at cleanup. It skips the test when that is not possible here.
func loopDevice(t *testing.T, contents []byte, sector int) (dev, backing string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("no losetup")
	}
	backing = filepath.Join(t.TempDir(), "backing.img")
	writeFile(t, backing, contents)
	args := []string{"--find", "--show"}
	if sector != 0 {
		args = append(args, "--sector-size", strconv.Itoa(sector))
	}
	out, err := exec.Command("losetup", append(args, backing)...).CombinedOutput()
	if err != nil {
		t.Skipf("losetup %s: %v: %s", strings.Join(args, " "), err, out)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev, backing
}

// TestLoopDevice syncs files onto loop devices of 512- and 4096-byte
// sectors: the device reads back identical (through the device, and in
// its backing file, so the data was flushed), exactly the changed bytes
// are written, a source that ends inside a sector keeps the rest of that
// sector, a device smaller than the source is refused, and two device
// nodes of one device are one disk.
func TestLoopDevice(t *testing.T) {
	rng := newRand(t)
	for _, sector := range []int{512, 4096} {
		t.Run(strconv.Itoa(sector), func(t *testing.T) {
			const size = 8 * miB
			dir := t.TempDir()
			jdir := filepath.Join(dir, "journal")
			old := randomBytes(rng, size)
			dev, backing := loopDevice(t, old, sector)
			src := bytes.Clone(old)
			change(rng, src, 15, 3)
			srcPath := filepath.Join(dir, "src.img")
			writeFile(t, srcPath, src)

			r := figures(t, runCmd(t, "sync", "-journal-dir", jdir, "-verify", "-json", srcPath, dev))
			if !r.Verified {
				t.Error("not verified")
			}
			if r.BytesWritten != 12*bs || r.BytesZeroed != 3*bs {
				t.Errorf("wrote %d and cleared %d bytes, want %d and %d (the changed blocks)", r.BytesWritten, r.BytesZeroed, 12*bs, 3*bs)
			}
			sameBytes(t, "device", dev, src)
			sameBytes(t, "backing file", backing, src)
			want(t, runCmd(t, "verify", srcPath, dev), 0)

			// A source that ends inside a sector: the rest of the sector,
			// and of the device, keep their bytes.
			const short = 1000003
			src2 := randomBytes(rng, short)
			writeFile(t, srcPath, src2)
			want(t, runCmd(t, "sync", "-journal-dir", jdir, "-verify", srcPath, dev), 0)
			sameBytes(t, "device after a short source", dev, append(bytes.Clone(src2), src[short:]...))
			want(t, runCmd(t, "verify", srcPath, dev), 1, fmt.Sprintf("first difference at offset %d", short))

			// Two device nodes of one device.
			var st unix.Stat_t
			if err := unix.Stat(dev, &st); err != nil {
				t.Fatal(err)
			}
			alias := filepath.Join(dir, "alias")
			if err := unix.Mknod(alias, unix.S_IFBLK|0o600, int(st.Rdev)); err != nil {
				t.Logf("mknod: %v; not checking a second device node", err)
			} else {
				want(t, runCmd(t, "sync", "-journal-dir", jdir, "-allow-live", dev, alias), 2, "same disk")
			}

			// A device smaller than the source.
			small, smallBacking := loopDevice(t, old[:4*miB], sector)
			big := randomBytes(rng, 5*miB)
			writeFile(t, srcPath, big)
			want(t, runCmd(t, "sync", "-journal-dir", jdir, srcPath, small), 2, "smaller than source", "cannot be resized", small)
			sameBytes(t, "smaller device", small, old[:4*miB])
			sameBytes(t, "its backing file", smallBacking, old[:4*miB])
			if js := journals(t, jdir); len(js) != 0 {
				t.Errorf("journals left: %v", js)
			}
		})
	}
}

// TestMountedDevice: a mounted device is refused as a target (and left
// unchanged) and as a source, unless -allow-live accepts a
// crash-inconsistent copy.
func TestMountedDevice(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("no mkfs.ext4")
	}
	rng := newRand(t)
	const size = 32 * miB
	dir := t.TempDir()
	jdir := filepath.Join(dir, "journal")
	dev, _ := loopDevice(t, make([]byte, size), 0)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", dev).CombinedOutput(); err != nil {
		t.Skipf("mkfs.ext4: %v: %s", err, out)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", dev, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
		}
	})
	writeFile(t, filepath.Join(mnt, "hello.txt"), []byte("hello\n"))
	// Let the filesystem write what it has, so that it stays idle.
	if f, err := os.Open(mnt); err == nil {
		unix.Syncfs(int(f.Fd()))
		f.Close()
	}
	before := readFile(t, dev)

	srcPath := filepath.Join(dir, "src.img")
	writeFile(t, srcPath, randomBytes(rng, size))
	want(t, runCmd(t, "sync", "-journal-dir", jdir, srcPath, dev), 2, dev, "mounted", mnt)
	want(t, runCmd(t, "seed", "-journal-dir", jdir, srcPath, dev), 2, dev, "mounted")
	sameBytes(t, "mounted target", dev, before)

	copyPath := filepath.Join(dir, "copy.img")
	want(t, runCmd(t, "seed", "-journal-dir", jdir, dev, copyPath), 2, dev, "mounted", "crash-inconsistent")
	want(t, runCmd(t, "sync", "-journal-dir", jdir, dev, srcPath), 2, dev, "mounted", "crash-inconsistent")
	figures(t, runCmd(t, "seed", "-journal-dir", jdir, "-allow-live", "-json", dev, copyPath))
	sameBytes(t, "copy of the mounted device", copyPath, before)
	if js := journals(t, jdir); len(js) != 0 {
		t.Errorf("journals left: %v", js)
	}
}

// TestSyncDirectReads: every -direct-reads mode makes the target
// identical, writing only the changed blocks.
func TestSyncDirectReads(t *testing.T) {
	rng := newRand(t)
	dir := t.TempDir()
	const size = 8*miB + 512
	src := randomBytes(rng, size)
	srcPath, dstPath := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
	writeFile(t, srcPath, src)
	for _, mode := range []string{"never", "auto", "always"} {
		dst := append([]byte(nil), src...)
		offs := change(rng, dst, 5, 1)
		writeFile(t, dstPath, dst)
		r := figures(t, runCmd(t, "sync", "--json", "-no-journal", "-verify", "-direct-reads", mode, srcPath, dstPath))
		sameBytes(t, mode, dstPath, src)
		if r.BytesWritten+r.BytesZeroed != int64(len(offs)*bs) {
			t.Errorf("%s: wrote %d and zeroed %d bytes for %d changed blocks of %d", mode, r.BytesWritten, r.BytesZeroed, len(offs), bs)
		}
	}
}
