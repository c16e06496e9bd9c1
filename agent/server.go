package agent

import (
	"bufio"
	"container/list"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/internal/bootid"
	"github.com/deltasync/deltasync/localdisk"
)

// Defaults of ServerOptions.
const (
	DefaultMaxSessions      = 64
	DefaultMaxHandshakes    = 16
	DefaultHandshakeTimeout = 3 * time.Second
	DefaultWriteTimeout     = 2 * time.Minute
)

// ServerOptions configure an agent. Disks, Certificate and at least one
// of Tokens and ClientCAs are required; the rest has defaults.
type ServerOptions struct {
	// Disks maps the names clients use to the paths of image files or
	// block devices. Only these are ever opened: no path from a client
	// is. A disk is opened when a session asks for it (as a target,
	// under localdisk's exclusive hold, or as a source) and closed when
	// the session ends, so two sessions cannot write one disk at once.
	Disks map[string]string

	// Certificate is the agent's TLS certificate (see SelfSigned).
	Certificate tls.Certificate

	// Tokens are the bearer tokens accepted (see ParseTokens). When
	// empty, ClientCAs must be set and a client certificate alone opens
	// every disk.
	Tokens []Token

	// ClientCAs, when set, turns on mutual TLS: every connection must
	// present a client certificate signed by one of these authorities,
	// checked in the TLS handshake. With Tokens too, a session needs
	// both a certificate and a token (which then scopes the disks).
	ClientCAs *x509.CertPool

	// AllowLive opens source sessions with localdisk's AllowLive: a disk
	// that is mounted or being written is read anyway (crash-inconsistent).
	AllowLive bool

	// ZeroMode is how target files clear ranges. Default PunchHoleMode.
	ZeroMode localdisk.ZeroMode

	// MaxSessions bounds the authenticated sessions served at once. A
	// client that authenticates while every one is taken is refused with
	// ErrAgentBusy ("agent busy: N sessions in use"). A connection takes
	// a session only once authenticated; before that it counts in
	// MaxHandshakes. Default 64.
	MaxSessions int

	// MaxHandshakes bounds the TLS handshakes under way: connections
	// whose ClientHello has arrived and that are not yet through the
	// hello and its checks. Connections not yet authenticated never take
	// a session; they have a budget of their own (see preauth.go):
	// MaxHandshakes of them in the handshake, each for at least 500 ms
	// when others wait; and 16 times as many that have not sent a
	// ClientHello or wait in line for a handshake, of which a new
	// connection displaces the oldest that has not sent its ClientHello.
	// So connections that stay idle or send their handshake slowly,
	// however many and however fast they come back, cannot keep out a
	// client that authenticates within a few round trips; each costs a
	// goroutine, a socket and a few KiB while it lasts. Default 16.
	MaxHandshakes int

	// HandshakeTimeout bounds the time from accepting a connection to the
	// end of its authentication (the TLS handshake, the hello and its
	// checks): a connection that takes longer is closed. Default 3 s.
	HandshakeTimeout time.Duration

	// WriteTimeout bounds each write to a client that stops reading.
	// Default 2 min.
	WriteTimeout time.Duration

	// FrameMemory bounds the bytes of client messages the agent holds at
	// once, across all its sessions: messages being received, queued for
	// the disk or being applied, and the decompressed copy of each
	// compressed write. A message of more than 4 KiB takes its share
	// (the size of its buffer, from 64 KiB to 8 MiB) once its header has
	// arrived and before its payload is read; while the budget is spent,
	// a session waits, first come first served, its client's next bytes
	// waiting in the network. Messages of at most 4 KiB are not counted:
	// a session holds at most 14 of them (112 KiB with their
	// decompressed copies). With each session's own buffers (about 1 MiB:
	// reading, writing, batching, TLS's records), the agent holds at most
	// FrameMemory + MaxSessions × 1.1 MiB for its clients' messages:
	// 256 + 70 MiB by default, whatever its authenticated clients send.
	// Not counted: what the agent sends (read replies and hashes queued
	// for a client that does not read, until WriteTimeout) and the hints
	// of hash requests (at most 1 MiB a stream, 4 streams a session).
	// Default 256 MiB; at least MinFrameMemory (12 MiB).
	FrameMemory int64

	// FrameTimeout bounds how long the payload of a message counted in
	// FrameMemory may take to arrive once its header has (waiting for
	// FrameMemory included; but the payload has at least 1 s once its
	// share is granted): a session whose client stalls in the middle of
	// one is ended, and what it held released. So clients that stall,
	// however many, hold up others' large messages by about FrameTimeout
	// at most. 4 MiB in 2 min is 280 kbit/s. Default 2 min.
	FrameTimeout time.Duration

	// HashConcurrency is blockdiff's Concurrency for hashing a disk.
	// Default blockdiff's (max(4, GOMAXPROCS)).
	HashConcurrency int

	// SocketBuffer is the TCP buffer size aimed at (see tuneSocket).
	// Default DefaultSocketBuffer; negative leaves the buffers alone.
	SocketBuffer int

	// Logf, when set, receives one line per session event (connection,
	// refusal and why, end). Tokens are never logged. Default: nothing.
	Logf func(format string, args ...any)

	// open replaces localdisk for tests; now replaces time.Now; bootID
	// replaces this machine's boot ID (tests that simulate a reboot);
	// protos replaces the protocol versions served (tests of an old
	// agent).
	open   func(path string, write bool) (serverDisk, error)
	now    func() time.Time
	bootID func() string
	protos []string
}

// serverDisk is what a session needs of a disk; *localdisk.Disk is one.
// HashBlocks is given the value itself, so blockdiff still finds its
// BackingFile (memory-mapped reads) and AllocatedRanges.
type serverDisk interface {
	io.ReaderAt
	io.WriterAt
	Size() int64
	ZeroRange(ctx context.Context, off, n int64) error
	Flush(ctx context.Context) error
	Resize(ctx context.Context, size int64) error
	WriteLimits() (align, maxWrite int64)
	AllocatedRanges(ctx context.Context, off, n int64) ([]disk.Range, error)
	Version(ctx context.Context) (string, error)
	DropCache(off, n int64) error
	Identity() string
	Close() error
}

// Server is an agent: it serves its disks to authenticated clients over
// TLS. Create it with NewServer; it may serve several listeners at once.
type Server struct {
	o     ServerOptions
	tls   *tls.Config
	codec *codec
	sem   chan struct{} // session slots, taken once authenticated
	// frames is FrameMemory, shared by the sessions (framemem.go).
	frames *frameBudget

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	held  map[string]*holder // disks open in sessions, by name
	book  witnessBook        // who wrote each disk, and evidence (witness.go)
	wg    sync.WaitGroup

	// The pre-authentication budget (see preauth.go): connections not
	// yet authenticated by the conn TLS runs on, those that have not sent
	// a ClientHello and those waiting for a handshake slot (oldest
	// first), the slots taken, and a channel closed when one may be free.
	pending    map[net.Conn]*pendingConn
	fresh      list.List
	waiting    list.List
	handshakes int
	hsWake     chan struct{}
	dropped    int  // connections dropped, since the last summary line
	quiet      int  // refusals not logged, since the last summary line
	logged     int  // refusals logged, since the last summary line
	summary    bool // a summary line is due
	sumSince   time.Time
	sumTimer   *time.Timer
	sumWG      sync.WaitGroup
}

// holder counts a disk's sessions; done is closed when the last ends.
type holder struct {
	n    int
	done chan struct{}
}

// hold registers a session on disk name and returns its release.
func (s *Server) hold(name string) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.held[name]
	if h == nil {
		h = &holder{done: make(chan struct{})}
		s.held[name] = h
	}
	h.n++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if h.n--; h.n == 0 {
			close(h.done)
			delete(s.held, name)
		}
	}
}

// openDisk opens a session's disk. When it is held by a session of this
// agent (typically one whose client just dropped, still applying what it
// received), it waits a little for that session to end.
func (s *Server) openDisk(ctx context.Context, name, path string, write bool) (serverDisk, error) {
	d, err := s.o.open(path, write)
	if err == nil || !errors.Is(err, localdisk.ErrLocked) {
		return d, err
	}
	s.mu.Lock()
	h := s.held[name]
	s.mu.Unlock()
	if h == nil {
		return nil, err
	}
	select {
	case <-h.done:
	case <-time.After(min(time.Second, s.o.HandshakeTimeout)):
		return nil, err
	case <-ctx.Done():
		return nil, err
	}
	return s.o.open(path, write)
}

// NewServer checks the options and returns a server.
func NewServer(o ServerOptions) (*Server, error) {
	if len(o.Disks) == 0 {
		return nil, badOptions("no disks to serve")
	}
	for name, path := range o.Disks {
		if !ValidDiskName(name) {
			return nil, badOptions("disk name %q (want 1 to 64 of A-Z a-z 0-9 . _ -)", name)
		}
		if path == "" {
			return nil, badOptions("disk %q has no path", name)
		}
	}
	if len(o.Certificate.Certificate) == 0 {
		return nil, badOptions("no TLS certificate")
	}
	if len(o.Tokens) == 0 && o.ClientCAs == nil {
		return nil, badOptions("no tokens and no client CAs: an agent never serves unauthenticated clients")
	}
	if o.MaxSessions == 0 {
		o.MaxSessions = DefaultMaxSessions
	}
	if o.MaxHandshakes == 0 {
		o.MaxHandshakes = DefaultMaxHandshakes
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.FrameMemory == 0 {
		o.FrameMemory = DefaultFrameMemory
	}
	if o.FrameTimeout == 0 {
		o.FrameTimeout = DefaultFrameTimeout
	}
	if o.SocketBuffer == 0 {
		o.SocketBuffer = DefaultSocketBuffer
	}
	if o.MaxSessions < 0 || o.MaxHandshakes < 0 || o.HandshakeTimeout < 0 || o.WriteTimeout < 0 || o.HashConcurrency < 0 || o.FrameTimeout < 0 {
		return nil, badOptions("negative limit")
	}
	if o.FrameMemory < MinFrameMemory {
		return nil, badOptions("FrameMemory %d: at least %d, the most one message holds", o.FrameMemory, MinFrameMemory)
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.protos == nil {
		o.protos = alpns
	}
	if o.bootID == nil {
		boot := bootid.Read()
		o.bootID = func() string { return boot }
	}
	if o.open == nil {
		o.open = openLocal(o.AllowLive, o.ZeroMode)
	}
	cd, err := newCodec()
	if err != nil {
		return nil, err
	}
	s := &Server{o: o, codec: cd, sem: make(chan struct{}, o.MaxSessions), conns: map[net.Conn]struct{}{},
		held: map[string]*holder{}, pending: map[net.Conn]*pendingConn{}, hsWake: make(chan struct{}),
		frames: newFrameBudget(o.FrameMemory)}
	s.tls = s.serverTLS()
	s.tls.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
		return nil, s.handshakeSlot(hi.Context(), hi.Conn)
	}
	return s, nil
}

// ListenAndServe listens on a TCP address and serves until ctx is
// cancelled.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	ln, err := (&net.ListenConfig{KeepAlive: 15 * time.Second}).Listen(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return s.Serve(ctx, ln)
}

// Serve accepts connections on ln until ctx is cancelled, then closes ln
// and every session's connection and returns nil once they have ended
// (each session first applies the writes it had received). Another
// error of ln is returned the same way.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		s.closeConns()
	})
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				s.wg.Wait()
				s.flushSummary()
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			s.closeConns()
			s.wg.Wait()
			s.flushSummary()
			return err
		}
		bc := newBatchConn(c)
		if !s.admit(c, bc) {
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.forgetLocked(bc)
				s.mu.Unlock()
				s.wg.Done()
			}()
			s.serveConn(ctx, c, bc)
		}()
	}
}

func (s *Server) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
	}
}

// Close releases the server's compressor. Serve must have returned.
func (s *Server) Close() error {
	s.codec.close()
	return nil
}

// hello is the first message of a session.
type hello struct {
	mode  uint8
	token string
	disk  string
}

func parseHello(p []byte) (hello, error) {
	d := dec{b: p}
	var h hello
	if m := d.bytes(len(helloMagic), "hello"); d.err != nil || [4]byte(m) != helloMagic {
		return h, protoErr("not a deltasync agent client (or another protocol version)")
	}
	h.mode = d.u8("hello mode")
	h.token = d.str(1024, "hello token")
	h.disk = d.str(64, "hello disk")
	if err := d.end("hello"); err != nil {
		return h, err
	}
	if h.mode != modeRead && h.mode != modeWrite {
		return h, protoErr("unknown session mode %d", h.mode)
	}
	return h, nil
}

// authorize decides whether the session may open the disk; the error is
// what the client is told.
func (s *Server) authorize(cs tls.ConnectionState, h hello) (path string, code uint8, why string) {
	if s.o.ClientCAs != nil && len(cs.VerifiedChains) == 0 {
		return "", codeUnauthorized, "no verified client certificate"
	}
	if len(s.o.Tokens) > 0 {
		t := findToken(s.o.Tokens, h.token)
		if t == nil {
			if h.token == "" {
				return "", codeUnauthorized, "no token"
			}
			return "", codeUnauthorized, "unknown token"
		}
		ok, why := t.allows(h.disk, s.o.now())
		if !ok {
			return "", codeUnauthorized, why
		}
	}
	p, ok := s.o.Disks[h.disk]
	if !ok {
		return "", codeNoDisk, "no disk named " + fmt.Sprintf("%q", h.disk)
	}
	return p, 0, ""
}

// serveConn runs one connection: TLS handshake, hello, authorization (all
// in the pre-authentication budget, within HandshakeTimeout), then, in a
// session slot, the session.
func (s *Server) serveConn(ctx context.Context, raw net.Conn, bc *batchConn) {
	defer raw.Close()
	peer := raw.RemoteAddr().String()
	_ = raw.SetDeadline(time.Now().Add(s.o.HandshakeTimeout))
	tc := tls.Server(bc, s.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		if !s.wasEvicted(bc) {
			s.refusedf("agent: %s: refused: TLS handshake: %v", peer, err)
		}
		return
	}
	s.advance(bc, stageTLS)
	// Until the welcome, writes pass straight through bc.
	refuse := func(code uint8, why string) {
		s.refusedf("agent: %s: refused: %s", peer, why)
		_, _ = tc.Write(frame(mFatal, 0, appendErr(nil, code, why)))
	}
	// The hello is read straight from TLS, which keeps what follows it;
	// the session's large buffer comes only after authentication.
	typ, _, p, err := readFrame(tc, maxHello, func(_ uint8, n int) []byte { return make([]byte, n) })
	if err != nil {
		if !s.wasEvicted(bc) {
			s.refusedf("agent: %s: refused: reading hello: %v", peer, err)
		}
		if errors.Is(err, ErrProtocol) {
			refuse(codeProtocol, err.Error())
		}
		return
	}
	if typ != mHello {
		refuse(codeProtocol, fmt.Sprintf("first message is of type %d, not hello", typ))
		return
	}
	h, err := parseHello(p)
	if err != nil {
		refuse(codeProtocol, err.Error())
		return
	}
	path, code, why := s.authorize(tc.ConnectionState(), h)
	if code != 0 {
		refuse(code, why)
		return
	}
	if !s.authenticated(bc) {
		return // displaced meanwhile: closed
	}
	// Opening the disk and the welcome get a deadline of their own.
	_ = raw.SetDeadline(time.Now().Add(s.o.HandshakeTimeout))
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	default:
		refuse(codeAgentBusy, fmt.Sprintf("agent busy: %d sessions in use; try again later", s.o.MaxSessions))
		return
	}
	if s.o.SocketBuffer > 0 {
		tuneSocket(raw, s.o.SocketBuffer)
	}
	br := bufio.NewReaderSize(tc, 256<<10)
	bw := newSender(tc, bc)
	d, err := s.openDisk(ctx, h.disk, path, h.mode == modeWrite)
	if err != nil {
		refuse(errCode(err), fmt.Sprintf("opening disk %q: %s", h.disk, errMsg(err)))
		return
	}
	release := s.hold(h.disk)
	defer release()
	defer d.Close()
	_ = raw.SetDeadline(time.Time{})
	align, mw := d.WriteLimits()
	sum := sha256.Sum256([]byte(d.Identity()))
	w := frame(mWelcome, 0, nil)[:headerSize]
	w = appendU64(w, uint64(d.Size()))
	w = appendU32(w, uint32(min(max(align, 1), 1<<30)))
	w = appendU32(w, uint32(min(max(mw, 0), 1<<30)))
	w = appendStr(w, hex.EncodeToString(sum[:8]))
	// The boot this agent's writes live in until flushed (see
	// Disk.HostBootID); "" when unknown. Versions 2 and 3 have the field.
	if np := tc.ConnectionState().NegotiatedProtocol; np == alpn2 || np == alpn3 {
		w = appendStr(w, s.o.bootID())
	}
	putHeader(w, mWelcome, 0)
	if _, err := bw.Write(w); err != nil {
		return
	}
	if err := bw.Flush(); err != nil {
		return
	}
	bc.batch()
	mode := "source"
	if h.mode == modeWrite {
		mode = "target"
	}
	s.o.Logf("agent: %s: session on disk %q as %s", peer, h.disk, mode)
	ss := newSession(s, d, h.mode == modeWrite)
	ss.setRD = func(t time.Time) { _ = raw.SetReadDeadline(t) }
	err = ss.run(ctx, br, bw, func(t time.Time) { _ = raw.SetWriteDeadline(t) }, func() { raw.Close() })
	if err != nil {
		s.o.Logf("agent: %s: session on disk %q ended: %v", peer, h.disk, err)
	} else {
		s.o.Logf("agent: %s: session on disk %q done", peer, h.disk)
	}
}

// errCode classifies a disk error for the client.
func errCode(err error) uint8 {
	switch {
	case errors.Is(err, localdisk.ErrOutOfRange):
		return codeOutOfRange
	case errors.Is(err, localdisk.ErrReadOnly):
		return codeReadOnly
	case errors.Is(err, localdisk.ErrLocked), errors.Is(err, localdisk.ErrMounted):
		return codeBusy
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return codeCanceled
	case errors.Is(err, ErrProtocol):
		return codeProtocol
	case errors.Is(err, ErrBadOptions), errors.Is(err, blockdiff.ErrBadOptions):
		return codeBadRequest
	}
	return codeIO
}

// errMsg describes a disk error without the agent's local path.
func errMsg(err error) string {
	var le *localdisk.Error
	if errors.As(err, &le) {
		return le.Op + ": " + le.Err.Error()
	}
	return err.Error()
}

func appendU32(b []byte, v uint32) []byte {
	return append(b, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func appendU64(b []byte, v uint64) []byte {
	return append(b, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}
