package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// opQueue is how many ordered messages wait for the applier. The
	// memory they hold counts in the agent's FrameMemory.
	opQueue = 4
	// maxStreams bounds a session's concurrent hash streams.
	maxStreams = 4
	// maxReqs bounds a source session's concurrent requests.
	maxReqs = 8
	// maxHints bounds the hints of a hash request.
	maxHints = 1 << 16
	// maxBatch bounds the blocks of one hash batch; batchDelay is how
	// long a batch waits for more blocks.
	maxBatch   = 4096
	firstBatch = 32
	batchDelay = 2 * time.Millisecond
	// minCredit and maxCredit bound a hash stream's credit.
	minCredit = 16
	maxCredit = 1 << 24
)

// op is an ordered message parsed by the reader for the applier.
type op struct {
	typ        uint8
	id         uint32
	off, n     int64  // range (write: off and raw length)
	compressed bool   // write data is compressed
	data       []byte // write data (raw or compressed)
	p          []byte // the payload buffer, returned to the pool after use
	cost       int64  // what p (and its decompressed copy) holds of FrameMemory
}

// session is one client's session on one disk.
type session struct {
	s     *Server
	d     serverDisk
	write bool

	out     chan []byte   // frames to send; the writer sends them
	wdead   chan struct{} // closed when the writer has ended
	kick    chan struct{} // the ack count moved
	applied atomic.Uint64 // writes and zeroings applied (or skipped after a failure)
	ops     chan *op

	// The applier's own state.
	seq      uint64        // writes and zeroings seen
	failed   error         // first failed write or zeroing: later ones are skipped
	flushErr error         // first failed flush
	changed  bool          // the session changed the disk (witnessBook.changed)
	watch    *sessionWatch // the run watching the disk (witness.go), if any

	mu       sync.Mutex
	streams  map[uint32]*serverStream
	fatal    []byte // the mFatal frame to end with, if any
	fatalOut bool   // it was sent
	abortFn  func()
	reqs     chan struct{} // source sessions: concurrent request slots
	workers  sync.WaitGroup
	sctx     context.Context // streams and requests; cancelled when the reader ends
	scancel  context.CancelFunc
	pool     *bufPool
	readDone chan struct{}
	setRD    func(time.Time) // sets the connection's read deadline
}

func newSession(s *Server, d serverDisk, write bool) *session {
	return &session{
		s: s, d: d, write: write,
		out:      make(chan []byte, 64),
		wdead:    make(chan struct{}),
		kick:     make(chan struct{}, 1),
		ops:      make(chan *op, opQueue),
		streams:  map[uint32]*serverStream{},
		reqs:     make(chan struct{}, maxReqs),
		pool:     newBufPool(),
		readDone: make(chan struct{}),
		setRD:    func(time.Time) {},
	}
}

// frameWriter is where a session's writer puts frames (a sender).
type frameWriter interface {
	Write(p []byte) (int, error)
	Flush() error
}

// run serves the session until the client says bye, the connection ends,
// or the client breaks the protocol. Every write received is applied
// before run returns. setWD sets the connection's write deadline; abort
// closes the connection.
func (ss *session) run(ctx context.Context, r io.Reader, w frameWriter, setWD func(time.Time), abort func()) error {
	ss.abortFn = abort
	ss.sctx, ss.scancel = context.WithCancel(ctx)
	defer ss.scancel()
	werr := make(chan error, 1)
	go func() { werr <- ss.writer(w, setWD) }()
	applied := make(chan struct{})
	go func() {
		defer close(applied)
		ss.applier(ctx)
	}()

	err := ss.reader(ctx, r)
	close(ss.readDone)
	if err != nil && !errors.Is(err, ErrProtocol) {
		// The client is gone: nobody to answer. What was received is
		// still applied below.
		abort()
	}
	if errors.Is(err, ErrProtocol) {
		ss.setFatal(codeProtocol, err.Error())
	}
	close(ss.ops)
	<-applied
	ss.scancel()
	ss.workers.Wait()
	// Every write received is applied: a run that did not finish gets
	// its evidence now, before the disk is closed and another session
	// can open it.
	ss.recordWatch(context.WithoutCancel(ctx))
	ss.sendFatal()
	close(ss.out)
	e := <-werr
	if err == nil {
		err = e
	}
	return err
}

// setFatal records the message the session ends with (the first one).
func (ss *session) setFatal(code uint8, msg string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.fatal == nil {
		ss.fatal = frame(mFatal, 0, appendErr(nil, code, msg))
	}
}

// sendFatal sends the fatal message, once.
func (ss *session) sendFatal() {
	ss.mu.Lock()
	f := ss.fatal
	if ss.fatalOut {
		f = nil
	}
	ss.fatalOut = true
	ss.mu.Unlock()
	if f != nil {
		ss.send(f)
	}
}

// send queues a frame, unless the writer has ended.
func (ss *session) send(f []byte) {
	select {
	case ss.out <- f:
	case <-ss.wdead:
	}
}

// writer sends queued frames and acknowledgements until out is closed.
func (ss *session) writer(w frameWriter, setWD func(time.Time)) (err error) {
	defer func() {
		close(ss.wdead)
		if err != nil {
			ss.abortFn()
		}
	}()
	var acked uint64
	var ack [headerSize + 8]byte
	writeAck := func() error {
		a := ss.applied.Load()
		if a == acked {
			return nil
		}
		acked = a
		b := appendHeader(ack[:0], mAck, 8, 0)
		b = binary.BigEndian.AppendUint64(b, a)
		_, err := w.Write(b)
		return err
	}
	for {
		var f []byte
		open := true
		select {
		case f, open = <-ss.out:
		case <-ss.kick:
		}
		setWD(time.Now().Add(ss.s.o.WriteTimeout))
		if err := writeAck(); err != nil {
			return err
		}
		if f != nil {
			if _, err := w.Write(f); err != nil {
				return err
			}
		}
		if !open {
			return w.Flush()
		}
		if len(ss.out) == 0 {
			if err := w.Flush(); err != nil {
				return err
			}
		}
	}
}

// reader reads the client's messages: ordered ones go to the applier,
// credits and cancellations act at once, a source session's requests run
// concurrently. It returns nil on bye. Each payload is held in
// FrameMemory until it is done with (see readPayload).
func (ss *session) reader(ctx context.Context, r io.Reader) error {
	var hdr [headerSize]byte
	for {
		typ, n, id, err := readHeader(r, &hdr)
		if err != nil {
			if err == io.EOF {
				return ErrDisconnected
			}
			return err
		}
		if n > MaxPayload {
			return protoErr("frame of type %d has %d bytes, more than %d", typ, n, MaxPayload)
		}
		p, cost, err := ss.readPayload(ctx, r, typ, n, time.Now())
		if err != nil {
			return err
		}
		switch typ {
		case mBye:
			ss.free(p, cost)
			return nil
		case mCredit:
			d := dec{b: p}
			n := d.u32("credit")
			err := d.end("credit")
			ss.free(p, cost)
			if err != nil {
				return err
			}
			if st := ss.stream(id); st != nil {
				if err := st.grant(int64(n)); err != nil {
					return err
				}
			}
			continue
		case mCancel:
			ss.free(p, cost)
			if st := ss.stream(id); st != nil {
				st.cancel()
			}
			continue
		}
		o, err := parseOp(typ, id, p)
		if err != nil {
			ss.free(p, cost)
			return err
		}
		o.cost = cost
		if !ss.write && typ != mWrite && typ != mZero && typ != mFlush && typ != mResize {
			// A source session: requests run concurrently.
			if typ == mHash {
				err := ss.startHash(o)
				ss.done(o)
				if err != nil {
					return err
				}
				continue
			}
			select {
			case ss.reqs <- struct{}{}:
			case <-ctx.Done():
				ss.done(o)
				return ctx.Err()
			}
			ss.workers.Add(1)
			go func() {
				defer func() {
					<-ss.reqs
					ss.workers.Done()
				}()
				ss.request(ss.sctx, o)
				ss.done(o)
			}()
			continue
		}
		select {
		case ss.ops <- o:
		case <-ctx.Done():
			ss.done(o)
			return ctx.Err()
		}
	}
}
