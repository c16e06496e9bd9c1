package transfer

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestJournalEncoding(t *testing.T) {
	rec := journalRecord{
		Identity:  journalIdentity{SourceID: "s", TargetID: "t", SourceSize: 1 << 30, TargetSize: 1 << 30, SourceVersion: "v1", BlockSize: 65536, Align: 512, Offset: 0, Length: 0},
		Watermark: 64 << 20,
	}
	b, err := encodeJournal(rec)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeJournal(b)
	if err != nil || got != rec {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for i := range b {
		c := append([]byte(nil), b...)
		c[i] ^= 0x10
		if _, err := decodeJournal(c); err == nil {
			t.Fatalf("flipping byte %d went unnoticed", i)
		}
	}
	for n := range len(b) {
		if _, err := decodeJournal(b[:n]); err == nil {
			t.Fatalf("truncation to %d bytes went unnoticed", n)
		}
	}
	if why := rec.Identity.mismatch(rec.Identity); why != "" {
		t.Fatal(why)
	}
	other := rec.Identity
	other.SourceVersion = "v2"
	if why := rec.Identity.mismatch(other); why == "" {
		t.Fatal("source version change not noticed")
	}
}

func TestDirStore(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state")
	s := DirStore{Dir: dir}
	key := journalKey("target", 0, 0)
	if _, err := s.Load(ctx, key); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing journal: %v", err)
	}
	for _, data := range []string{"first", "second, longer"} {
		if err := s.Save(ctx, key, []byte(data)); err != nil {
			t.Fatal(err)
		}
		got, err := s.Load(ctx, key)
		if err != nil || string(got) != data {
			t.Fatalf("load: %q, %v", got, err)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != key+".journal" {
		t.Fatalf("directory holds %v", ents)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Fatalf("directory mode %v", fi.Mode())
	}
	if err := s.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, key); err != nil {
		t.Fatalf("deleting a missing journal: %v", err)
	}
	for _, bad := range []string{"", "../x", "ABC", "a/b"} {
		if err := s.Save(ctx, bad, nil); !errors.Is(err, ErrBadOptions) {
			t.Fatalf("key %q: %v", bad, err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Save(cctx, key, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled save: %v", err)
	}

	t.Setenv("XDG_STATE_HOME", "/xdg")
	if d, _ := DefaultStateDir(); d != "/xdg/deltasync" {
		t.Fatalf("default dir %q", d)
	}
	t.Setenv("XDG_STATE_HOME", "")
	t.Setenv("HOME", "/home/u")
	if d, _ := DefaultStateDir(); d != "/home/u/.local/state/deltasync" {
		t.Fatalf("default dir %q", d)
	}
}

func TestNoIdentityNoJournal(t *testing.T) {
	s := newMemDisk(make([]byte, 8192), "")
	s.WriteAt([]byte{1}, 0)
	d := newMemDisk(make([]byte, 8192), "dst")
	st, err := Sync(context.Background(), s, d, &Options{Journal: &MemStore{}})
	if err != nil || st.Journaled {
		t.Fatalf("%v %+v", err, st)
	}
	st, err = Sync(context.Background(), bareTarget{s}, bareTarget{d}, nil)
	if err != nil || st.Journaled {
		t.Fatalf("%v %+v", err, st)
	}
}
