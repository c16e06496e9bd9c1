package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deltasync/deltasync/internal/xfstest"
)

// logged is one write of the writer, timed on this machine's clock.
type logged struct {
	gen        int
	off, n     int
	zero       bool
	start, end time.Time
}

// TestReplicateWhileWriting runs `deltasync replicate` as a service (a
// cycle a second, the source frozen by reflink copies on XFS, hinted by
// their extent maps) for at least 20 cycles while this process writes the
// source without pause: writes of 4 KiB to 1 MiB stamped with their
// generation, one in four of zeros over data. The writer logs each write
// with its times; for every point kept, the test rebuilds from that log
// the image as it was at the point's freeze and requires the point,
// restored by `deltasync points restore` (which checks its signature), to
// equal it (sha256): the image after the writes done before the freeze,
// and any of the writes under way during it, in order. The points kept
// are exactly the 10 newest cut (-keep-last 10). The same runs for a group
// of two disks (-config, Group.Run): each member's point is checked
// against its own view's freeze, and the group points kept are the 10
// newest.
func TestReplicateWhileWriting(t *testing.T) {
	for _, group := range []bool{false, true} {
		t.Run(map[bool]string{false: "disk", true: "group"}[group], func(t *testing.T) { whileWriting(t, group) })
	}
}

// member is one disk of whileWriting: its image, replica and write log.
type member struct {
	name, src, dst string
	orig           []byte
	f              *os.File
	log            []logged
}

func whileWriting(t *testing.T, group bool) {
	dir := xfstest.Dir(t, 1<<30)
	rng := newRand(t)
	const size = 8 * miB
	state := filepath.Join(dir, "state")
	ms := []*member{{name: "os"}}
	if group {
		ms = append(ms, &member{name: "data"})
	}
	for _, m := range ms {
		m.src, m.dst = filepath.Join(dir, m.name+".img"), filepath.Join(dir, m.name+"-replica.img")
		m.orig = randomBytes(rng, size)
		writeFile(t, m.src, m.orig)
	}
	args := []string{"replicate", "-interval", "1s", "-freeze", "reflink", "-state-dir", state,
		"-keep-last", "10", "-keep-hourly", "0", "-scrub-every", "-1", "-log-format", "json"}
	name := "os-replica"
	if group {
		name = "vm1"
		cfg := "name: vm1\ndisks:\n"
		for _, m := range ms {
			cfg += fmt.Sprintf("  - name: %s\n    source: %s\n    target: %s\n", m.name, m.src, m.dst)
		}
		path := filepath.Join(dir, "vm1.yaml")
		os.WriteFile(path, []byte(cfg), 0o600)
		args = append(args, "-config", path)
	} else {
		args = append(args, ms[0].src, ms[0].dst)
	}
	cmd, _, se := command(t, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	for _, m := range ms {
		f, err := os.OpenFile(m.src, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		m.f = f
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for gen := 1; ; gen++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(5+rng.IntN(20)) * time.Millisecond):
			}
			m := ms[rng.IntN(len(ms))]
			n := 4 * kiB * (1 + rng.IntN(256))
			off := 4 * kiB * rng.IntN((size-n)/(4*kiB)+1)
			p := make([]byte, n)
			zero := rng.IntN(4) == 0
			if !zero {
				for i := 0; i < n; i += 8 {
					binary.LittleEndian.PutUint64(p[i:], uint64(gen)<<32|uint64(i))
				}
			}
			w := logged{gen: gen, off: off, n: n, zero: zero, start: time.Now()}
			if _, err := m.f.WriteAt(p, int64(off)); err != nil {
				t.Error(err)
				return
			}
			w.end = time.Now()
			m.log = append(m.log, w) // read only after done
		}
	}()
	waitFor(t, 90*time.Second, "22 cycles", func() bool {
		v, err := readStatus(state, name)
		return err == nil && v.Cycles >= 22
	})
	close(stop)
	<-done
	for _, m := range ms {
		m.f.Close()
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, se)
	}
	st, err := readStatus(state, name)
	if err != nil {
		t.Fatal(err)
	}
	// The points (group points) cut, from the log lines.
	var cut []string
	hinted := 0
	for _, c := range logLines(t, se.String()) {
		switch {
		case !group && c["msg"] == "cycle done" && c["point_kept"] == false:
			cut = append(cut, c["point"].(string))
		case group && c["msg"] == "group cycle done":
			cut = append(cut, c["manifest"].(string))
		}
		if c["full"] == false {
			hinted++
		}
	}
	if len(cut) < 20 || hinted < 15 {
		t.Fatalf("%d points cut, %d hinted cycles: want 20 and 15\n%s", len(cut), hinted, se)
	}
	var kept []string
	for _, p := range st.Points {
		kept = append(kept, p.ID)
	}
	if strings.Join(kept, ",") != strings.Join(cut[len(cut)-10:], ",") {
		t.Fatalf("points kept %v, want the 10 newest cut %v", kept, cut[len(cut)-10:])
	}
	// Each member's points: (view, point file) oldest first.
	views := map[string][]pv{}
	if group {
		o := runCmd(t, "points", "groups", "-json", "-state-dir", state, "vm1")
		want(t, o, 0)
		var mans []struct {
			Disks []struct{ Name, View, Point string } `json:"disks"`
		}
		if err := json.Unmarshal([]byte(o.stdout), &mans); err != nil {
			t.Fatal(err)
		}
		for _, mn := range mans {
			for _, d := range mn.Disks {
				views[d.Name] = append(views[d.Name], pv{d.View, []string{"points", "restore", "-state-dir", state, "-name", "vm1", "-member", d.Name,
					filepath.Join(dir, d.Name+"-replica.img"), d.Point}})
			}
		}
	} else {
		for _, p := range st.Points {
			views["os"] = append(views["os"], pv{p.View, []string{"points", "restore", "-state-dir", state, "-name", name,
				filepath.Join(dir, "os-replica.img"), p.ID}})
		}
	}
	checked := 0
	for _, m := range ms {
		checked += checkPoints(t, m, views[m.name])
	}
	t.Logf("%d cycles (%d hinted), %d member points checked against the writer's log", st.Cycles, hinted, checked)
}

// pv is a point of one disk: its view's ID and the command that
// restores it.
type pv struct {
	view    string
	restore []string // points restore ... DST POINT (the output file is added)
}

// checkPoints rebuilds m's image at each point's freeze from the write
// log and compares it with the point restored by the command (sha256;
// the restore also checks the point's signature).
func checkPoints(t *testing.T, m *member, pts []pv) int {
	t.Helper()
	img := bytes.Clone(m.orig)
	apply := func(dst []byte, w logged) {
		if w.zero {
			clear(dst[w.off : w.off+w.n])
			return
		}
		for i := 0; i < w.n; i += 8 {
			binary.LittleEndian.PutUint64(dst[w.off+i:], uint64(w.gen)<<32|uint64(i))
		}
	}
	applied := 0
	for _, p := range pts { // oldest first
		ns, err := strconv.ParseInt(strings.TrimPrefix(p.view, "r"), 10, 64)
		if err != nil {
			t.Fatalf("%s: point %v: view %q", m.name, p.restore, p.view)
		}
		frozen := time.Unix(0, ns) // taken just before the clone
		// Writes done before the freeze are in; the clone takes
		// milliseconds: writes started more than a second later are out.
		for applied < len(m.log) && m.log[applied].end.Before(frozen) {
			apply(img, m.log[applied])
			applied++
		}
		out := filepath.Join(t.TempDir(), "restored.img")
		want(t, runCmd(t, append(p.restore, out)...), 0, "against its signature")
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		got := sha256.Sum256(b)
		probe := bytes.Clone(img)
		ok := got == sha256.Sum256(probe)
		for k := applied; !ok && k < len(m.log) && m.log[k].start.Before(frozen.Add(time.Second)); k++ {
			apply(probe, m.log[k])
			ok = got == sha256.Sum256(probe)
		}
		if !ok {
			t.Fatalf("%s: restored point %v (view %s) is no state of the source at its freeze", m.name, p.restore, p.view)
		}
	}
	return len(pts)
}
