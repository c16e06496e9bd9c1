package main

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/deltasync/deltasync/patch"
)

// offlineExit is the exit status main gives an error of run.
func offlineExit(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errDiffer):
		return 1
	}
	return 2
}

func offlineImage(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	clear(b[n/3 : n/3+n/10]) // a run of zeros
	return b
}

// offlineChange returns base resized to size, with some blocks changed,
// some cleared and some text written.
func offlineChange(rng *rand.Rand, base []byte, size int) []byte {
	src := make([]byte, size)
	copy(src, base)
	for i := len(base); i < size; i++ {
		src[i] = byte(rng.Uint32())
	}
	for range 20 {
		off := rng.IntN(size - 70000)
		n := 1 + rng.IntN(70000)
		switch rng.IntN(3) {
		case 0:
			clear(src[off : off+n])
		case 1:
			for i := off; i < off+n; i++ {
				src[i] = byte(rng.Uint32())
			}
		default:
			for i := off; i < off+n; i++ {
				src[i] = "offline patch "[i%14]
			}
		}
	}
	return src
}

func offlineWrite(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func offlineSame(t *testing.T, path string, want []byte, what string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %s (%d bytes) is not what it should be (%d bytes)", what, path, len(got), len(want))
	}
}

func TestOfflineSignDiffApply(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	ctx := context.Background()
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	must := func(what string, args ...string) {
		t.Helper()
		if err := run(ctx, args); offlineExit(err) != 0 {
			t.Fatalf("%s: exit %d: %v", what, offlineExit(err), err)
		}
	}

	for _, c := range []struct {
		name       string
		base, size int
		sign       []string
	}{
		{"grow", 3<<20 + 1000, 3<<20 + 500_000, []string{"sign", p("base"), "-o", p("sig")}},
		{"shrink", 3<<20 + 1000, 2<<20 + 777, []string{"sign", "-hash", "blake3", p("base"), "-o", p("sig"), "-block-size", "4K"}},
		{"equal", 2 << 20, 2 << 20, []string{"sign", "-block-size=16K", "-o", p("sig"), "--", p("base")}},
	} {
		base := offlineImage(rng, c.base)
		src := offlineChange(rng, base, c.size)
		offlineWrite(t, p("base"), base)
		offlineWrite(t, p("src"), src)
		offlineWrite(t, p("dst"), base)
		must(c.name+": sign", c.sign...)
		if fi, err := os.Stat(p("sig")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: signature file: %v, %v", c.name, fi.Mode(), err)
		}
		must(c.name+": diff", "diff", p("src"), p("sig"), "-o", p("patch"), "-compress", "fastest")
		pb, err := os.ReadFile(p("patch"))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: patch of %d bytes for a disk of %d", c.name, len(pb), c.size)

		// A damaged patch and another disk are refused, and left alone.
		bad := bytes.Clone(pb)
		bad[len(bad)/2] ^= 0x10
		offlineWrite(t, p("bad"), bad)
		err = run(ctx, []string{"apply", p("bad"), p("dst")})
		if offlineExit(err) != 2 || !errors.Is(err, patch.ErrCorrupt) {
			t.Fatalf("%s: damaged patch: exit %d, %v", c.name, offlineExit(err), err)
		}
		offlineSame(t, p("dst"), base, c.name+": after a damaged patch")
		other := offlineImage(rng, c.base)
		offlineWrite(t, p("other"), other)
		err = run(ctx, []string{"apply", p("patch"), p("other")})
		if offlineExit(err) != 2 || !errors.Is(err, patch.ErrBaseMismatch) {
			t.Fatalf("%s: another disk: exit %d, %v", c.name, offlineExit(err), err)
		}
		offlineSame(t, p("other"), other, c.name+": another disk")

		must(c.name+": apply", "apply", p("patch"), p("dst"), "-verify")
		offlineSame(t, p("dst"), src, c.name+": after apply")
		must(c.name+": apply again", "apply", p("patch"), p("dst"))
		offlineSame(t, p("dst"), src, c.name+": after a second apply")
		// -no-base-check on a copy of the base.
		offlineWrite(t, p("dst"), base)
		must(c.name+": apply -no-base-check", "apply", "-no-base-check", p("patch"), p("dst"))
		offlineSame(t, p("dst"), src, c.name+": after apply -no-base-check")
	}

	// Mistakes: exit status 2, and nothing written.
	base, _ := os.ReadFile(p("base"))
	for _, args := range [][]string{
		{"sign", p("base")},
		{"sign", "-o", p("sig")},
		{"sign", "-hash", "md5", p("base"), "-o", p("sig2")},
		{"sign", p("base"), "-o", p("base")},
		{"sign", p("missing"), "-o", p("sig2")},
		{"diff", p("src"), p("sig")},
		{"diff", p("src"), p("base"), "-o", p("patch2")},
		{"diff", p("src"), p("sig"), "-o", p("patch2"), "-compress", "best"},
		{"apply", p("patch")},
		{"apply", p("sig"), p("dst")},
		{"apply", p("patch"), p("patch")},
		{"apply", p("patch"), p("missing")},
	} {
		if err := run(ctx, args); offlineExit(err) != 2 {
			t.Fatalf("%q: exit %d (%v), want 2", args, offlineExit(err), err)
		}
	}
	offlineSame(t, p("base"), base, "the base after mistakes")
	for _, name := range []string{"sig2", "patch2", "missing"} {
		if _, err := os.Stat(p(name)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s was created by a failed command (%v)", name, err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 7 { // bad base dst other patch sig src
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("temporary files left behind: %q", names)
	}
}
