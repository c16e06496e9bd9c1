//go:build linux

package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/agent"
	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/internal/faultfs"
)

// The agent after a failed flush. Its disk lives on a FUSE file system
// (internal/faultfs, served by this test process) whose next fsync fails
// with EIO and loses the writes since the last good one, while the page
// cache keeps them, as a disk's failed write-back does: buffered reads
// then see data the disk does not hold. The agent runs as its own
// process: a process that maps files of a FUSE file system it serves
// itself can deadlock (a page fault waits for the server, the server for
// the garbage collector, the collector for the faulting thread).

// faultAgentFS starts an agent process serving dst.img from a fault
// file system, mounted for the test's life.
func faultAgentFS(t *testing.T) (ffs *faultfs.FS, url, pin, token string) {
	t.Helper()
	dir := t.TempDir()
	backing := filepath.Join(dir, "backing")
	if err := os.Mkdir(backing, 0o755); err != nil {
		t.Fatal(err)
	}
	ffs = faultfs.Mount(t, backing)
	_, url, pin, token = agentFixtureOf(t, dir, ffs.Path("dst.img"))
	return
}

// writeSynced makes path hold b, flushed: on a fault file system, on its
// disk and not only in its cache (a failed flush loses unflushed writes).
func writeSynced(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// faultAgent starts an agent process serving dst.img, holding b, from a
// fault file system.
func faultAgent(t *testing.T, b []byte) (ffs *faultfs.FS, url, pin, token string) {
	t.Helper()
	if err := faultfs.Available(); err != nil {
		t.Skip(err)
	}
	ffs, url, pin, token = faultAgentFS(t)
	writeSynced(t, ffs.Path("dst.img"), b)
	return
}

// TestFailedFlushAgent: a sync whose flush fails on the agent fails; the
// next sync on the same agent, with no journal to say what happened,
// still finds the differences (the agent hashes a disk whose flush failed
// with O_DIRECT) and leaves the disk, read with O_DIRECT, equal to the
// source. Before, it hashed the page cache, wrote nothing and exited 0.
func TestFailedFlushAgent(t *testing.T) {
	rng := newRand(t)
	const size = 8 * miB
	src := randomBytes(rng, size)
	old := bytes.Clone(src)
	change(rng, old, 40, 8)
	ffs, url, pin, token := faultAgent(t, old)
	srcPath := filepath.Join(t.TempDir(), "src.img")
	writeFile(t, srcPath, src)
	env := []string{"DELTASYNC_AGENT_TOKEN=" + token}
	ffs.FailNextFsync("dst.img")
	o := runCmdEnv(t, env, "sync", "-no-journal", "-agent-pin", pin, srcPath, url)
	want(t, o, 2, "flush")
	if got := ddDigest(t, ffs.Path("dst.img"), size); got != sha(old) {
		t.Fatal("after the failed flush the disk does not hold the old data: the test would prove nothing")
	}
	o = runCmdEnv(t, env, "sync", "-no-journal", "-json", "-agent-pin", pin, srcPath, url)
	r := figures(t, o)
	if r.BytesWritten+r.BytesZeroed == 0 {
		t.Errorf("the sync after the failed flush wrote nothing: it hashed the pages whose write-back failed\n%s", o)
	}
	if got := ddDigest(t, ffs.Path("dst.img"), size); got != sha(src) {
		t.Fatalf("exit 0, and the agent's disk read with O_DIRECT is not the source\n%s", o)
	}
}

// TestHashDirectAsked: a client that asks for O_DIRECT hashing (its
// journal says a flush failed, perhaps on an agent restarted since) gets
// the hashes of what the disk holds, not of the page cache.
func TestHashDirectAsked(t *testing.T) {
	rng := newRand(t)
	const size = 2 * miB
	old := randomBytes(rng, size)
	ffs, url, pin, token := faultAgent(t, old)
	// Another program's write whose write-back fails: the cache holds
	// news, the disk the old data. The agent never saw the failure.
	p := ffs.Path("dst.img")
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	news := randomBytes(rng, size)
	if _, err := f.WriteAt(news, 0); err != nil {
		t.Fatal(err)
	}
	ffs.FailNextFsync("dst.img")
	if err := f.Sync(); err == nil {
		t.Fatal("the armed fsync did not fail")
	}
	f.Close()
	if !bytes.Equal(readFile(t, p), news) {
		t.Fatal("a buffered read does not see the cached news: the test would prove nothing")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := &agent.Client{Addr: strings.TrimPrefix(strings.TrimSuffix(url, "/d"), "agent://"), Token: token, Pin: pin}
	d, err := c.OpenSource(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	h := blockdiff.Hasher{Alg: blockdiff.XXH3}
	h.Key, _ = blockdiff.NewKey()
	var want, got []blockdiff.BlockHash
	if err := blockdiff.HashBlocks(ctx, bytes.NewReader(old), size, h, nil, func(bh blockdiff.BlockHash) error { want = append(want, bh); return nil }); err != nil {
		t.Fatal(err)
	}
	it, err := d.HashBlocks(ctx, h, &blockdiff.Options{Direct: blockdiff.DirectAlways})
	if err != nil {
		t.Fatal(err)
	}
	for {
		bh, err := it.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, bh)
	}
	if len(got) != len(want) {
		t.Fatalf("%d hashes, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("hash %d is not of what the disk holds: the agent hashed its page cache", i)
		}
	}
}
