package replicate

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"math/bits"
	"os"
	"sync"

	"github.com/deltasync/deltasync/disk"
)

// DefaultGrain is the bytes of disk one bit of a DirtyMap covers.
const DefaultGrain = 64 << 10

// DirtyMap is a dirty-range feed for a local disk: a bitmap, one bit per
// grain of the disk, set for every grain written since the last cycle.
// The embedding program fills it (Mark) from a real change tracker
// (device-mapper's era target: `era_invalidate --written-since`;
// thin_delta between two thin snapshots; a block-layer filter) or from its
// own write path, and the replicator takes it (Take) before freezing the
// source and adds what was marked since (Peek) after freezing, so that
// every write before the freeze is in the cycle's hints.
//
// The rule for the writer: Mark a range before the write to it is issued
// (mark, then write). Then every write done before the freeze was marked
// before the freeze, and is compared by the cycle; a write marked after
// the Take is compared again by the next cycle too.
//
// # Persistence and trust
//
// The map lives in a file, written atomically (a temporary file, fsync,
// rename, fsync of the directory) with a CRC-32C of its contents, an
// epoch (random, chosen when the map is created) and a generation (one
// more at every save). A file whose checksum fails is refused with
// ErrCorrupt, never used. The file also records whether the map was
// closed cleanly: OpenDirtyMap marks it open (a save with the flag
// cleared) before returning, and Close saves it clean. A map whose file
// says it was not closed cleanly missed the writes of the process that
// died with it, and is not trusted: Take reports it, and the replicator
// compares everything once. So is a new map (it has no history), one
// whose disk size changed, and one the caller Invalidates (the tracker
// lost events). The replicator also records the epoch and generation it
// last committed: a map of another epoch, or of an older generation (a
// file restored from a backup), is not trusted either.
//
// A map becomes trusted when a cycle that compared everything, from a
// view frozen after the Take, succeeds (Done).
//
// # Concurrency
//
// Every method may be called concurrently; Mark is cheap (a mutex and a
// few bit operations).
type DirtyMap struct {
	mu      sync.Mutex
	path    string
	size    int64
	grain   int64
	cur     []uint64 // marked since the last Take
	taken   []uint64 // handed out by Take, not yet Done
	epoch   uint64
	gen     uint64
	trusted bool
	why     string // why it is not trusted
	closed  bool
	inv     uint64 // Invalidate calls, so that Done can tell one made during its cycle
}

const (
	dirtyMagic   = "DSDIRTY1"
	dirtyHeader  = 8 + 4 + 4 + 8 + 8 + 8 + 8 // magic, version, flags, epoch, gen, size, grain
	dirtyVersion = 1
	flagClean    = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// OpenDirtyMap opens the dirty map kept at path for a disk of size bytes
// with grain bytes per bit (0: DefaultGrain; a multiple of 512), creating
// it when the file does not exist. The map is saved as open before
// OpenDirtyMap returns. A corrupt file is refused with ErrCorrupt: remove
// it to start a new (untrusted) map.
func OpenDirtyMap(path string, size, grain int64) (*DirtyMap, error) {
	if grain == 0 {
		grain = DefaultGrain
	}
	if grain < 512 || grain%512 != 0 || size < 0 {
		return nil, fmt.Errorf("replicate: dirty map %s: grain %d is not a positive multiple of 512, or size %d is negative", path, grain, size)
	}
	m := &DirtyMap{path: path, size: size, grain: grain}
	words := m.words()
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		var e [8]byte
		rand.Read(e[:])
		m.epoch = binary.LittleEndian.Uint64(e[:])
		m.cur, m.taken = make([]uint64, words), make([]uint64, words)
		m.why = "new dirty map"
	case err != nil:
		return nil, fmt.Errorf("replicate: dirty map: %w", err)
	default:
		if err := m.decode(b); err != nil {
			return nil, fmt.Errorf("replicate: dirty map %s: %w", path, err)
		}
	}
	if err := m.saveLocked(false); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *DirtyMap) words() int64 {
	bitsN := (m.size + m.grain - 1) / m.grain
	return (bitsN + 63) / 64
}

// decode reads a saved map into m (whose size and grain are the wanted
// ones) and decides whether it is trusted.
func (m *DirtyMap) decode(b []byte) error {
	if len(b) < dirtyHeader+4 || string(b[:8]) != dirtyMagic {
		return fmt.Errorf("%w: not a dirty map", ErrCorrupt)
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	le := binary.LittleEndian
	if v := le.Uint32(b[8:]); v != dirtyVersion {
		return fmt.Errorf("%w: version %d", ErrCorrupt, v)
	}
	flags := le.Uint32(b[12:])
	m.epoch, m.gen = le.Uint64(b[16:]), le.Uint64(b[24:])
	size, grain := int64(le.Uint64(b[32:])), int64(le.Uint64(b[40:]))
	if size < 0 || grain < 512 || grain%512 != 0 {
		return fmt.Errorf("%w: size %d grain %d", ErrCorrupt, size, grain)
	}
	nw := ((size+grain-1)/grain + 63) / 64
	if int64(len(body)-dirtyHeader) != nw*8 {
		return fmt.Errorf("%w: %d bytes of bitmap for %d words", ErrCorrupt, len(body)-dirtyHeader, nw)
	}
	m.cur, m.taken = make([]uint64, m.words()), make([]uint64, m.words())
	m.trusted = true
	switch {
	case flags&flagClean == 0:
		m.trusted, m.why = false, "unclean stop: the dirty map was not closed cleanly"
	case size != m.size || grain != m.grain:
		m.trusted, m.why = false, fmt.Sprintf("the disk was resized (dirty map of %d bytes by %d, now %d by %d)", size, grain, m.size, m.grain)
	}
	if m.trusted {
		for i := range m.cur {
			m.cur[i] = le.Uint64(body[dirtyHeader+8*i:])
		}
	}
	return nil
}

// saveLocked writes the map (what is marked and what is taken) with the
// clean flag given, one generation on.
func (m *DirtyMap) saveLocked(clean bool) error {
	var buf bytes.Buffer
	le := binary.LittleEndian
	buf.WriteString(dirtyMagic)
	var flags uint32
	if clean {
		flags |= flagClean
	}
	buf.Write(le.AppendUint32(nil, dirtyVersion))
	buf.Write(le.AppendUint32(nil, flags))
	buf.Write(le.AppendUint64(nil, m.epoch))
	buf.Write(le.AppendUint64(nil, m.gen+1))
	buf.Write(le.AppendUint64(nil, uint64(m.size)))
	buf.Write(le.AppendUint64(nil, uint64(m.grain)))
	w := make([]byte, 8)
	for i := range m.cur {
		le.PutUint64(w, m.cur[i]|m.taken[i])
		buf.Write(w)
	}
	buf.Write(le.AppendUint32(nil, crc32.Checksum(buf.Bytes(), castagnoli)))
	if err := writeFileAtomic(m.path, buf.Bytes()); err != nil {
		return fmt.Errorf("replicate: saving dirty map: %w", err)
	}
	m.gen++
	return nil
}

// Mark records that [off, off+n) was written. Bytes past the map's size
// are ignored (a disk that grows is a resize: the cycle compares
// everything).
func (m *DirtyMap) Mark(off, n int64) {
	if n <= 0 || off < 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	end := min(off+n, m.size)
	for b := off / m.grain; b*m.grain < end; b++ {
		m.cur[b/64] |= 1 << (b % 64)
	}
}

// Invalidate says the map missed writes (the tracker overflowed, events
// were lost): it is not trusted until a full cycle succeeds.
func (m *DirtyMap) Invalidate(why string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.trusted, m.why = false, why
	m.inv++
}

// Trusted reports whether the map is trusted now, and why not: a map
// invalidated after the Take (a feed found damaged while the cycle froze
// its source) must not hint that cycle.
func (m *DirtyMap) Trusted() (bool, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.trusted, m.why
}

// Invalidations counts the Invalidate calls so far (see DoneSince).
func (m *DirtyMap) Invalidations() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.inv
}

// Take hands the marked ranges to a cycle and starts a new round of
// marking; call it before freezing the source. Ranges taken by an earlier
// cycle that did not finish (no Done) are included again. trusted is
// false, with the reason, when the map cannot be relied on; the ranges
// are then meaningless and the cycle must compare everything.
func (m *DirtyMap) Take() (ranges []disk.Range, trusted bool, why string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range m.cur {
		m.taken[i] |= m.cur[i]
		m.cur[i] = 0
	}
	return m.rangesLocked(m.taken), m.trusted, m.why
}

// Peek returns the ranges marked since the last Take, without taking
// them: they stay for the next cycle. The replicator adds them to a
// cycle's hints after freezing, so that a write marked between the Take
// and the freeze (in the view, or not) is compared now and again next
// time.
func (m *DirtyMap) Peek() []disk.Range {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rangesLocked(m.cur)
}

// Done says the cycle that took the ranges finished: they are forgotten,
// the map is trusted from now on (the cycle was either hinted by a trusted
// map or compared everything), and the map is saved.
func (m *DirtyMap) Done() error {
	return m.DoneSince(m.Invalidations())
}

// DoneSince is Done for a cycle whose view was frozen when Invalidations
// was inv: the map is trusted again only if it was not invalidated since
// (events lost after the freeze are not covered by that cycle).
func (m *DirtyMap) DoneSince(inv uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.taken)
	if m.inv == inv {
		m.trusted, m.why = true, ""
	}
	return m.saveLocked(false)
}

// Generation returns the map's epoch and generation (see DirtyMap).
func (m *DirtyMap) Generation() (epoch, gen uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.epoch, m.gen
}

// Save writes the map to its file (it stays marked open).
func (m *DirtyMap) Save() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.saveLocked(false)
}

// Close saves the map as cleanly closed. Marks after Close are kept in
// memory only.
func (m *DirtyMap) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	return m.saveLocked(m.trusted)
}

// Size and Grain describe the map.
func (m *DirtyMap) Size() int64  { return m.size }
func (m *DirtyMap) Grain() int64 { return m.grain }

// rangesLocked turns set bits into merged byte ranges clipped to size.
func (m *DirtyMap) rangesLocked(w []uint64) []disk.Range {
	var out []disk.Range
	for i, x := range w {
		for x != 0 {
			t := bits.TrailingZeros64(x)
			b := int64(i)*64 + int64(t)
			x &^= 1 << t
			off := b * m.grain
			r := disk.Range{Off: off, Len: min(m.grain, m.size-off)}
			if k := len(out); k > 0 && out[k-1].End() == r.Off {
				out[k-1].Len += r.Len
			} else {
				out = append(out, r)
			}
		}
	}
	return out
}
