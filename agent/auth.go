package agent

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Token is a bearer token as an agent knows it: the SHA-256 of the token
// (the agent never holds the token itself), the disks it opens, and when
// it expires.
type Token struct {
	// Hash is HashToken of the token.
	Hash [32]byte
	// Disks are the names of the disks the token opens; "*" opens all.
	Disks []string
	// Expires is when the token stops being accepted. The zero time
	// means never.
	Expires time.Time
}

// allows reports whether the token opens disk at time now.
func (t *Token) allows(disk string, now time.Time) (bool, string) {
	if !t.Expires.IsZero() && !now.Before(t.Expires) {
		return false, "token expired"
	}
	if slices.Contains(t.Disks, "*") || slices.Contains(t.Disks, disk) {
		return true, ""
	}
	return false, "token not valid for this disk"
}

// NewToken returns a fresh random bearer token (256 bits, URL-safe
// base64) from the operating system's generator.
func NewToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// HashToken returns the SHA-256 of a token, which is what an agent keeps.
func HashToken(token string) [32]byte { return sha256.Sum256([]byte(token)) }

// FormatToken returns t as a line of a token file (see ParseTokens).
func FormatToken(t Token) string {
	s := "sha256:" + hex.EncodeToString(t.Hash[:]) + " " + strings.Join(t.Disks, ",")
	if !t.Expires.IsZero() {
		s += " " + t.Expires.UTC().Format(time.RFC3339)
	}
	return s
}

var diskName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidDiskName reports whether s can name a disk: 1 to 64 letters,
// digits, dots, underscores and hyphens, starting with a letter or digit.
func ValidDiskName(s string) bool { return diskName.MatchString(s) }

// ParseTokens reads a token file: one token a line, as
//
//	sha256:<64 hex digits> <disk>[,<disk>...] [<expiry, RFC 3339>]
//
// where a disk "*" means every disk and a missing expiry means never.
// Blank lines and lines starting with # are ignored.
func ParseTokens(r io.Reader) ([]Token, error) {
	var ts []Token
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		f := strings.Fields(s)
		if len(f) < 2 || len(f) > 3 {
			return nil, fmt.Errorf("agent: token file line %d: want 'sha256:HEX DISKS [EXPIRY]'", line)
		}
		var t Token
		h, ok := strings.CutPrefix(f[0], "sha256:")
		if b, err := hex.DecodeString(h); !ok || err != nil || len(b) != 32 {
			return nil, fmt.Errorf("agent: token file line %d: the hash is not sha256: and 64 hex digits", line)
		} else {
			copy(t.Hash[:], b)
		}
		for d := range strings.SplitSeq(f[1], ",") {
			if d != "*" && !ValidDiskName(d) {
				return nil, fmt.Errorf("agent: token file line %d: bad disk name %q", line, d)
			}
			t.Disks = append(t.Disks, d)
		}
		if len(f) == 3 {
			e, err := time.Parse(time.RFC3339, f[2])
			if err != nil {
				return nil, fmt.Errorf("agent: token file line %d: expiry: %v", line, err)
			}
			t.Expires = e
		}
		ts = append(ts, t)
	}
	return ts, sc.Err()
}

// findToken returns the token whose hash is that of token, comparing every
// hash in constant time, or nil.
func findToken(ts []Token, token string) *Token {
	if token == "" {
		return nil
	}
	h := HashToken(token)
	var found *Token
	for i := range ts {
		if subtle.ConstantTimeCompare(h[:], ts[i].Hash[:]) == 1 {
			found = &ts[i]
		}
	}
	return found
}
