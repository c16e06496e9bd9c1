package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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
// the image as it was at the point's freeze and requires the point to
// equal it (sha256): the image after the writes done before the freeze,
// and any of the writes under way during it, in order. The points kept
// are exactly the 10 newest cut (-keep-last 10).
func TestReplicateWhileWriting(t *testing.T) {
	dir := xfstest.Dir(t, 1<<30)
	rng := newRand(t)
	const size = 8 * miB
	srcPath, dstPath, state := filepath.Join(dir, "vm1.img"), filepath.Join(dir, "replica.img"), filepath.Join(dir, "state")
	orig := randomBytes(rng, size)
	writeFile(t, srcPath, orig)
	cmd, _, se := command(t, "replicate", "-interval", "1s", "-freeze", "reflink", "-state-dir", state,
		"-keep-last", "10", "-keep-hourly", "0", "-scrub-every", "-1", "-log-format", "json", srcPath, dstPath)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	f, err := os.OpenFile(srcPath, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var wlog []logged
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
			if _, err := f.WriteAt(p, int64(off)); err != nil {
				t.Error(err)
				return
			}
			w.end = time.Now()
			mu.Lock()
			wlog = append(wlog, w)
			mu.Unlock()
		}
	}()
	waitFor(t, 60*time.Second, "22 cycles", func() bool {
		v, err := readStatus(state, "replica")
		return err == nil && v.Cycles >= 22
	})
	close(stop)
	<-done
	f.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, se)
	}
	st, err := readStatus(state, "replica")
	if err != nil {
		t.Fatal(err)
	}
	// The points cut, from the cycle log lines.
	var cut []string
	hinted := 0
	for _, c := range cycleLines(t, se.String()) {
		if c["msg"] == "cycle done" && c["point_kept"] == false {
			cut = append(cut, c["point"].(string))
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
	// Rebuild each point's image from the writer's log.
	img := bytes.Clone(orig)
	applied := 0 // writes of wlog applied to img
	apply := func(w logged) {
		if w.zero {
			clear(img[w.off : w.off+w.n])
			return
		}
		for i := 0; i < w.n; i += 8 {
			binary.LittleEndian.PutUint64(img[w.off+i:], uint64(w.gen)<<32|uint64(i))
		}
	}
	for _, p := range st.Points { // oldest first
		ns, err := strconv.ParseInt(strings.TrimPrefix(p.View, "r"), 10, 64)
		if err != nil {
			t.Fatalf("point %s: view %q", p.ID, p.View)
		}
		frozen := time.Unix(0, ns) // taken just before the clone
		// Writes done before the freeze are in; the clone takes
		// milliseconds: writes started more than a second later are out.
		for applied < len(wlog) && wlog[applied].end.Before(frozen) {
			apply(wlog[applied])
			applied++
		}
		b, err := os.ReadFile(filepath.Join(dir, "replica.img@"+p.ID+".point"))
		if err != nil {
			t.Fatal(err)
		}
		got := sha256.Sum256(b)
		probe := bytes.Clone(img)
		ok := got == sha256.Sum256(probe)
		for k := applied; !ok && k < len(wlog) && wlog[k].start.Before(frozen.Add(time.Second)); k++ {
			save := img
			img = probe
			apply(wlog[k])
			img = save
			ok = got == sha256.Sum256(probe)
		}
		if !ok {
			t.Fatalf("point %s (view %s) is no state of the source at its freeze", p.ID, p.View)
		}
	}
	t.Logf("%d writes, %d cycles (%d hinted), %d points checked", len(wlog), st.Cycles, hinted, len(st.Points))
}
