package agent

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

// rawConn is a hand-driven client: it speaks frames over TLS (or not)
// without the Client's rules, to send what a hostile client would.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string, cfg *tls.Config) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if cfg != nil {
		tc := tls.Client(c, cfg)
		if err := tc.Handshake(); err != nil {
			c.Close()
			t.Fatalf("handshake: %v", err)
		}
		c = tc
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (r *rawConn) send(frames ...[]byte) {
	r.t.Helper()
	for _, f := range frames {
		if _, err := r.c.Write(f); err != nil {
			r.t.Logf("send: %v", err)
			return
		}
	}
}

// until reads frames until one of type typ, or the end; it returns the
// frame's payload, or nil at the end.
func (r *rawConn) until(typ uint8) []byte {
	for {
		t, _, p, err := readFrame(r.br, MaxPayload, func(_ uint8, n int) []byte { return make([]byte, n) })
		if err != nil {
			return nil
		}
		if t == typ {
			return p
		}
	}
}

// fatalCode reads until the agent's fatal message and returns its code,
// or 0 if the connection ended without one.
func (r *rawConn) fatalCode() (uint8, string) {
	p := r.until(mFatal)
	if p == nil {
		return 0, ""
	}
	d := dec{b: p}
	err := readStatus(&d, "session", -1, 0)
	var re *RemoteError
	if !errors.As(err, &re) {
		r.t.Fatalf("fatal message: %v", err)
	}
	return re.Code, re.Msg
}

func helloFrame(mode uint8, token, disk string) []byte {
	p := append([]byte(nil), helloMagic[:]...)
	p = append(p, mode)
	p = appendStr(p, token)
	p = appendStr(p, disk)
	return frame(mHello, 0, p)
}

func writeFrame(off int64, data []byte) []byte {
	p := []byte{0}
	p = binary.AppendUvarint(p, uint64(off))
	return frame(mWrite, 0, append(p, data...))
}

func pinTLS(pin string) *tls.Config {
	c := &Client{Pin: pin}
	cfg, err := c.clientTLS("127.0.0.1")
	if err != nil {
		panic(err)
	}
	return cfg
}

// TestRefusals: every way in without the right credentials is refused
// before anything is done, even when writes are sent right behind the
// hello without waiting for an answer; the disk stays as it was.
func TestRefusals(t *testing.T) {
	rng := newRand(t)
	orig := randBytes(rng, 1<<20)
	good, _ := NewToken()
	expired, _ := NewToken()
	other, _ := NewToken()
	all, _ := NewToken()
	a := startAgent(t, map[string][]byte{"d": orig, "other": orig}, func(o *ServerOptions) {
		o.Tokens = []Token{
			{Hash: HashToken(good), Disks: []string{"d"}, Expires: time.Now().Add(time.Hour)},
			{Hash: HashToken(expired), Disks: []string{"d"}, Expires: time.Now().Add(-time.Minute)},
			{Hash: HashToken(other), Disks: []string{"other"}},
			{Hash: HashToken(all), Disks: []string{"*"}},
		}
	})
	junk := bytes.Repeat([]byte{0xAB}, 64<<10)
	for _, tc := range []struct {
		name, token, disk string
		want              error
		code              uint8
	}{
		{"no token", "", "d", ErrUnauthorized, codeUnauthorized},
		{"wrong token", good + "x", "d", ErrUnauthorized, codeUnauthorized},
		{"expired token", expired, "d", ErrUnauthorized, codeUnauthorized},
		{"token for another disk", other, "d", ErrUnauthorized, codeUnauthorized},
		{"unknown disk, scoped token", good, "nope", ErrUnauthorized, codeUnauthorized},
		{"unknown disk", all, "nope", ErrNoDisk, codeNoDisk},
		{"path as disk name", all, "../d.img", ErrBadOptions, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := a.client()
			c.Token = tc.token
			_, err := c.OpenTarget(withTimeout(t, 10*time.Second), tc.disk)
			if !errors.Is(err, tc.want) {
				t.Fatalf("open: %v, want %v", err, tc.want)
			}
			if tc.token != "" && strings.Contains(err.Error(), tc.token) {
				t.Fatalf("the error repeats the token: %v", err)
			}
			t.Log(err)
			if tc.code != 0 {
				// Pipelined: hello, writes and a flush at once.
				r := dialRaw(t, a.addr, pinTLS(a.pin))
				r.send(helloFrame(modeWrite, tc.token, tc.disk), writeFrame(0, junk), frame(mFlush, 1, nil))
				if code, msg := r.fatalCode(); code != tc.code {
					t.Fatalf("raw session: code %d (%s), want %d", code, msg, tc.code)
				}
			}
			sameBytes(t, "disk after refusal", a.bytes(t, "d"), orig)
		})
	}

	t.Run("plaintext", func(t *testing.T) {
		r := dialRaw(t, a.addr, nil)
		r.send(helloFrame(modeWrite, all, "d"), writeFrame(0, junk), frame(mFlush, 1, nil))
		b, _ := io.ReadAll(r.br)
		if bytes.Contains(b, []byte{mWelcome}) && len(b) > 0 && b[0] == mWelcome {
			t.Fatal("a plaintext client was welcomed")
		}
		t.Logf("plaintext: %d bytes back (a TLS alert at most)", len(b))
		sameBytes(t, "disk after plaintext", a.bytes(t, "d"), orig)
	})

	t.Run("wrong pin", func(t *testing.T) {
		c := a.client()
		c.Pin = strings.Repeat("ab", 32)
		if _, err := c.OpenTarget(withTimeout(t, 10*time.Second), "d"); err == nil || !strings.Contains(err.Error(), "pin") {
			t.Fatalf("open with a wrong pin: %v", err)
		}
	})

	t.Run("unknown CA", func(t *testing.T) {
		c := a.client()
		c.Token = all
		c.Pin = ""
		c.RootCAs = x509.NewCertPool() // trusts nothing
		if _, err := c.OpenTarget(withTimeout(t, 10*time.Second), "d"); err == nil {
			t.Fatal("an unverified agent was accepted")
		}
		c.RootCAs.AppendCertsFromPEM(a.cert)
		d, err := c.OpenTarget(withTimeout(t, 10*time.Second), "d")
		if err != nil {
			t.Fatalf("with the agent's certificate as CA: %v", err)
		}
		d.Close()
	})
}

// testCA is a certificate authority for client certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

func (ca *testCA) client(t *testing.T) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestMutualTLS: with ClientCAs, a client certificate from the agent's
// authority opens disks without a token; one from another authority, or
// none, is refused in the handshake and the disk stays as it was.
func TestMutualTLS(t *testing.T) {
	rng := newRand(t)
	orig := randBytes(rng, 1<<20)
	ours, theirs := newCA(t, "ours"), newCA(t, "theirs")
	a := startAgent(t, map[string][]byte{"d": orig}, func(o *ServerOptions) {
		o.Tokens = nil
		o.ClientCAs = ours.pool
	})
	junk := bytes.Repeat([]byte{0xCD}, 64<<10)
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
	}{{"no certificate", nil}, {"certificate from another authority", theirs.client(t)}} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Client{Addr: a.addr, Pin: a.pin, Certificate: tc.cert}
			_, err := c.OpenTarget(withTimeout(t, 10*time.Second), "d")
			if err == nil {
				t.Fatal("accepted")
			}
			t.Log(err)
			cfg := pinTLS(a.pin)
			if tc.cert != nil {
				cfg.Certificates = []tls.Certificate{*tc.cert}
			}
			// TLS 1.3 finishes the client's side of the handshake before
			// the agent checks the certificate: send at once, and the
			// agent must still refuse.
			raw, err := net.Dial("tcp", a.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			tcn := tls.Client(raw, cfg)
			_ = tcn.SetDeadline(time.Now().Add(5 * time.Second))
			if err := tcn.Handshake(); err == nil {
				tcn.Write(helloFrame(modeWrite, "", "d"))
				tcn.Write(writeFrame(0, junk))
				tcn.Write(frame(mFlush, 1, nil))
				b, _ := io.ReadAll(tcn)
				if len(b) > 0 && b[0] == mWelcome {
					t.Fatal("welcomed")
				}
			}
			sameBytes(t, "disk", a.bytes(t, "d"), orig)
		})
	}
	c := &Client{Addr: a.addr, Pin: a.pin, Certificate: ours.client(t)}
	d, err := c.OpenTarget(withTimeout(t, 10*time.Second), "d")
	if err != nil {
		t.Fatalf("our client certificate: %v", err)
	}
	if _, err := d.WriteAt(junk, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(withTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if !bytes.Equal(a.bytes(t, "d")[:len(junk)], junk) {
		t.Fatal("the authorised write is missing")
	}
}

// TestHostileStream: after a valid hello, malformed or oversized messages
// end the session with a protocol error, never a panic, and the writes
// applied before them stay.
func TestHostileStream(t *testing.T) {
	rng := newRand(t)
	orig := randBytes(rng, 1<<20)
	first := bytes.Repeat([]byte{0x11}, 4096)
	bigHeader := appendHeader(nil, mWrite, MaxPayload+1, 0)
	for _, tc := range []struct {
		name string
		f    []byte
	}{
		{"unknown type", frame(99, 0, []byte{1, 2, 3})},
		{"oversized", append(bigHeader, make([]byte, 100)...)},
		{"unknown write flags", frame(mWrite, 0, []byte{0x80, 0, 1, 2})},
		{"bad compressed data", frame(mWrite, 0, []byte{flagCompressed, 0, 0x80, 0x20, 1, 2, 3, 4})},
		{"compressed length lies", frame(mWrite, 0, append([]byte{flagCompressed, 0, 10}, mustZstd(t, bytes.Repeat([]byte{1}, 5000))...))},
		{"truncated zero", frame(mZero, 0, []byte{0x80})},
		{"read too long", frame(mRead, 1, appendVarints(nil, 0, maxRead+1))},
		{"hash request malformed", frame(mHash, 1, []byte{1, 2})},
		{"credit beyond window", frame(mCredit, 0, []byte{0xff, 0xff, 0xff, 0xff})},
		{"second hello", helloFrame(modeWrite, "x", "d")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := startAgent(t, map[string][]byte{"d": orig}, nil)
			r := dialRaw(t, a.addr, pinTLS(a.pin))
			r.send(helloFrame(modeWrite, a.token, "d"), writeFrame(0, first))
			if tc.name == "credit beyond window" {
				// Open a stream first, so the credit has somewhere to go.
				h := []byte{1}
				h = append(h, make([]byte, 32)...)
				h = appendU32(h, 512) // 2048 blocks: the stream waits for credit
				h = appendU64(h, 0)
				h = appendU64(h, 0)
				h = appendU32(h, minCredit)
				h = append(h, 0, 0)
				r.send(frame(mHash, 7, h))
				if r.until(mHashes) == nil {
					t.Fatal("no hashes")
				}
				tc.f = frame(mCredit, 7, []byte{0x7f, 0xff, 0xff, 0xff})
			}
			r.send(tc.f, writeFrame(8192, first), frame(mFlush, 2, nil))
			code, msg := r.fatalCode()
			if code != codeProtocol {
				t.Fatalf("code %d (%s), want a protocol error", code, msg)
			}
			t.Log(msg)
			a.stop()
			got := a.bytes(t, "d")
			if !bytes.Equal(got[:4096], first) {
				t.Fatal("the write before the bad message was lost")
			}
			if !bytes.Equal(got[4096:], orig[4096:]) {
				t.Fatal("something after the bad message was applied")
			}
		})
	}
}

func mustZstd(t *testing.T, p []byte) []byte {
	c, err := newCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	return c.enc.EncodeAll(p, nil)
}
