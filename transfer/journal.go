package transfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/deltasync/deltasync/disk"
)

// JournalStore keeps journals by key. Keys are short lowercase hex
// strings. Implementations must be safe for concurrent use by runs with
// different keys.
type JournalStore interface {
	// Load returns the journal saved under key, or an error satisfying
	// errors.Is(err, fs.ErrNotExist) when there is none.
	Load(ctx context.Context, key string) ([]byte, error)
	// Save stores data under key atomically: a later Load returns the
	// old journal or the new one, never a mixture or a truncated one,
	// even across a crash, and once Save returns the new one is durable.
	Save(ctx context.Context, key string, data []byte) error
	// Delete removes the journal under key; a missing one is not an error.
	Delete(ctx context.Context, key string) error
}

var (
	_ JournalStore = DirStore{}
	_ JournalStore = (*MemStore)(nil)
)

// DirStore keeps each journal as a file "<key>.journal" in a directory,
// created (mode 0700) when first needed. Save writes a temporary file,
// syncs it, renames it over the old one and syncs the directory. The zero
// value uses DefaultStateDir.
type DirStore struct {
	// Dir is the directory. Default: DefaultStateDir().
	Dir string
}

// DefaultStateDir returns $XDG_STATE_HOME/deltasync, or, when that is not
// set, ~/.local/state/deltasync. It reads the environment when called.
func DefaultStateDir() (string, error) {
	d, err := disk.DefaultStateDir()
	if err != nil {
		return "", fmt.Errorf("transfer: for journals: %w", err)
	}
	return d, nil
}

func (s DirStore) path(key string) (dir, file string, err error) {
	if !validKey(key) {
		return "", "", fmt.Errorf("%w: journal key %q", ErrBadOptions, key)
	}
	dir = s.Dir
	if dir == "" {
		if dir, err = DefaultStateDir(); err != nil {
			return "", "", err
		}
	}
	return dir, filepath.Join(dir, key+".journal"), nil
}

func validKey(key string) bool {
	if key == "" || len(key) > 128 {
		return false
	}
	return strings.Trim(key, "0123456789abcdef") == ""
}

// Load reads the journal file of key.
func (s DirStore) Load(ctx context.Context, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	_, file, err := s.path(key)
	if err != nil {
		return nil, err
	}
	// Refuse what is not a journal before reading it: a FIFO would
	// block, a device (a symlink to /dev/zero) would be read forever.
	f, err := os.OpenFile(file, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	refuse := func(why string) error {
		return &JournalError{Key: key, Path: file, Reason: why + "; remove it, or pass -journal-dir to keep journals elsewhere"}
	}
	if !fi.Mode().IsRegular() {
		return nil, refuse(fmt.Sprintf("it is not a regular file (%v)", fi.Mode().Type()))
	}
	if fi.Size() > maxJournalFile {
		return nil, refuse(fmt.Sprintf("it has %d bytes, more than a journal's %d", fi.Size(), maxJournalFile))
	}
	b, err := io.ReadAll(io.LimitReader(f, maxJournalFile+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > maxJournalFile {
		return nil, refuse("it grew past a journal's size while read")
	}
	return b, nil
}

// Save writes the journal file of key atomically and durably.
func (s DirStore) Save(ctx context.Context, key string, data []byte) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	dir, file, err := s.path(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// Temporary files of saves that were killed: runs of one key never
	// save at once (the target's exclusive hold), so any is stale.
	if stale, err := filepath.Glob(filepath.Join(dir, key+".tmp-*")); err == nil {
		for _, p := range stale {
			os.Remove(p)
		}
	}
	f, err := os.CreateTemp(dir, key+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), file); err != nil {
		return err
	}
	return syncDir(dir)
}

// Delete removes the journal file of key.
func (s DirStore) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dir, file, err := s.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(file); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// MemStore keeps journals in memory: for tests, and for callers that keep
// journals elsewhere and copy them in and out. The zero value is ready.
type MemStore struct {
	mu sync.Mutex
	m  map[string][]byte
}

// Load returns a copy of the journal of key.
func (s *MemStore) Load(ctx context.Context, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[key]
	if !ok {
		return nil, fmt.Errorf("transfer: journal %s: %w", key, fs.ErrNotExist)
	}
	return bytes.Clone(b), nil
}

// Save stores a copy of data under key.
func (s *MemStore) Save(ctx context.Context, key string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[string][]byte)
	}
	s.m[key] = bytes.Clone(data)
	return nil
}

// Delete removes the journal of key.
func (s *MemStore) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, key)
	return nil
}

// Keys returns the keys of the journals held, in no particular order.
func (s *MemStore) Keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.m))
	for k := range s.m {
		keys = append(keys, k)
	}
	return keys
}

// journalIdentity is what makes two runs the same run: a journal is
// trusted only when all of it is equal.
type journalIdentity struct {
	SourceID       string `json:"source_id"`
	TargetID       string `json:"target_id"`
	SourceSize     int64  `json:"source_size"`
	TargetSize     int64  `json:"target_size"` // after growing or truncating
	SourceVersion  string `json:"source_version,omitempty"`
	BlockSize      int    `json:"block_size"`
	Align          int64  `json:"align"`
	Offset         int64  `json:"offset"`
	Length         int64  `json:"length"`
	TruncateExcess bool   `json:"truncate_excess"`
	// Hints is a digest of Options.Hints ("" without hints): a journal of
	// a hinted run does not resume an unhinted one, or the reverse.
	Hints string `json:"hints,omitempty"`
}

// journalRecord is a saved journal.
type journalRecord struct {
	Identity journalIdentity `json:"identity"`
	// Watermark: everything in [Offset, Watermark) was compared and
	// written; flushed too, unless BootID is set.
	Watermark int64 `json:"watermark"`
	// BootID, when set, is the boot of the machine that saved the record
	// without flushing the target first: the record holds only within
	// that boot (see DurableEnd).
	BootID string `json:"boot_id,omitempty"`
	// Witness is the token of the run's Watch (see Witness); it may hold
	// a secret, such as a lease ID, so a record is never printed.
	Witness string `json:"witness,omitempty"`
	// Evidence is what the Watch recorded when the run stopped cleanly;
	// "" while the run writes, or after it was killed.
	Evidence string `json:"evidence,omitempty"`
	// Poisoned, when set, says why nothing this run wrote may be trusted
	// (a write or flush of the target failed, a lease was lost). A rerun
	// discards the record and compares everything; after a failed flush,
	// reading the disks with O_DIRECT (FlushFailed).
	Poisoned    string `json:"poisoned,omitempty"`
	FlushFailed bool   `json:"flush_failed,omitempty"`
}

// journalKey names the journal of a target and range.
func journalKey(targetID string, offset, length int64) string {
	h := sha256.New()
	fmt.Fprintf(h, "deltasync journal v1\x00%s\x00%d\x00%d", targetID, offset, length)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// The journal's encoding: magic, big-endian payload length, the JSON
// payload, and the SHA-256 of all that precedes it.
var journalMagic = [8]byte{'D', 'S', 'J', 'R', 'N', 'L', '0', '1'}

const maxJournal = 1 << 20

// maxJournalFile is the largest journal file: header, payload, checksum.
const maxJournalFile = int64(len(journalMagic) + 4 + maxJournal + sha256.Size)

func encodeJournal(r journalRecord) ([]byte, error) {
	payload, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(journalMagic)+4+len(payload)+sha256.Size)
	b = append(b, journalMagic[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	b = append(b, payload...)
	sum := sha256.Sum256(b)
	return append(b, sum[:]...), nil
}

// decodeJournal checks and decodes a journal; the error says what is wrong.
func decodeJournal(b []byte) (journalRecord, error) {
	var r journalRecord
	hdr := len(journalMagic) + 4
	if len(b) < hdr+sha256.Size {
		return r, fmt.Errorf("truncated (%d bytes)", len(b))
	}
	if !bytes.Equal(b[:len(journalMagic)], journalMagic[:]) {
		return r, errors.New("not a journal of this version")
	}
	n := int(binary.BigEndian.Uint32(b[len(journalMagic):hdr]))
	if n > maxJournal || hdr+n+sha256.Size != len(b) {
		return r, fmt.Errorf("length %d does not match its %d bytes (truncated?)", n, len(b))
	}
	sum := sha256.Sum256(b[:hdr+n])
	if !bytes.Equal(sum[:], b[hdr+n:]) {
		return r, errors.New("checksum mismatch (corrupt)")
	}
	dec := json.NewDecoder(bytes.NewReader(b[hdr : hdr+n]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, fmt.Errorf("undecodable: %v", err)
	}
	return r, nil
}

// mismatch names the first field in which a journal's identity differs
// from this run's, or returns "".
func (j journalIdentity) mismatch(now journalIdentity) string {
	diff := func(name string, a, b any) string {
		return fmt.Sprintf("%s differs (journal %v, this run %v)", name, a, b)
	}
	switch {
	case j.SourceID != now.SourceID:
		return diff("source identity", fmt.Sprintf("%q", j.SourceID), fmt.Sprintf("%q", now.SourceID))
	case j.TargetID != now.TargetID:
		return diff("target identity", fmt.Sprintf("%q", j.TargetID), fmt.Sprintf("%q", now.TargetID))
	case j.SourceSize != now.SourceSize:
		return diff("source size", j.SourceSize, now.SourceSize)
	case j.TargetSize != now.TargetSize:
		return diff("target size", j.TargetSize, now.TargetSize)
	case j.SourceVersion != now.SourceVersion:
		return diff("source version", fmt.Sprintf("%q", j.SourceVersion), fmt.Sprintf("%q", now.SourceVersion))
	case j.BlockSize != now.BlockSize:
		return diff("block size", j.BlockSize, now.BlockSize)
	case j.Align != now.Align:
		return diff("alignment", j.Align, now.Align)
	case j.Offset != now.Offset || j.Length != now.Length:
		return diff("range", fmt.Sprintf("[%d,+%d)", j.Offset, j.Length), fmt.Sprintf("[%d,+%d)", now.Offset, now.Length))
	case j.TruncateExcess != now.TruncateExcess:
		return diff("TruncateExcess", j.TruncateExcess, now.TruncateExcess)
	case j.Hints != now.Hints:
		return diff("hints", j.Hints, now.Hints)
	}
	return ""
}

// hintsDigest names a set of hints for the journal's identity.
func hintsDigest(hs []disk.Range) string {
	if hs == nil {
		return ""
	}
	h := sha256.New()
	var b [16]byte
	for _, r := range hs {
		binary.BigEndian.PutUint64(b[:8], uint64(r.Off))
		binary.BigEndian.PutUint64(b[8:], uint64(r.Len))
		h.Write(b[:])
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}
