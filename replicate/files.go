package replicate

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// pointLayout names a FileTarget's points and a group's manifests: UTC,
// fixed width, sorting as time does.
const pointLayout = "20060102T150405.000000000Z"

// writeFileAtomic replaces path with data: a temporary file in the same
// directory, fsync, rename, fsync of the directory. A crash leaves either
// the old file or the new one, never a mix.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// sealed is the envelope of a checksummed JSON file: the body's SHA-256
// is over its exact bytes.
type sealed struct {
	Kind   string          `json:"kind"`
	SHA256 string          `json:"sha256"`
	Body   json.RawMessage `json:"body"`
}

// sealJSON encodes v in a checksummed envelope.
func sealJSON(kind string, v any) ([]byte, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	return json.MarshalIndent(sealed{Kind: kind, SHA256: hex.EncodeToString(sum[:]), Body: body}, "", "  ")
}

// openJSON checks the envelope and decodes its body into v. Anything
// wrong is ErrCorrupt.
func openJSON(kind string, b []byte, v any) error {
	var s sealed
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if s.Kind != kind {
		return fmt.Errorf("%w: a %q file, want %q", ErrCorrupt, s.Kind, kind)
	}
	// MarshalIndent re-indents the raw body: compact it before hashing.
	var body []byte
	if c, err := compact(s.Body); err == nil {
		body = c
	} else {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	sum := sha256.Sum256(body)
	if hex.EncodeToString(sum[:]) != s.SHA256 {
		return fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return nil
}

func compact(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
