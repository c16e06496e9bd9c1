package agent

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/internal/faultfs"
	"github.com/deltasync/deltasync/transfer"
)

// The agent after a failed flush. Its disk lives on a FUSE file system
// whose next fsync fails with EIO and loses the writes since the last
// good one, while the page cache keeps them (internal/faultfs), as a
// disk's failed write-back does: buffered reads then see data the disk
// does not hold, and hashing them would call a differing target
// identical.

// faultAgent serves d.img, holding b, from a fault file system.
func faultAgent(t *testing.T, b []byte) (*testAgent, *faultfs.FS) {
	t.Helper()
	backing := t.TempDir()
	if err := os.WriteFile(filepath.Join(backing, "d.img"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	ffs := faultfs.Mount(t, backing)
	a := startAgent(t, nil, func(o *ServerOptions) { o.Disks["d"] = ffs.Path("d.img") })
	return a, ffs
}

// direct reads path with dd iflag=direct: what the disk holds.
func direct(t *testing.T, path string) []byte {
	t.Helper()
	out, err := exec.Command("dd", "if="+path, "iflag=direct", "bs=1M", "status=none").Output()
	if err != nil {
		t.Fatalf("dd iflag=direct %s: %v", path, err)
	}
	return out
}

// TestFailedFlushRunHashesDisk: a sync whose flush fails on the agent
// fails; the next sync on the same agent, with no journal to say what
// happened, still finds the differences (the agent hashes a disk whose
// flush failed with O_DIRECT) and leaves the disk, read with O_DIRECT,
// equal to the source. Before, it hashed the page cache, wrote nothing
// and succeeded.
func TestFailedFlushRunHashesDisk(t *testing.T) {
	if err := faultfs.Available(); err != nil {
		t.Skip(err)
	}
	rng := newRand(t)
	const size = 4 << 20
	src := randBytes(rng, size)
	old := bytes.Clone(src)
	changeBlocks(rng, old, 64<<10, 12)
	a, ffs := faultAgent(t, old)
	srcPath := filepath.Join(t.TempDir(), "src.img")
	if err := os.WriteFile(srcPath, src, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := withTimeout(t, 60*time.Second)
	ffs.FailNextFsync("d.img")
	_, err := syncTo(ctx, t, a.client(), srcPath, "d", &transfer.Options{NoJournal: true})
	if err == nil || !strings.Contains(err.Error(), "flush") {
		t.Fatalf("the sync whose flush failed: %v, want an error naming the flush", err)
	}
	if got := direct(t, ffs.Path("d.img")); !bytes.Equal(got, old) {
		t.Fatal("after the failed flush the disk does not hold the old data: the test would prove nothing")
	}
	st, err := syncTo(ctx, t, a.client(), srcPath, "d", &transfer.Options{NoJournal: true})
	if err != nil {
		t.Fatal(err)
	}
	if st.Written+st.Zeroed == 0 {
		t.Errorf("the sync after the failed flush wrote nothing: it hashed the pages whose write-back failed (%+v)", st)
	}
	if got := direct(t, ffs.Path("d.img")); !bytes.Equal(got, src) {
		t.Fatal("exit 0, and the agent's disk read with O_DIRECT is not the source")
	}
}

// TestHashDirectAsked: a client that asks for O_DIRECT hashing (its
// journal says a flush failed, perhaps on an agent that has restarted
// since) gets the hashes of what the disk holds, not of the page cache.
func TestHashDirectAsked(t *testing.T) {
	if err := faultfs.Available(); err != nil {
		t.Skip(err)
	}
	rng := newRand(t)
	const size = 2 << 20
	old := randBytes(rng, size)
	a, ffs := faultAgent(t, old)
	// Another program's write whose write-back fails: the cache holds
	// news, the disk the old data. This agent never saw the failure.
	p := ffs.Path("d.img")
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	news := randBytes(rng, size)
	if _, err := f.WriteAt(news, 0); err != nil {
		t.Fatal(err)
	}
	ffs.FailNextFsync("d.img")
	if err := f.Sync(); err == nil {
		t.Fatal("the armed fsync did not fail")
	}
	f.Close()
	ctx := withTimeout(t, 30*time.Second)
	d, err := a.client().OpenSource(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	h := blockdiff.Hasher{Alg: blockdiff.XXH3}
	h.Key, _ = blockdiff.NewKey()
	hashes := func(r io.ReaderAt, o blockdiff.Options) []blockdiff.BlockHash {
		var hs []blockdiff.BlockHash
		if r != nil {
			if err := blockdiff.HashBlocks(ctx, r, size, h, &o, func(bh blockdiff.BlockHash) error { hs = append(hs, bh); return nil }); err != nil {
				t.Fatal(err)
			}
			return hs
		}
		it, err := d.HashBlocks(ctx, h, &o)
		if err != nil {
			t.Fatal(err)
		}
		for {
			bh, err := it.Next()
			if err == io.EOF {
				return hs
			}
			if err != nil {
				t.Fatal(err)
			}
			hs = append(hs, bh)
		}
	}
	eq := func(a, b []blockdiff.BlockHash) bool {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if a[i] != b[i] {
				return false
			}
		}
		return true
	}
	if !eq(hashes(nil, blockdiff.Options{}), hashes(bytes.NewReader(news), blockdiff.Options{})) {
		t.Fatal("buffered hashing does not see the cached news: the test would prove nothing")
	}
	if !eq(hashes(nil, blockdiff.Options{Direct: blockdiff.DirectAlways}), hashes(bytes.NewReader(old), blockdiff.Options{})) {
		t.Fatal("hashing asked for O_DIRECT is not of what the disk holds")
	}
}
