//go:build linux

package main

// The command as people use it: help, versions, flags anywhere, usage
// errors, the --json object of a failure, secrets, signals and resuming.

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deltasync/deltasync/transfer"
)

// TestHelpExitsZero: -h (and --help, and 'help CMD') of every command
// prints its help on stdout and exits 0; seed's and sync's show the
// journal folder they would use and say that sizes are binary.
func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{
		{"-h"}, {"--help"}, {"help"}, {"help", "sync"},
		{"seed", "-h"}, {"sync", "-h"}, {"sync", "--help"}, {"verify", "-h"}, {"snapshots", "-h"},
		{"demo", "-h"}, {"sign", "-h"}, {"diff", "-h"}, {"apply", "-h"},
		{"agent", "-h"}, {"agent", "cert", "-h"}, {"agent", "token", "-h"}, {"version", "-h"},
		{"sync", "a.img", "b.img", "-h"},
	} {
		o := runCmd(t, args...)
		if o.code != 0 || !strings.HasPrefix(o.stdout, "usage:") || !strings.Contains(o.stdout, "deltasync") {
			t.Errorf("want exit 0 and the usage on stdout\n%s", o)
		}
	}
	jdir := filepath.Join(stateHome(t), "deltasync")
	for _, c := range []string{"seed", "sync"} {
		o := runCmd(t, c, "-h")
		for _, s := range []string{"(default " + jdir, "K = 1024", "0: the default"} {
			if !strings.Contains(o.stdout, s) {
				t.Errorf("%s -h does not say %q\n%s", c, s, o)
			}
		}
	}
	if o := runCmd(t, "seed", "-h"); !strings.Contains(o.stdout, "synced instead") {
		t.Errorf("seed -h does not say that a target not empty is synced\n%s", o)
	}
}

// TestVersion: 'deltasync version' prints the module's version and the
// revision the binary was built from.
func TestVersion(t *testing.T) {
	o := runCmd(t, "version")
	if o.code != 0 || !strings.HasPrefix(o.stdout, "deltasync ") || !strings.Contains(o.stdout, "revision") {
		t.Fatalf("want exit 0 and the version\n%s", o)
	}
	if o2 := runCmd(t, "--version"); o2.code != 0 || o2.stdout != o.stdout {
		t.Errorf("--version differs from version\n%s", o2)
	}
	// A binary built with VCS stamps (GOFLAGS may say -buildvcs=false)
	// names the commit.
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("git rev-parse HEAD: %v", err)
	}
	b := filepath.Join(t.TempDir(), "deltasync")
	if out, err := exec.Command("go", "build", "-buildvcs=true", "-o", b, ".").CombinedOutput(); err != nil {
		t.Skipf("go build -buildvcs=true: %v: %s", err, out)
	}
	out, err := exec.Command(b, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := exec.Command("go", "version", "-m", b).Output(); !strings.Contains(string(m), "vcs.revision=") {
		t.Skipf("go build -buildvcs=true stamped no revision here (a git worktree?): %s", out)
	}
	if rev := strings.TrimSpace(string(head)); !strings.Contains(string(out), "revision "+rev) {
		t.Errorf("version of a stamped build: %q, want revision %s", out, rev)
	}
}

// TestFlagsAfterArgs: flags may follow the arguments, values included;
// after "--" everything is an argument, even what looks like a flag.
func TestFlagsAfterArgs(t *testing.T) {
	rng := newRand(t)
	dir := t.TempDir()
	jdir := filepath.Join(dir, "journal")
	srcPath, dstPath := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
	src, _ := pair(t, rng, srcPath, dstPath, 4*miB)
	r := figures(t, runCmd(t, "sync", srcPath, dstPath, "-journal-dir", jdir, "-block-size", "4K", "-json"))
	if r.BytesCompared != 4*miB || r.BytesWritten == 0 {
		t.Errorf("sync SRC DST -json: %+v", r)
	}
	sameBytes(t, "target", dstPath, src)
	want(t, runCmd(t, "verify", srcPath, "-block-size", "8K", dstPath, "-json"), 0)

	// A target whose name starts with '-', after "--".
	odd := filepath.Join(dir, "-odd.img")
	t.Chdir(dir) // restored when the test ends
	r = figures(t, runCmd(t, "seed", "-journal-dir", jdir, "-json", "--", "src.img", "-odd.img"))
	if r.Target != "-odd.img" {
		t.Errorf("seed -- src.img -odd.img: target %q", r.Target)
	}
	sameBytes(t, "target named -odd.img", odd, src)
}

// TestUsageErrorsOneLine: a command line that cannot run prints one line
// naming the problem and the command's help, not the flag list, and
// exits 2.
func TestUsageErrorsOneLine(t *testing.T) {
	dir := t.TempDir()
	jdir := filepath.Join(dir, "journal")
	for _, c := range []struct {
		args []string
		says string
		help string
	}{
		{[]string{"sync", "-journal-dir", jdir, "-nosuch", "a", "b"}, "-nosuch", "deltasync sync -h"},
		{[]string{"sync", "-journal-dir", jdir, "a"}, "SRC and DST", "deltasync sync -h"},
		{[]string{"seed", "-journal-dir", jdir, "-block-size", "12Q", "a", "b"}, "-block-size", "deltasync seed -h"},
		{[]string{"sync", "-journal-dir", jdir, "-fsync", "sometimes", "a", "b"}, "-fsync", "deltasync sync -h"},
		{[]string{"sync", "-journal-dir", jdir, "-concurrency", "-3", "a", "b"}, "-concurrency", "deltasync sync -h"},
		{[]string{"verify", "a"}, "SRC and DST", "deltasync verify -h"},
		{[]string{"sign", "disk.img"}, "-o SIG", "deltasync sign -h"},
		{[]string{"apply", "-o", "x"}, "-o", "deltasync apply -h"},
		{[]string{"agent", "cert", "-hosts", "h"}, "-cert", "deltasync agent cert -h"},
		{[]string{"agent", "token"}, "-disks", "deltasync agent token -h"},
		{[]string{"agent", "-listen", "127.0.0.1:0"}, "-disk", "deltasync agent -h"},
		{[]string{"snapshots"}, "URL", "deltasync snapshots -h"},
		{[]string{"version", "now"}, "no arguments", "deltasync version -h"},
		{[]string{"frobnicate"}, "unknown command", "deltasync -h"},
	} {
		o := runCmd(t, c.args...)
		want(t, o, 2, c.says, "see '"+c.help+"'")
		if n := strings.Count(o.stderr, "\n"); n != 1 || strings.Contains(o.stderr, "  -") {
			t.Errorf("want one line on stderr, have %d\n%s", n, o)
		}
	}
}

// TestSeedOntoDataSaysSynced: a seed onto a target that holds data
// compares it (it is synced), and its summary says so.
func TestSeedOntoDataSaysSynced(t *testing.T) {
	rng := newRand(t)
	dir := t.TempDir()
	jdir := filepath.Join(dir, "journal")
	srcPath, dstPath := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
	src, _ := pair(t, rng, srcPath, dstPath, 4*miB)
	want(t, runCmd(t, "seed", "-journal-dir", jdir, srcPath, dstPath), 0, "not proven empty", "synced")
	sameBytes(t, "target", dstPath, src)
	o := runCmd(t, "seed", "-journal-dir", jdir, srcPath, filepath.Join(dir, "new.img"))
	want(t, o, 0)
	if strings.Contains(o.stderr, "synced") {
		t.Errorf("a seed into a new file says it synced\n%s", o)
	}
}

// failed parses the --json object of a failed run.
func failed(t *testing.T, o outcome, code int) result {
	t.Helper()
	if o.code != code {
		t.Fatalf("exit %d, want %d\n%s", o.code, code, o)
	}
	var r result
	if strings.Count(o.stdout, "\n") != 1 {
		t.Fatalf("want one JSON object on stdout\n%s", o)
	}
	if err := json.Unmarshal([]byte(o.stdout), &r); err != nil || r.Error == nil {
		t.Fatalf("--json of a failure: %v, error %v\n%s", err, r.Error, o)
	}
	return r
}

// TestJSONError: a failed run with --json prints one object with the
// error's kind, side, offset and message, and the figures so far; no
// output ever holds a secret (a SAS signature, an account key), and
// messages name flags, not the library's Go fields.
func TestJSONError(t *testing.T) {
	rng := newRand(t)
	dir := t.TempDir()
	jdir := filepath.Join(dir, "journal")
	srcPath, dstPath := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
	pair(t, rng, srcPath, dstPath, 16*miB)
	missing := filepath.Join(dir, "missing.img")

	r := failed(t, runCmd(t, "sync", "-journal-dir", jdir, "-json", missing, dstPath), 2)
	if e := r.Error; e.Kind != "not-found" || e.Side != "source" || !strings.Contains(e.Message, missing) {
		t.Errorf("missing source: %+v", e)
	}
	r = failed(t, runCmd(t, "sync", "-journal-dir", jdir, "-json", srcPath, missing), 2)
	if e := r.Error; e.Kind != "not-found" || e.Side != "target" || !strings.Contains(e.Message, "deltasync seed") {
		t.Errorf("missing target: %+v", e)
	}
	r = failed(t, runCmd(t, "sync", "-journal-dir", jdir, "-json", "-nosuch", srcPath, dstPath), 2)
	if e := r.Error; e.Kind != "usage" || !strings.Contains(e.Message, "-nosuch") {
		t.Errorf("usage error: %+v", e)
	}

	// A refused journal: named with its file and the ways out; the Go
	// field TruncateExcess is the flag -truncate.
	journal := killAfterJournal(t, jdir, "sync", "-journal-dir", jdir, "-journal-bytes", "1M", "-memory", "256K", "-bwlimit", "4M", srcPath, dstPath)
	o := runCmd(t, "sync", "-journal-dir", jdir, "-journal-bytes", "1M", "-truncate", "-json", srcPath, dstPath)
	r = failed(t, o, 2)
	if e := r.Error; e.Kind != "journal" || e.Side != "target" {
		t.Errorf("refused journal: %+v", e)
	}
	for _, s := range []string{journal, "-truncate differs", "-discard-bad-journal", "remove " + journal} {
		if !strings.Contains(o.stderr, s) || !strings.Contains(r.Error.Message, s) {
			t.Errorf("the refusal does not say %q\n%s", s, o)
		}
	}
	if strings.Contains(o.stdout+o.stderr, "TruncateExcess") {
		t.Errorf("a Go field reaches the user\n%s", o)
	}
	os.Remove(journal)

	// Secrets: a SAS on a URL that cannot be reached, an account key in
	// the environment.
	const sig, key = "c2VjcmV0c2lnbmF0dXJlCg%3D%3D", "a2V5a2V5a2V5a2V5a2V5a2V5a2V5"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there now: refused at once
	u := "http://127.0.0.1:" + strconv.Itoa(port) + "/devstoreaccount1/disks/src.vhd?sv=2022-11-02&sr=b&sp=r&se=2099-01-01T00:00:00Z&sig=" + sig
	cmd, so, se := command(t, "sync", "-journal-dir", jdir, "-json", u, dstPath)
	cmd.Env = append(cmd.Env, "AZURE_STORAGE_KEY="+key, "AZURE_STORAGE_ACCOUNT=devstoreaccount1")
	cmd.Run()
	o = outcome{args: cmd.Args, stdout: so.String(), stderr: se.String(), code: cmd.ProcessState.ExitCode()}
	r = failed(t, o, 2)
	if r.Error.Side != "source" {
		t.Errorf("unreachable source: %+v", r.Error)
	}
	for _, s := range []string{sig, "c2VjcmV0c2lnbmF0dXJl", key} {
		if strings.Contains(o.stdout+o.stderr, s) {
			t.Errorf("a secret is printed\n%s", o)
		}
	}
}

// signalRun starts args, waits until the run saved a journal in jdir
// past the range's start (it is copying), sends sig and waits for the end.
func signalRun(t *testing.T, jdir string, sig syscall.Signal, args ...string) outcome {
	t.Helper()
	cmd, so, se := command(t, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	copying := func() bool {
		for _, j := range journals(t, jdir) {
			if w, ok := watermark(j); ok && w > 0 {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(20 * time.Second)
	for !copying() && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	cmd.Process.Signal(sig)
	timer := time.AfterFunc(time.Minute, func() { cmd.Process.Kill() })
	cmd.Wait()
	timer.Stop()
	o := outcome{args: args, stdout: so.String(), stderr: se.String(), code: cmd.ProcessState.ExitCode()}
	noPanic(t, o.stderr)
	return o
}

// TestInterruptExitCodes: SIGINT and SIGTERM stop a seed or a sync with
// exit status 130 and 143 and a message saying how far it went and how
// to resume (with --json, the object says "interrupted" and holds the
// figures so far); the rerun says where it resumes and from which
// journal, before it copies, and finishes.
func TestInterruptExitCodes(t *testing.T) {
	rng := newRand(t)
	for _, c := range []struct {
		verb string
		sig  syscall.Signal
		code int
	}{{"sync", syscall.SIGINT, 130}, {"seed", syscall.SIGTERM, 143}} {
		t.Run(c.verb+" "+c.sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			jdir := filepath.Join(dir, "journal")
			srcPath, dstPath := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
			src, _ := pair(t, rng, srcPath, dstPath, 32*miB)
			if c.verb == "seed" {
				os.Remove(dstPath)
			}
			common := []string{c.verb, "-journal-dir", jdir, "-journal-bytes", "1M"}
			o := signalRun(t, jdir, c.sig, append(common, "-json", "-memory", "256K", "-bwlimit", "8M", srcPath, dstPath)...)
			r := failed(t, o, c.code)
			want(t, o, c.code, "interrupted at ", " of 32.0 MiB", "rerun the same command to resume")
			if r.Error.Kind != "interrupted" || r.BytesCompared == 0 || r.BytesWritten == 0 {
				t.Errorf("the JSON of the interrupted run: %+v, error %+v", r, r.Error)
			}
			js := journals(t, jdir)
			if len(js) != 1 {
				t.Fatalf("journals after the interruption: %v", js)
			}
			o = runCmd(t, append(common, "-json", srcPath, dstPath)...)
			rr := figures(t, o)
			want(t, o, 0, "resuming at ", "(journal "+js[0]+")")
			if !rr.Resumed || rr.ResumedFrom == 0 {
				t.Errorf("the rerun did not resume: %+v", rr)
			}
			if i, j := strings.Index(o.stderr, "resuming at"), strings.Index(o.stderr, c.verb+": compared"); i < 0 || j < i {
				t.Errorf("the resume note does not come before the summary\n%s", o)
			}
			sameBytes(t, "after the rerun", dstPath, src)
		})
	}
	t.Run("verify SIGTERM", func(t *testing.T) {
		// A page blob source whose service never answers: the verify
		// waits on it, and is stopped.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
			}
		}()
		dir := t.TempDir()
		p := filepath.Join(dir, "a.img")
		writeFile(t, p, make([]byte, miB))
		cmd, so, se := command(t, "verify", "http://"+ln.Addr().String()+"/devstoreaccount1/c/b.img", p)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		cmd.Process.Signal(syscall.SIGTERM)
		timer := time.AfterFunc(time.Minute, func() { cmd.Process.Kill() })
		cmd.Wait()
		timer.Stop()
		o := outcome{args: cmd.Args, stdout: so.String(), stderr: se.String(), code: cmd.ProcessState.ExitCode()}
		want(t, o, 143, "interrupted")
	})
}

// TestNoGoFieldNames: the messages of the packages name their options by
// Go field; the command says the flag that sets them.
func TestNoGoFieldNames(t *testing.T) {
	var rf runFlags
	flags = newFlagSet("sync", &rf)
	defer func() { flags = nil }()
	for in, out := range map[string]string{
		"read-write at /mnt; pass AllowLive for a crash-inconsistent copy":        "read-write at /mnt; pass -allow-live for a crash-inconsistent copy",
		"fcntl lock: x; pass AllowLive (-allow-live) to read it anyway":           "fcntl lock: x; pass -allow-live to read it anyway",
		"TruncateExcess differs (journal false, this run true)":                   "-truncate differs (journal false, this run true)",
		"set Options.DiscardBadJournal to start over":                             "set -discard-bad-journal to start over",
		"keep its tail with KeepExcess":                                           "keep its tail with KeepExcess", // not a flag of sync
		"GET http://h/c/b?sv=1&sig=abc%2Fdef&se=2 failed; AccountKey=xyz;Other=1": "GET http://h/c/b?sv=1&sig=REDACTED&se=2 failed; AccountKey=REDACTED;Other=1",
	} {
		if got := message(errString(in)); got != out {
			t.Errorf("message(%q) = %q, want %q", in, got, out)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// TestProgressFrames: the bar fits the terminal's width, shows the write
// rate against the limit when -bwlimit sets the pace, continues from a
// resumed run's absolute position, shows the verify phase, and its last
// frame is the finished run's.
func TestProgressFrames(t *testing.T) {
	var buf bytes.Buffer
	width := 80
	bar := &progressBar{w: &buf, width: func() int { return width }, limit: 4 << 20, began: time.Now().Add(-2 * time.Second)}
	rw := &runWatch{w: &buf, lo: 0, size: 100 * miB, journal: func(k string) string { return "/j/" + k + ".journal" }, bar: bar}
	last := func() string {
		s := buf.String()
		i := strings.LastIndex(s, "\r")
		return strings.TrimSuffix(s[i+1:], "\x1b[K")
	}
	for _, w := range []int{20, 40, 60, 80, 120, 200} {
		width = w
		rw.Update(copySnap(50*miB, 25*miB, 50*miB))
		if l := last(); len(l) > w-1 || len(l) == 0 {
			t.Errorf("width %d: frame of %d columns: %q", w, len(l), l)
		}
	}
	width = 200
	buf.Reset()
	rw.resumed = false
	rw.Update(copySnap(50*miB, 0, 50*miB))
	if s := buf.String(); !strings.Contains(s, "resuming at 50.0 MiB of 100.0 MiB (journal /j/k1.journal)\n") {
		t.Errorf("no resume note: %q", s)
	}
	rw.Update(copySnap(50*miB, 25*miB, 50*miB))
	if l := last(); !strings.Contains(l, " 75.0%") || !strings.Contains(l, "75.0 MiB of 100.0 MiB") || !strings.Contains(l, "limit 4.0 MiB/s") {
		t.Errorf("resumed frame at 75%%, with the write rate against the limit: %q", l)
	}
	rw.Update(transfer.ProgressReport{Phase: transfer.PhaseVerify, Total: 100 * miB, Compared: 10 * miB, Elapsed: time.Second})
	if l := last(); !strings.HasPrefix(l, "verify ") || !strings.Contains(l, " 10.0%") {
		t.Errorf("verify frame: %q", l)
	}
	rw.Update(transfer.ProgressReport{Phase: transfer.PhaseDone, Total: 100 * miB, Compared: 100 * miB, Written: 7 * miB, Rate: 1e15})
	rw.finish(transfer.Stats{}, nil)
	if s := buf.String(); !strings.HasSuffix(s, "\n") || !strings.Contains(last(), "100.0%") || !strings.Contains(last(), "written 7.0 MiB") {
		t.Errorf("last frame: %q", last())
	}
}

func copySnap(resumedFrom, compared, total int64) transfer.ProgressReport {
	return transfer.ProgressReport{Phase: transfer.PhaseCopy, ResumedFrom: resumedFrom, Journal: "k1", Compared: compared, Total: total,
		Written: compared / 2, Elapsed: time.Second, Rate: float64(compared), ETA: time.Second}
}
