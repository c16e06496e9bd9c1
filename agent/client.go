package agent

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// Defaults of Client.
const (
	// DefaultWriteBuffer bounds the bytes of writes queued or sent and
	// not yet acknowledged: about 100 ms at 2.5 Gbit/s.
	DefaultWriteBuffer = 32 << 20
	// DefaultHashWindow is how many block hashes the agent may send
	// ahead of the comparison (4 GiB of disk at 64 KiB blocks).
	DefaultHashWindow = 1 << 16
	// DefaultCloseTimeout bounds how long Close waits for queued writes
	// to be acknowledged.
	DefaultCloseTimeout = 2 * time.Minute
	// clientHandshakeTimeout bounds the TLS handshake, the hello and the
	// welcome on the client's side: the agent's own limit
	// (ServerOptions.HandshakeTimeout) plus its wait for a disk that a
	// session of its own is releasing, with room to spare.
	clientHandshakeTimeout = 10 * time.Second
)

// Client says how to reach an agent and prove who is asking. It is a
// plain value: the zero value of every field but Addr means its default,
// and one Client may open any number of disks, concurrently.
type Client struct {
	// Addr is the agent's host:port.
	Addr string

	// Token is the bearer token (see NewToken). Required unless the
	// agent uses mutual TLS alone. It is sent only inside TLS, after the
	// agent's certificate has been verified, and is never logged nor put
	// in an error or an Identity.
	Token string

	// RootCAs verifies the agent's certificate chain and host name.
	// Default (nil, and no Pin): the system's roots.
	RootCAs *x509.CertPool

	// Pin, when set, is the hex SHA-256 of the agent's certificate (see
	// CertificatePin), optionally prefixed "sha256:". The certificate
	// must match it; without RootCAs the pin alone is checked.
	Pin string

	// Certificate is the client certificate for agents that use mutual
	// TLS. Default none.
	Certificate *tls.Certificate

	// WriteBuffer bounds, in bytes, the writes queued or in flight and
	// not yet acknowledged by the agent: WriteAt waits when it is full.
	// It should cover the bandwidth-delay product of the link. Default
	// 32 MiB.
	WriteBuffer int64

	// HashWindow is how many block hashes the agent may send before the
	// comparison has taken them (flow control of hash streams). Default
	// 65536; at least 16.
	HashWindow int

	// SocketBuffer is the TCP buffer size aimed at (see DefaultSocketBuffer).
	// Negative leaves the buffers alone.
	SocketBuffer int

	// DialContext, when set, opens the TCP connection (for tests and
	// proxies). Default: a net.Dialer with 15 s keep-alives.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// CloseTimeout bounds how long Close waits for queued writes to be
	// acknowledged. Default 2 min.
	CloseTimeout time.Duration

	// protos replaces the protocol versions offered (tests of an old
	// client).
	protos []string
}

// ParseURL splits agent://HOST:PORT/DISK into the agent's address and
// the disk's name.
func ParseURL(s string) (addr, disk string, err error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", "", badOptions("agent URL: %v", err)
	}
	if u.Scheme != "agent" {
		return "", "", badOptions("agent URL %q does not start with agent://", s)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", "", badOptions("agent URL %q: only agent://HOST:PORT/DISK is accepted (tokens go in the environment or a file)", redact(u))
	}
	if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" {
		return "", "", badOptions("agent URL %q has no HOST:PORT", s)
	}
	disk = strings.TrimPrefix(u.Path, "/")
	if !ValidDiskName(disk) {
		return "", "", badOptions("agent URL %q: bad disk name %q", s, disk)
	}
	return u.Host, disk, nil
}

func redact(u *url.URL) string {
	v := *u
	v.User, v.RawQuery, v.Fragment = nil, "", ""
	return v.String()
}

// OpenTarget opens the agent's disk name for writing (and reading and
// hashing), under the agent's exclusive hold.
func (c *Client) OpenTarget(ctx context.Context, name string) (*Disk, error) {
	return c.open(ctx, name, modeWrite)
}

// OpenSource opens the agent's disk name for reading and hashing only.
func (c *Client) OpenSource(ctx context.Context, name string) (*Disk, error) {
	return c.open(ctx, name, modeRead)
}

func (c *Client) open(ctx context.Context, name string, mode uint8) (*Disk, error) {
	if !ValidDiskName(name) {
		return nil, badOptions("disk name %q", name)
	}
	host, _, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return nil, badOptions("agent address %q: %v", c.Addr, err)
	}
	budget := c.WriteBuffer
	if budget == 0 {
		budget = DefaultWriteBuffer
	}
	window := c.HashWindow
	if window == 0 {
		window = DefaultHashWindow
	}
	if budget < 0 || window < minCredit || window > maxCredit {
		return nil, badOptions("write buffer %d or hash window %d", c.WriteBuffer, c.HashWindow)
	}
	cfg, err := c.clientTLS(host)
	if err != nil {
		return nil, err
	}
	dial := c.DialContext
	if dial == nil {
		dial = (&net.Dialer{KeepAlive: 15 * time.Second}).DialContext
	}
	raw, err := dial(ctx, "tcp", c.Addr)
	if err != nil {
		return nil, fmt.Errorf("agent: connecting to %s: %w", c.Addr, err)
	}
	sb := c.SocketBuffer
	if sb == 0 {
		sb = DefaultSocketBuffer
	}
	tuneSocket(raw, sb)
	// The handshake and hello obey ctx.
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	d, err := c.handshake(ctx, raw, cfg, name, mode)
	if !stop() || err != nil {
		raw.Close()
		if err == nil || ctx.Err() != nil {
			err = errors.Join(ctx.Err(), err)
		}
		return nil, err
	}
	if d.codec, err = newCodec(); err != nil {
		raw.Close()
		return nil, err
	}
	d.addr, d.budget, d.window = c.Addr, budget, window
	d.closeTimeout = c.CloseTimeout
	if d.closeTimeout <= 0 {
		d.closeTimeout = DefaultCloseTimeout
	}
	d.start()
	return d, nil
}

// handshake does TLS, sends the hello and reads the welcome.
func (c *Client) handshake(ctx context.Context, raw net.Conn, cfg *tls.Config, name string, mode uint8) (*Disk, error) {
	_ = raw.SetDeadline(time.Now().Add(clientHandshakeTimeout))
	bc := newBatchConn(raw)
	tc := tls.Client(bc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("agent: TLS handshake with %s: %w", c.Addr, err)
	}
	proto := tc.ConnectionState().NegotiatedProtocol
	if proto != alpn3 && proto != alpn2 && proto != alpn1 {
		return nil, fmt.Errorf("%w: %s does not speak %s", ErrProtocol, c.Addr, strings.Join(alpns, " or "))
	}
	h := make([]byte, headerSize, 128)
	h = append(h, helloMagic[:]...)
	h = append(h, mode)
	h = appendStr(h, c.Token)
	h = appendStr(h, name)
	putHeader(h, mHello, 0)
	if _, err := tc.Write(h); err != nil {
		return nil, fmt.Errorf("agent: sending hello to %s: %w", c.Addr, err)
	}
	br := bufio.NewReaderSize(tc, 256<<10)
	typ, _, p, err := readFrame(br, maxHello, func(_ uint8, n int) []byte { return make([]byte, n) })
	if err != nil {
		return nil, fmt.Errorf("agent: %s: reading welcome: %w", c.Addr, err)
	}
	d := dec{b: p}
	switch typ {
	case mFatal:
		err := readStatus(&d, "open "+name, -1, 0)
		if err == nil {
			err = protoErr("fatal message without an error")
		}
		return nil, err
	case mWelcome:
	default:
		return nil, protoErr("%s answered hello with message type %d", c.Addr, typ)
	}
	size := d.i64("welcome size")
	align := int64(d.u32("welcome alignment"))
	mw := int64(d.u32("welcome write limit"))
	inst := d.str(64, "welcome instance")
	var boot string
	if proto != alpn1 {
		boot = d.str(64, "welcome boot id")
	}
	if err := d.end("welcome"); err != nil {
		return nil, err
	}
	if align < 1 {
		align = 1
	}
	if mw <= 0 || mw > MaxWrite {
		mw = MaxWrite
	}
	_ = raw.SetDeadline(time.Time{})
	bc.batch()
	dk := &Disk{name: name, write: mode == modeWrite, conn: tc, bc: bc, br: br, align: align, maxWrite: mw, instance: inst, hostBoot: boot, proto: proto}
	dk.size.Store(size)
	return dk, nil
}
