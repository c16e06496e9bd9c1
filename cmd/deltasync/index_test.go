package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSlice(t *testing.T) {
	const unit = 64 << 10
	var end int64
	for i := range 4 {
		off, n, ok := slice(i, 4, 10<<20+512, unit)
		if !ok || off != end || off%unit != 0 {
			t.Fatalf("slice %d: [%d,+%d) ok %v, want it to start at %d on the unit", i, off, n, ok, end)
		}
		if i == 3 {
			if n != 0 {
				t.Fatalf("the last slice has length %d, want 0 (to the end)", n)
			}
			break
		}
		end = off + n
	}
	if _, _, ok := slice(5, 8, 3*unit, unit); ok {
		t.Fatal("slice 5 of 8 of a 3-unit disk is not empty")
	}
	if u := sliceUnit(512); u != 4096 {
		t.Fatalf("unit of a 512-byte block: %d, want 4096", u)
	}
}

// TestIndexFleetAndSlices: sync -fleet picks line JOB_COMPLETION_INDEX of
// a fleet file; sync -index I -count N of one disk, each index in turn,
// leaves the target identical having written only what differs, with a
// journal of its own per index; the summary names the index.
func TestIndexFleetAndSlices(t *testing.T) {
	rng := newRand(t)
	dir := t.TempDir()
	jdir := filepath.Join(dir, "journals")
	var fleet strings.Builder
	fleet.WriteString("# three disks\n")
	var srcs [][]byte
	for i := range 3 {
		s, d := filepath.Join(dir, fmt.Sprintf("s%d.img", i)), filepath.Join(dir, fmt.Sprintf("d%d.img", i))
		b := randomBytes(rng, 2*miB)
		writeFile(t, s, b)
		srcs = append(srcs, b)
		fmt.Fprintf(&fleet, "%s %s  # disk %d\n", s, d, i)
	}
	fp := filepath.Join(dir, "fleet.txt")
	os.WriteFile(fp, []byte(fleet.String()), 0o600)
	for i := range 3 {
		o := runCmdEnv(t, []string{fmt.Sprintf("JOB_COMPLETION_INDEX=%d", i)}, "seed", "-journal-dir", jdir, "-fleet", fp, "-index-from-env")
		want(t, o, 0, fmt.Sprintf("index %d/3", i))
		sameBytes(t, fmt.Sprintf("fleet disk %d", i), filepath.Join(dir, fmt.Sprintf("d%d.img", i)), srcs[i])
	}
	want(t, runCmd(t, "seed", "-journal-dir", jdir, "-fleet", fp, "-index", "3"), 2, "has 3 disks")

	// One disk in four slices.
	src, dst := filepath.Join(dir, "big.img"), filepath.Join(dir, "big-copy.img")
	b := randomBytes(rng, 8*miB+4096)
	writeFile(t, src, b)
	old := append([]byte(nil), b...)
	changed := change(rng, old, 10, 2)
	writeFile(t, dst, old)
	var written int64
	for i := range 4 {
		o := runCmd(t, "sync", "--json", "-journal-dir", jdir, "-index", fmt.Sprint(i), "-count", "4", src, dst)
		want(t, o, 0, fmt.Sprintf("index %d/4", i))
		r := figures(t, o)
		written += r.BytesWritten + r.BytesZeroed
	}
	sameBytes(t, "the sliced disk", dst, b)
	if want := int64(len(changed)) * bs; written != want {
		t.Fatalf("the four slices wrote %d bytes, want the %d changed", written, want)
	}
	want(t, runCmd(t, "sync", "-index", "1", "-count", "4", "-offset", "4096", src, dst), 2, "-offset")
}
