//go:build linux

package main

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBlobNoPointWhenNothingWritten: a sync that writes nothing cuts no
// new recovery point and says so (stderr, no_recovery_point in --json);
// a blob without any recovery point yet gets one even when nothing is
// written, and a run that writes gets one.
func TestBlobNoPointWhenNothingWritten(t *testing.T) {
	s := startAzurite(t)
	dir := t.TempDir()
	jdir := filepath.Join(dir, "journals")
	r := rand.New(rand.NewPCG(3, 4))
	img, _ := blobImage(r, 4<<20)
	path := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	u := s.BlobURL(blobContainer, "points.img")
	res, _ := blobRun(t, "seed", "--json", "-journal-dir", jdir, "-snapshot=false", path, u)
	if res.RecoveryPoint != "" {
		t.Fatalf("-snapshot=false cut %s", res.RecoveryPoint)
	}
	// Nothing written, but no point yet: one is cut.
	res, se := blobRun(t, "sync", "--json", "-journal-dir", jdir, path, u)
	if res.BytesWritten != 0 || res.RecoveryPoint == "" || res.NoRecoveryPoint != "" {
		t.Fatalf("first point of an unchanged blob: wrote %d, point %q, none because %q\n%s", res.BytesWritten, res.RecoveryPoint, res.NoRecoveryPoint, se)
	}
	rp := res.RecoveryPoint
	// Nothing written again: no new point, and it says so.
	res, se = blobRun(t, "sync", "--json", "-journal-dir", jdir, path, u)
	if res.BytesWritten != 0 || res.RecoveryPoint != "" || !strings.Contains(res.NoRecoveryPoint, "wrote nothing") ||
		!strings.Contains(se, "no new recovery point") {
		t.Errorf("idle sync: wrote %d, point %q, none because %q\n%s", res.BytesWritten, res.RecoveryPoint, res.NoRecoveryPoint, se)
	}
	// A change: a new point.
	copy(img[1<<20:], "changed")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	res, se = blobRun(t, "sync", "--json", "-journal-dir", jdir, path, u)
	if res.BytesWritten == 0 || res.RecoveryPoint == "" || res.RecoveryPoint == rp || res.NoRecoveryPoint != "" {
		t.Errorf("sync of a change: wrote %d, point %q (the last was %q), none because %q\n%s", res.BytesWritten, res.RecoveryPoint, rp, res.NoRecoveryPoint, se)
	}
	blobIs(t, "after the syncs", u, img)
	so, _, code := blobCLI(t, "snapshots", u)
	if code != 0 || strings.Count(so, "recovery-point") != 2 {
		t.Errorf("want two recovery points:\n%s", so)
	}
}
