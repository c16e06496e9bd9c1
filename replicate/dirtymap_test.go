package replicate

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/deltasync/deltasync/disk"
)

func TestDirtyMapPersistence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.dirty")
	const size, grain = 10<<20 + 512, 64 << 10
	m, err := OpenDirtyMap(path, size, grain)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, why := m.Take(); ok || why != "new dirty map" {
		t.Fatalf("a new map is trusted: %v %q", ok, why)
	}
	if err := m.Done(); err != nil { // a full cycle succeeded
		t.Fatal(err)
	}
	m.Mark(100, 1)       // grain 0
	m.Mark(grain*3-1, 2) // grains 2 and 3
	m.Mark(size-10, 100) // the last, partial grain, clipped
	m.Mark(-1, 5)        // ignored
	rs, ok, _ := m.Take()
	want := []disk.Range{{Off: 0, Len: grain}, {Off: 2 * grain, Len: 2 * grain}, {Off: size - 512, Len: 512}}
	if !ok || !slices.Equal(rs, want) {
		t.Fatalf("Take = %v %v, want %v", rs, ok, want)
	}
	// No Done: a failed cycle. The next Take hands them out again.
	m.Mark(5*grain, 1)
	rs, _, _ = m.Take()
	if len(rs) != 4 {
		t.Fatalf("after a failed cycle: %v", rs)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	e1, g1 := m.Generation()

	// A clean reopen keeps everything and is trusted.
	m2, err := OpenDirtyMap(path, size, grain)
	if err != nil {
		t.Fatal(err)
	}
	rs2, ok, why := m2.Take()
	if !ok || !slices.Equal(rs2, rs) {
		t.Fatalf("reopened: %v %v %q, want %v", rs2, ok, why, rs)
	}
	if e2, g2 := m2.Generation(); e2 != e1 || g2 <= g1 {
		t.Fatalf("generation %d/%d after %d/%d", e2, g2, e1, g1)
	}
	// No Close: the process "dies". The file says the map was open.
	m3, err := OpenDirtyMap(path, size, grain)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, why := m3.Take(); ok {
		t.Fatalf("a map after an unclean stop is trusted (%q)", why)
	} else {
		t.Logf("unclean stop: %s", why)
	}
	m3.Done()
	m3.Close()
	// A resize makes it untrusted.
	m4, err := OpenDirtyMap(path, size*2, grain)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, why := m4.Take(); ok {
		t.Fatal("a resized map is trusted")
	} else {
		t.Logf("resize: %s", why)
	}
	m4.Done()
	m4.Close()

	// Corruption is refused: a flipped bit, a truncated file.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]byte{
		append(append([]byte(nil), b[:60]...), append([]byte{b[60] ^ 4}, b[61:]...)...),
		b[:len(b)-9],
		[]byte("not a map at all, but long enough to have a header.........."),
	} {
		os.WriteFile(path, bad, 0o644)
		if _, err := OpenDirtyMap(path, size*2, grain); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("corrupt map opened: %v", err)
		}
	}
}

// TestDirtyInvalidatedDuringCycle: a map invalidated after the view was
// frozen (events lost while the cycle ran) stays untrusted after that
// cycle's Done; one invalidated before the freeze is trusted again once
// the full cycle of a view frozen after it is done.
func TestDirtyInvalidatedDuringCycle(t *testing.T) {
	m, err := OpenDirtyMap(filepath.Join(t.TempDir(), "dirty"), 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.Take()
	m.Invalidate("lost before the freeze")
	frozen := m.Invalidations()
	if err := m.DoneSince(frozen); err != nil {
		t.Fatal(err)
	}
	if ok, why := m.Trusted(); !ok {
		t.Fatalf("not trusted after a full cycle frozen after the invalidation: %s", why)
	}
	m.Take()
	frozen = m.Invalidations()
	m.Invalidate("lost while the cycle ran")
	m.DoneSince(frozen)
	if ok, _ := m.Trusted(); ok {
		t.Fatal("trusted after a cycle whose view was frozen before events were lost")
	}
	if _, ok, why := m.Take(); ok || why != "lost while the cycle ran" {
		t.Fatalf("Take: trusted %v (%s)", ok, why)
	}
}
