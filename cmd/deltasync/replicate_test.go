package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// logLines parses the JSON log lines of a replicate run.
func logLines(t *testing.T, stderr string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(stderr))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("a log line that is not JSON: %q", sc.Text())
		}
		out = append(out, m)
	}
	return out
}

// cycleLines are the log lines of ended cycles.
func cycleLines(t *testing.T, stderr string) []map[string]any {
	var out []map[string]any
	for _, m := range logLines(t, stderr) {
		if _, ok := m["cycle"]; ok {
			out = append(out, m)
		}
	}
	return out
}

func statusOf(t *testing.T, state, name string) statusView {
	t.Helper()
	o := runCmd(t, "status", "-state-dir", state, "-json", name)
	want(t, o, 0)
	var vs []statusView
	if err := json.Unmarshal([]byte(o.stdout), &vs); err != nil || len(vs) != 1 {
		t.Fatalf("status -json: %v\n%s", err, o)
	}
	return vs[0]
}

// TestReplicateOnce runs replication cycles one at a time as cron would,
// with a careless user writing the target between them, and reads the
// result back with cmp-like checks of its own.
func TestReplicateOnce(t *testing.T) {
	rng := newRand(t)
	dir := t.TempDir()
	srcPath, dstPath, state := filepath.Join(dir, "vm1.img"), filepath.Join(dir, "replica.img"), filepath.Join(dir, "state")
	src := randomBytes(rng, 8*miB)
	writeFile(t, srcPath, src)
	args := []string{"replicate", "-once", "-state-dir", state, "-keep-last", "3", "-keep-hourly", "0", "-log-format", "json", srcPath, dstPath}

	// 1. A missing target is seeded.
	o := runCmd(t, args...)
	want(t, o, 0)
	cl := cycleLines(t, o.stderr)
	if len(cl) != 1 || cl[0]["msg"] != "cycle done" || cl[0]["written"].(float64) != float64(len(src)) {
		t.Fatalf("first cycle: %v\n%s", cl, o)
	}
	sameBytes(t, "the target after the first cycle", dstPath, src)
	st := statusOf(t, state, "replica")
	if st.Cycles != 1 || len(st.Points) != 1 || st.Running || st.State != "stopped" || st.LagSeconds < 0 {
		t.Fatalf("status after one cycle: %+v", st)
	}

	// 2. Nothing changed: no new point, the newest is current.
	o = runCmd(t, args...)
	want(t, o, 0)
	cl = cycleLines(t, o.stderr)
	if len(cl) != 1 || cl[0]["point_kept"] != true || cl[0]["written"].(float64) != 0 {
		t.Fatalf("an unchanged cycle: %v\n%s", cl, o)
	}
	if st := statusOf(t, state, "replica"); len(st.Points) != 1 || !st.LastCycle.PointKept {
		t.Fatalf("status after an unchanged cycle: %+v", st.statusFile)
	}

	// 3. A careless user writes the target: the next cycle repairs it
	// and cuts a point (the newest no longer holds the target).
	f, err := os.OpenFile(dstPath, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("scribble"), 3*miB+17)
	f.Close()
	o = runCmd(t, args...)
	want(t, o, 0)
	cl = cycleLines(t, o.stderr)
	if len(cl) != 1 || cl[0]["point_kept"] != false || cl[0]["written"].(float64) == 0 {
		t.Fatalf("a cycle after the target was written: %v\n%s", cl, o)
	}
	sameBytes(t, "the target after it was written and replicated again", dstPath, src)

	// 4. The source changes; retention keeps the 3 newest.
	for i := range 3 {
		copy(src[int64(i)*miB:], randomBytes(rng, 4096))
		writeFile(t, srcPath, src)
		want(t, runCmd(t, args...), 0)
	}
	sameBytes(t, "the target", dstPath, src)
	o = runCmd(t, "points", "list", "-json", dstPath)
	want(t, o, 0)
	var pts []struct {
		ID   string `json:"id"`
		Size int64  `json:"size"`
	}
	if err := json.Unmarshal([]byte(o.stdout), &pts); err != nil || len(pts) != 3 {
		t.Fatalf("points list: %v, %d points, want 3\n%s", err, len(pts), o)
	}
	if st := statusOf(t, state, "replica"); len(st.Points) != 3 || st.Points[2].ID != pts[2].ID {
		t.Fatalf("status points %v, listed %v", st.Points, pts)
	}
	// The newest point is the source now; restoring it is a test
	// failover that leaves the target alone.
	out := filepath.Join(dir, "restored.img")
	o = runCmd(t, "points", "restore", "-state-dir", state, dstPath, pts[2].ID, out)
	want(t, o, 0, "verified it against the point and against its signature")
	sameBytes(t, "the restored newest point", out, src)
	// Each point is proved against its signature without the source; a
	// point changed after the fact is caught.
	for _, p := range pts {
		want(t, runCmd(t, "points", "verify", "-state-dir", state, dstPath, p.ID), 0, "holds exactly what was replicated")
	}
	pf, err := os.OpenFile(filepath.Join(dir, "replica.img@"+pts[1].ID+".point"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	pf.WriteAt([]byte("rot"), 5*miB)
	pf.Close()
	want(t, runCmd(t, "points", "verify", "-state-dir", state, dstPath, pts[1].ID), 1, "not what was replicated")
	// Deleting a point.
	want(t, runCmd(t, "points", "delete", dstPath, pts[0].ID), 0)
	o = runCmd(t, "points", "list", dstPath)
	if strings.Contains(o.stdout, pts[0].ID) || !strings.Contains(o.stdout, pts[1].ID) {
		t.Fatalf("after deleting %s:\n%s", pts[0].ID, o)
	}
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitFor polls f every 50 ms for up to d.
func waitFor(t *testing.T, d time.Duration, what string, f func() bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if f() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func httpGet(url string) (int, string) {
	r, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r.StatusCode, string(b)
}

// TestReplicateService runs replication as a service: cycles every
// second, metrics and health on loopback, a second replicator refused,
// and SIGTERM in the middle of a slow cycle: exit 0, no point cut by it,
// and the next start continues.
func TestReplicateService(t *testing.T) {
	rng := newRand(t)
	dir := t.TempDir()
	srcPath, dstPath, state := filepath.Join(dir, "vm1.img"), filepath.Join(dir, "replica.img"), filepath.Join(dir, "state")
	src := randomBytes(rng, 16*miB) // over the bandwidth limiter's burst (one write size)
	writeFile(t, srcPath, src)
	addr := freePort(t)
	cmd, _, se := command(t, "replicate", "-interval", "1s", "-state-dir", state, "-keep-hourly", "0", "-log-format", "json",
		"-metrics", addr, srcPath, dstPath)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
	}()
	waitFor(t, 20*time.Second, "two cycles", func() bool {
		v, err := readStatus(state, "replica")
		return err == nil && v.Cycles >= 2
	})
	if v, _ := readStatus(state, "replica"); !v.Running || v.State != "running" || v.Next.IsZero() {
		t.Fatalf("status while running: %+v", v)
	}
	code, body := httpGet("http://" + addr + "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	for _, m := range []string{`deltasync_replication_cycles_total{disk="replica",result="success"}`, `deltasync_replication_lag_seconds{disk="replica"}`,
		`deltasync_replication_bytes_total{disk="replica",kind="written"} 1.6777216e+07`, `deltasync_replication_points{disk="replica"} 1`} {
		if !strings.Contains(body, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	if code, body := httpGet("http://" + addr + "/readyz"); code != 200 {
		t.Errorf("/readyz: %d %s", code, body)
	}
	if code, _ := httpGet("http://" + addr + "/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	// A second replicator of the same replication is refused.
	o := runCmd(t, "replicate", "-once", "-state-dir", state, srcPath, dstPath)
	want(t, o, 2, "another deltasync replicate")

	// SIGTERM while running: exit 0, state saved.
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("stopped by SIGTERM: %v\n%s", err, se)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no exit 10 s after SIGTERM\n%s", se)
	}
	sameBytes(t, "the target", dstPath, src)
	v, err := readStatus(state, "replica")
	if err != nil || v.Running || v.State != "stopped" || v.Note != "" {
		t.Fatalf("status after SIGTERM: %+v %v", v, err)
	}
	if !strings.Contains(se.String(), "stopped by a signal") {
		t.Errorf("the log does not say the service was stopped by a signal:\n%s", se)
	}

	// A slow cycle stopped by SIGTERM cuts no point; the next start
	// finishes the work.
	before := len(v.Points)
	for i := 0; i < len(src); i += 64 * kiB {
		src[i] ^= 0xff
	}
	writeFile(t, srcPath, src)
	cmd2, _, se2 := command(t, "replicate", "-once", "-bwlimit", "1M", "-state-dir", state, "-keep-hourly", "0", "-log-format", "json", srcPath, dstPath)
	if err := cmd2.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the slow cycle to write", func() bool {
		b, _ := os.ReadFile(dstPath)
		return len(b) > 0 && b[0] == src[0]
	})
	cmd2.Process.Signal(syscall.SIGTERM)
	err = cmd2.Wait()
	if ee, ok := err.(interface{ ExitCode() int }); !ok || ee.ExitCode() != 143 {
		t.Fatalf("-once stopped by SIGTERM: %v, want exit 143\n%s", err, se2)
	}
	if v, _ := readStatus(state, "replica"); len(v.Points) != before {
		t.Fatalf("the stopped cycle cut a point: %d points, were %d", len(v.Points), before)
	}
	o = runCmd(t, "replicate", "-once", "-state-dir", state, "-keep-hourly", "0", "-log-format", "json", srcPath, dstPath)
	want(t, o, 0)
	sameBytes(t, "the target after the stopped cycle was run again", dstPath, src)
}

// TestReprotect fails back to an original that exists (its prior state
// is kept as a point, then only the differences are sent) and to one
// that is missing (seeded), then hands over to replication.
func TestReprotect(t *testing.T) {
	rng := newRand(t)
	dir := t.TempDir()
	primary, secondary, state := filepath.Join(dir, "primary.img"), filepath.Join(dir, "secondary.img"), filepath.Join(dir, "state")
	orig := randomBytes(rng, 8*miB)
	writeFile(t, primary, orig)
	failed := append([]byte(nil), orig...)
	change(rng, failed, 6, 1) // the failed-over VM wrote 6 blocks, one of them zeros
	writeFile(t, secondary, failed)
	o := runCmd(t, "reprotect", "-json", "-state-dir", state, "-keep-hourly", "0", "-log-format", "json", secondary, primary)
	want(t, o, 0, "keep prior state", "differences")
	sameBytes(t, "the original after reprotect", primary, failed)
	var r struct {
		Phases []struct {
			Name string `json:"name"`
			Sent int64  `json:"sent"`
		} `json:"phases"`
		Seeded     bool   `json:"seeded"`
		PriorState string `json:"prior_state"`
	}
	if err := json.Unmarshal([]byte(o.stdout), &r); err != nil || r.Seeded || r.PriorState == "" {
		t.Fatalf("reprotect -json: %v %+v\n%s", err, r, o)
	}
	var sent int64
	for _, p := range r.Phases {
		sent += p.Sent
	}
	if sent != 6*bs {
		t.Errorf("reprotect sent %d bytes, want the 6 changed blocks (%d)", sent, 6*bs)
	}
	// The prior state is a point, restorable: the original as it was.
	out := filepath.Join(dir, "prior.img")
	want(t, runCmd(t, "points", "restore", primary, r.PriorState, out), 0)
	sameBytes(t, "the original's prior state", out, orig)

	// A missing original is seeded, then replication goes on for a cycle.
	fresh := filepath.Join(dir, "fresh.img")
	o = runCmd(t, "reprotect", "-then", "replicate", "-once", "-state-dir", state, "-keep-hourly", "0", "-log-format", "json", secondary, fresh)
	want(t, o, 0, "seed", "cycle done")
	sameBytes(t, "the seeded original", fresh, failed)
}

// TestReplicateGroup replicates two disks frozen together, from a YAML
// file with pause and resume commands; an unknown key is refused with
// its line.
func TestReplicateGroup(t *testing.T) {
	rng := newRand(t)
	dir := t.TempDir()
	var srcs [][]byte
	for _, n := range []string{"os", "data"} {
		b := randomBytes(rng, 4*miB)
		writeFile(t, filepath.Join(dir, n+".img"), b)
		srcs = append(srcs, b)
	}
	hooks := filepath.Join(dir, "hooks.log")
	cfg := fmt.Sprintf(`# two disks of one VM
name: vm1
interval: 1m
state-dir: %[1]s/state
log-format: json
retention:
  keep-last: 2
  keep-hourly: 0
pause: [sh, -c, "echo pause >> %[2]s"]
resume: [sh, -c, "echo resume >> %[2]s"]
disks:
  - name: os
    source: %[1]s/os.img
    target: %[1]s/os-replica.img
  - name: data
    source: %[1]s/data.img
    target: %[1]s/data-replica.img
    points-dir: %[1]s/points
`, dir, hooks)
	path := filepath.Join(dir, "vm1.yaml")
	os.WriteFile(path, []byte(cfg), 0o600)
	os.Mkdir(filepath.Join(dir, "points"), 0o700)
	for range 2 {
		o := runCmd(t, "replicate", "-once", "-config", path)
		want(t, o, 0, "group cycle done")
	}
	sameBytes(t, "the os replica", filepath.Join(dir, "os-replica.img"), srcs[0])
	sameBytes(t, "the data replica", filepath.Join(dir, "data-replica.img"), srcs[1])
	if b, _ := os.ReadFile(hooks); string(b) != "pause\nresume\npause\nresume\n" {
		t.Fatalf("hooks ran as %q", b)
	}
	st := statusOf(t, filepath.Join(dir, "state"), "vm1")
	if len(st.Members) != 2 || len(st.Points) != 2 || st.LagSeconds < 0 {
		t.Fatalf("group status: %+v", st.statusFile)
	}
	if ps, _ := filepath.Glob(filepath.Join(dir, "points", "data-replica.img@*.point")); len(ps) != 2 {
		t.Fatalf("points of the data disk in points-dir: %v", ps)
	}
	// As a service (Group.Run): the command line's -interval wins over
	// the file's; SIGTERM stops it cleanly.
	copy(srcs[1][miB:], randomBytes(rng, 4096))
	writeFile(t, filepath.Join(dir, "data.img"), srcs[1])
	cmd, _, se := command(t, "replicate", "-config", path, "-interval", "1s")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "two more group cycles", func() bool {
		v, err := readStatus(filepath.Join(dir, "state"), "vm1")
		return err == nil && v.Cycles >= 4
	})
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the group service stopped by SIGTERM: %v\n%s", err, se)
	}
	sameBytes(t, "the data replica after the service", filepath.Join(dir, "data-replica.img"), srcs[1])
	if v, _ := readStatus(filepath.Join(dir, "state"), "vm1"); v.State != "stopped" || len(v.Points) != 2 {
		t.Fatalf("group status after SIGTERM: %+v", v.statusFile)
	}
	o := runCmd(t, "points", "groups", "-json", "-state-dir", filepath.Join(dir, "state"), "vm1")
	want(t, o, 0)
	var ms []struct {
		ID    string `json:"id"`
		Disks []struct {
			Name, Point string
		} `json:"disks"`
	}
	if err := json.Unmarshal([]byte(o.stdout), &ms); err != nil || len(ms) != 2 || len(ms[1].Disks) != 2 || ms[1].Disks[1].Name != "data" {
		t.Fatalf("points groups: %v %+v\n%s", err, ms, o)
	}
	if _, err := os.Stat(filepath.Join(dir, "points", "data-replica.img@"+ms[1].Disks[1].Point+".point")); err != nil {
		t.Fatalf("the group point names a member point that is not there: %v", err)
	}
	// Each member's point is proved against its signature.
	want(t, runCmd(t, "points", "verify", "-state-dir", filepath.Join(dir, "state"), "-name", "vm1", "-member", "data",
		"-points-dir", filepath.Join(dir, "points"), filepath.Join(dir, "data-replica.img"), ms[1].Disks[1].Point), 0, "holds exactly what was replicated")
	// Per-disk flags belong in the file: refused, not silently ignored.
	want(t, runCmd(t, "replicate", "-once", "-config", path, "-points-dir", dir), 2, "set it in the file")
	os.WriteFile(path, []byte(strings.Replace(cfg, "keep-last: 2", "keep-lats: 2", 1)), 0o600)
	o = runCmd(t, "replicate", "-once", "-config", path)
	want(t, o, 2, "line 7: keep-lats is not a key here")
}

// TestReplicateMetrics scrapes /metrics after one cycle of a service,
// parses it with client_golang's own text parser, and checks the values
// against the cycle's JSON log line and the status file.
func TestReplicateMetrics(t *testing.T) {
	rng := newRand(t)
	dir := t.TempDir()
	srcPath, dstPath, state := filepath.Join(dir, "vm1.img"), filepath.Join(dir, "replica.img"), filepath.Join(dir, "state")
	src := randomBytes(rng, 4*miB)
	copy(src[miB:2*miB], make([]byte, miB)) // a zero MiB: not written to a new file
	writeFile(t, srcPath, src)
	addr := freePort(t)
	logPath := filepath.Join(dir, "log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd, _, _ := command(t, "replicate", "-interval", "1h", "-state-dir", state, "-log-format", "json", "-metrics", addr, srcPath, dstPath)
	cmd.Stderr = logf
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitFor(t, 20*time.Second, "the first cycle", func() bool {
		v, err := readStatus(state, "replica")
		return err == nil && v.Cycles == 1
	})
	code, body := httpGet("http://" + addr + "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	value := func(name string, labels ...string) float64 {
		t.Helper()
		mf, ok := mfs[name]
		if !ok {
			t.Fatalf("no metric %s", name)
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if got[labels[i]] != labels[i+1] {
					continue next
				}
			}
			if got["disk"] != "replica" {
				t.Fatalf("%s has disk=%q", name, got["disk"])
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
		t.Fatalf("no %s%v", name, labels)
		return 0
	}
	b, _ := os.ReadFile(logPath)
	cl := cycleLines(t, string(b))
	if len(cl) != 1 {
		t.Fatalf("cycle log lines: %v", cl)
	}
	c := cl[0]
	for _, k := range []string{"cycle", "view", "full", "reason", "compared", "written", "zeroed", "seconds", "point", "point_kept", "deleted", "disk", "level", "time"} {
		if _, ok := c[k]; !ok {
			t.Errorf("the cycle log line has no %q: %v", k, c)
		}
	}
	for _, x := range []struct {
		got, want float64
		what      string
	}{
		{value("deltasync_replication_cycles_total", "result", "success"), 1, "successful cycles"},
		{value("deltasync_replication_cycles_total", "result", "failure"), 0, "failed cycles"},
		{value("deltasync_replication_bytes_total", "kind", "written"), c["written"].(float64), "bytes written"},
		{value("deltasync_replication_bytes_total", "kind", "compared"), c["compared"].(float64), "bytes compared"},
		{value("deltasync_replication_bytes_total", "kind", "zeroed"), c["zeroed"].(float64), "bytes zeroed"},
		{value("deltasync_replication_points"), 1, "points"},
		{value("deltasync_replication_cycle_duration_seconds"), 1, "cycle durations observed"},
		{value("deltasync_replication_scrubs_total"), 1, "scrubs (the first cycle compares everything)"},
		{value("deltasync_replication_cycle_running"), 0, "cycles running"},
	} {
		if x.got != x.want {
			t.Errorf("%s: %v, want %v", x.what, x.got, x.want)
		}
	}
	if w := c["written"].(float64); w != 3*miB {
		t.Errorf("written %v, want the 3 MiB of data (the zero MiB is not written to a new file)", w)
	}
	lag := value("deltasync_replication_lag_seconds")
	if lag <= 0 || lag > time.Since(start).Seconds() {
		t.Errorf("lag %v s, want within (0, %v]", lag, time.Since(start).Seconds())
	}
	if ls := value("deltasync_replication_last_success_timestamp_seconds"); ls < float64(start.Unix()) || ls > float64(time.Now().Unix()+1) {
		t.Errorf("last success at %v, the run started at %v", ls, start.Unix())
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
}

// TestReplicateKill9: the replicate service is killed with SIGKILL at
// random moments ten times while the source changes between runs (writes
// of 4 KiB to 1 MiB, some of zeros over data); each restart goes on, the
// last run leaves the target identical to the source, and every point
// kept holds one of the source's states exactly (sha256), never a mix.
func TestReplicateKill9(t *testing.T) {
	rng := newRand(t)
	dir := t.TempDir()
	srcPath, dstPath, state := filepath.Join(dir, "vm1.img"), filepath.Join(dir, "replica.img"), filepath.Join(dir, "state")
	const size = 16 * miB
	src := randomBytes(rng, size)
	writeFile(t, srcPath, src)
	states := map[[32]byte]int{sha256.Sum256(src): 0}
	args := []string{"replicate", "-interval", "1s", "-bwlimit", "8M", "-state-dir", state, "-keep-last", "50", "-keep-hourly", "0", "-log-format", "json", srcPath, dstPath}
	for run := 1; run <= 10; run++ {
		cmd, _, se := command(t, args...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(100+rng.IntN(1400)) * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()
		noPanic(t, se.String())
		// The source changes while nothing runs.
		for range 1 + rng.IntN(6) {
			n := 4*kiB + rng.IntN(miB-4*kiB)
			off := rng.IntN(size - n)
			if rng.IntN(4) == 0 {
				clear(src[off : off+n])
			} else {
				copy(src[off:], randomBytes(rng, n))
			}
		}
		writeFile(t, srcPath, src)
		states[sha256.Sum256(src)] = run
	}
	o := runCmd(t, "replicate", "-once", "-state-dir", state, "-keep-last", "50", "-keep-hourly", "0", "-log-format", "json", srcPath, dstPath)
	want(t, o, 0, "cycle done")
	sameBytes(t, "the target after ten kills and a last run", dstPath, src)
	files, _ := filepath.Glob(filepath.Join(dir, "replica.img@*.point"))
	if len(files) == 0 {
		t.Fatal("no points")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := states[sha256.Sum256(b)]; !ok {
			t.Errorf("point %s holds none of the source's states", filepath.Base(f))
		}
	}
	t.Logf("%d points, all of them states of the source", len(files))
}

// TestReplicateDirtyFeed: a writer that appends "OFFSET LENGTH" to a feed
// before each write gets hinted cycles that compare only what it wrote; a
// bad line, and a replaced feed, make the next cycle compare everything,
// saying why.
func TestReplicateDirtyFeed(t *testing.T) {
	rng := newRand(t)
	dir := t.TempDir()
	srcPath, dstPath, state, feed := filepath.Join(dir, "vm1.img"), filepath.Join(dir, "replica.img"), filepath.Join(dir, "state"), filepath.Join(dir, "vm1.feed")
	src := randomBytes(rng, 8*miB)
	writeFile(t, srcPath, src)
	args := []string{"replicate", "-once", "-dirty-feed", feed, "-state-dir", state, "-keep-hourly", "0", "-log-format", "json", srcPath, dstPath}
	cycle := func() map[string]any {
		t.Helper()
		o := runCmd(t, args...)
		want(t, o, 0)
		cl := cycleLines(t, o.stderr)
		if len(cl) != 1 || cl[0]["msg"] != "cycle done" {
			t.Fatalf("cycle: %v\n%s", cl, o)
		}
		sameBytes(t, "the target", dstPath, src)
		return cl[0]
	}
	if c := cycle(); c["full"] != true {
		t.Fatalf("the first cycle of a new feed: %v", c)
	}
	// The writer's rule: the line first, then the write.
	ff, err := os.OpenFile(feed, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer ff.Close()
	write := func(off, n int) {
		fmt.Fprintf(ff, "%d %d\n", off, n)
		copy(src[off:], randomBytes(rng, n))
		f, _ := os.OpenFile(srcPath, os.O_WRONLY, 0)
		f.WriteAt(src[off:off+n], int64(off))
		f.Close()
	}
	write(100, 5000)
	write(3*miB+7, 70000)
	write(7*miB, 4096)
	c := cycle()
	if c["full"] != false || !strings.Contains(c["reason"].(string), "dirty map") {
		t.Fatalf("a cycle after fed writes: %v", c)
	}
	if cmp := c["compared"].(float64); cmp == 0 || cmp > 4*64*kiB {
		t.Fatalf("compared %v bytes for three writes (at most four 64 KiB grains)", cmp)
	}
	fmt.Fprintf(ff, "not a range\n")
	write(2*miB, 512)
	if c := cycle(); c["full"] != true || !strings.Contains(c["reason"].(string), "bad line") {
		t.Fatalf("after a bad line: %v", c)
	}
	if c := cycle(); c["full"] != false {
		t.Fatalf("the cycle after the full one: %v", c)
	}
	// The operator replaces the feed (rotation): one full cycle.
	ff.Close()
	os.Remove(feed)
	ff, _ = os.Create(feed)
	write(5*miB, 512)
	if c := cycle(); c["full"] != true || !strings.Contains(c["reason"].(string), "replaced or truncated") {
		t.Fatalf("after the feed was replaced: %v", c)
	}
}
