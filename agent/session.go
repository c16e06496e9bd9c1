package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
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

// parseOp checks an ordered message or request.
func parseOp(typ uint8, id uint32, p []byte) (*op, error) {
	o := &op{typ: typ, id: id, p: p}
	d := dec{b: p}
	switch typ {
	case mWrite:
		flags := d.u8("write flags")
		if flags&^flagCompressed != 0 {
			return nil, protoErr("unknown write flags %#x", flags)
		}
		o.off = d.ivarint("write offset")
		o.compressed = flags&flagCompressed != 0
		if o.compressed {
			o.n = d.ivarint("write length")
		}
		o.data = d.rest()
		if !o.compressed {
			o.n = int64(len(o.data))
		}
		if d.err == nil && (o.n > MaxWrite || o.n < 1) {
			return nil, protoErr("write of %d bytes (1 to %d)", o.n, MaxWrite)
		}
	case mZero, mAlloc, mDropCache:
		o.off = d.ivarint("offset")
		o.n = d.ivarint("length")
	case mRead:
		o.off = d.ivarint("read offset")
		o.n = d.ivarint("read length")
		if d.err == nil && (o.n > maxRead || o.n < 1) {
			return nil, protoErr("read of %d bytes (1 to %d)", o.n, maxRead)
		}
	case mResize:
		o.n = d.ivarint("size")
	case mWatch:
		o.n = int64(d.u8("watch flags"))
		o.data = []byte(d.str(maxWatchID, "watch ID"))
		if d.err == nil && o.n&^watchResumable != 0 {
			return nil, protoErr("unknown watch flags %#x", o.n)
		}
	case mWatchEnd:
		o.n = int64(d.u8("watch end"))
		if d.err == nil && (o.n < watchStopped || o.n > watchAbandoned) {
			return nil, protoErr("unknown watch end %d", o.n)
		}
	case mCheck:
		o.data = []byte(d.str(maxWatchID, "watch ID"))
	case mFlush, mVersion:
	case mHash:
		// Checked by parseHash when it starts.
		o.data = d.rest()
	default:
		return nil, protoErr("unknown message type %d", typ)
	}
	if err := d.end("message"); err != nil {
		return nil, err
	}
	return o, nil
}

// flushFailed records a failed flush of the session's disk: the first
// error is the session's; the disk is marked in the book, so that every
// session hashes it with O_DIRECT from now on; and its cached pages are
// dropped, so that plain reads come from the disk rather than from pages
// whose write-back failed.
func (ss *session) flushFailed(err error) {
	if ss.flushErr == nil {
		ss.flushErr = err
	}
	if !ss.s.book.mustReadDirect(ss.d.Identity()) {
		ss.s.o.Logf("agent: disk %s: a flush failed (%s); it is hashed with O_DIRECT until the agent restarts", ss.d.Identity(), errMsg(err))
	}
	ss.s.book.failedFlush(ss.d.Identity())
	_ = ss.d.DropCache(0, ss.d.Size())
}

// applier performs ordered messages one after the other, so that a flush
// or a resize follows every write sent before it.
func (ss *session) applier(ctx context.Context) {
	for o := range ss.ops {
		switch o.typ {
		case mWrite, mZero:
			ss.applyWrite(ctx, o)
		case mFlush:
			err := ss.failed
			if err == nil {
				err = ss.d.Flush(ctx)
				if err != nil {
					ss.flushFailed(err)
				}
			}
			ss.reply(o.id, err, nil)
		case mResize:
			err := ss.failed
			if err == nil {
				ss.noteChange()
				err = ss.d.Resize(ctx, o.n)
			}
			ss.reply(o.id, err, appendU64(nil, uint64(ss.d.Size())))
		case mHash:
			if err := ss.startHash(o); err != nil {
				ss.protocolFailure(err)
			}
		case mWatch:
			ss.startWatch(ctx, o)
		case mWatchEnd:
			ss.endWatch(ctx, o)
		case mCheck:
			ss.check(ctx, o)
		default:
			ss.request(ctx, o)
		}
		ss.done(o)
	}
}

// protocolFailure ends the session from outside the reader.
func (ss *session) protocolFailure(err error) {
	ss.setFatal(codeProtocol, err.Error())
	if ss.failed == nil {
		ss.failed = err
	}
	ss.sendFatal()
	// The reader stops when the connection closes; the writer may still
	// be sending the fatal message, so give it a moment.
	go func() {
		select {
		case <-ss.wdead:
		case <-ss.readDone:
		case <-time.After(time.Second):
		}
		ss.abortFn()
	}()
}

// applyWrite performs a write or a zeroing, unless an earlier one failed.
// Only writes applied before any failure are acknowledged: the writer
// sends an acknowledgement ahead of frames already queued (the failure's
// report among them), so acknowledging a failed write, or one skipped
// after it, would let the client count it applied (Disk.Applied) before
// it hears of the failure.
func (ss *session) applyWrite(ctx context.Context, o *op) {
	ss.seq++
	defer func() {
		if ss.failed == nil {
			ss.applied.Store(ss.seq)
		}
		select {
		case ss.kick <- struct{}{}:
		default:
		}
	}()
	if ss.failed != nil {
		return
	}
	ss.noteChange()
	var err error
	if o.typ == mZero {
		err = ss.d.ZeroRange(ctx, o.off, o.n)
	} else {
		data := o.data
		if o.compressed {
			buf := ss.pool.get(int(o.n))
			defer ss.pool.put(buf)
			if err := ss.s.codec.decode(o.data, buf); err != nil {
				ss.protocolFailure(err)
				return
			}
			data = buf
		}
		var k int
		k, err = ss.d.WriteAt(data, o.off)
		if err == nil && k < len(data) {
			err = io.ErrShortWrite
		}
	}
	if err != nil {
		ss.failed = err
		b := frame(mWriteErr, 0, nil)[:headerSize]
		b = appendU64(b, ss.seq)
		b = appendU64(b, uint64(o.off))
		b = appendU64(b, uint64(o.n))
		b = appendErr(b, errCode(err), errMsg(err))
		putHeader(b, mWriteErr, 0)
		ss.send(b)
	}
}

// reply answers request id: ok with the answer, or the error.
func (ss *session) reply(id uint32, err error, answer []byte) {
	b := make([]byte, headerSize, headerSize+1+len(answer))
	if err != nil {
		b = appendErr(b, errCode(err), errMsg(err))
	} else {
		b = append(b, statusOK)
		b = append(b, answer...)
	}
	putHeader(b, mReply, id)
	ss.send(b)
}

// request answers a read, an allocation listing, a version or a cache
// drop.
func (ss *session) request(ctx context.Context, o *op) {
	switch o.typ {
	case mRead:
		buf := ss.pool.get(int(o.n))
		defer ss.pool.put(buf)
		k, err := ss.d.ReadAt(buf, o.off)
		if err == io.EOF || (err == nil && k < len(buf)) {
			err = nil
		}
		if err != nil {
			ss.reply(o.id, err, nil)
			return
		}
		b := make([]byte, headerSize, headerSize+16+k)
		b = append(b, statusOK, 0)
		b = binary.AppendUvarint(b, uint64(k))
		b, z := ss.s.codec.compress(b, buf[:k])
		if z {
			b[headerSize+1] = flagCompressed
		} else {
			b = append(b, buf[:k]...)
		}
		putHeader(b, mReply, o.id)
		ss.send(b)
	case mAlloc:
		rs, err := ss.d.AllocatedRanges(ctx, o.off, o.n)
		if err != nil {
			ss.reply(o.id, err, nil)
			return
		}
		// A listing too long for one message ends in one range that
		// covers the rest: it "may hold data", which is allowed.
		const most = (MaxPayload - 64) / 20
		if len(rs) > most {
			last := rs[len(rs)-1]
			rs[most-1].Len = last.Off + last.Len - rs[most-1].Off
			rs = rs[:most]
		}
		a := binary.AppendUvarint(nil, uint64(len(rs)))
		for _, r := range rs {
			a = binary.AppendUvarint(a, uint64(r.Off))
			a = binary.AppendUvarint(a, uint64(r.Len))
		}
		ss.reply(o.id, nil, a)
	case mVersion:
		v, err := ss.d.Version(ctx)
		if len(v) > 4096 {
			v = v[:4096]
		}
		ss.reply(o.id, err, appendStr(nil, v))
	case mDropCache:
		ss.reply(o.id, ss.d.DropCache(o.off, o.n), nil)
	case mWatch, mWatchEnd, mCheck:
		ss.reply(o.id, errSourceWatch, nil)
	}
}

// serverStream is a hash stream: the agent hashes its disk and sends the
// hashes as the client's credit allows.
type serverStream struct {
	id     uint32
	cancel context.CancelFunc
	mu     sync.Mutex
	credit int64
	window int64
	more   chan struct{}
}

func (st *serverStream) grant(n int64) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.credit += n
	if st.credit > st.window {
		return protoErr("hash stream %d: credit beyond the window", st.id)
	}
	select {
	case st.more <- struct{}{}:
	default:
	}
	return nil
}

// take waits until n blocks of credit are there and takes them.
func (st *serverStream) take(ctx context.Context, n int64) error {
	for {
		st.mu.Lock()
		if st.credit >= n {
			st.credit -= n
			st.mu.Unlock()
			return nil
		}
		st.mu.Unlock()
		select {
		case <-st.more:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (ss *session) stream(id uint32) *serverStream {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.streams[id]
}

// The flags of an mHash request.
const (
	hashHints  = 1 << 0 // hints follow (none is not "no hints": it hashes nothing)
	hashDirect = 1 << 1 // read the disk with O_DIRECT (blockdiff.DirectAlways)
)

// hashReq is a parsed mHash payload.
type hashReq struct {
	h      blockdiff.Hasher
	opts   blockdiff.Options
	credit int64
}

func parseHash(p []byte) (hashReq, error) {
	var r hashReq
	d := dec{b: p}
	r.h.Alg = blockdiff.HashAlgorithm(d.u8("hash algorithm"))
	copy(r.h.Key[:], d.bytes(len(r.h.Key), "hash key"))
	bs := d.u32("block size")
	r.opts.Offset = d.i64("hash offset")
	r.opts.Length = d.i64("hash length")
	r.credit = int64(d.u32("credit"))
	flags := d.u8("hash flags")
	hasHints := flags & hashHints
	nh := d.uvarint("hints")
	if d.err != nil {
		return r, d.err
	}
	if r.h.Alg.Size() == 0 {
		return r, badOptions("unknown hash algorithm %d", r.h.Alg)
	}
	if bs < blockdiff.SectorSize || bs > blockdiff.MaxBlockSize || bs%blockdiff.SectorSize != 0 {
		return r, badOptions("block size %d", bs)
	}
	r.opts.BlockSize = int(bs)
	if r.credit < minCredit || r.credit > maxCredit {
		return r, badOptions("credit %d (%d to %d)", r.credit, minCredit, maxCredit)
	}
	if flags&^(hashHints|hashDirect) != 0 || nh > maxHints || (hasHints == 0 && nh != 0) {
		return r, protoErr("malformed hints")
	}
	if flags&hashDirect != 0 {
		r.opts.Direct = blockdiff.DirectAlways
	}
	// Offset+Length must not overflow (blockdiff would wrap it): a
	// longer length means to the end.
	if r.opts.Length > math.MaxInt64-r.opts.Offset {
		r.opts.Length = 0
	}
	if hasHints == 1 {
		r.opts.Hints = make([]disk.Range, 0, nh)
		for range nh {
			off, n := d.ivarint("hint"), d.ivarint("hint")
			n = min(n, math.MaxInt64-off)
			r.opts.Hints = append(r.opts.Hints, disk.Range{Off: off, Len: n})
		}
	}
	return r, d.end("hash request")
}

// startHash starts a hash stream. A request the agent cannot serve ends
// the stream with an error; only a malformed one ends the session.
func (ss *session) startHash(o *op) error {
	req, err := parseHash(o.data)
	if errors.Is(err, ErrProtocol) {
		return err
	}
	ss.mu.Lock()
	_, dup := ss.streams[o.id]
	if err == nil && (dup || len(ss.streams) >= maxStreams) {
		err = badOptions("stream %d in use, or more than %d streams", o.id, maxStreams)
	}
	if err != nil {
		ss.mu.Unlock()
		b := appendErr(nil, errCode(err), err.Error())
		ss.send(frame(mHashEnd, o.id, b))
		return nil
	}
	ctx, cancel := context.WithCancel(ss.sctx)
	st := &serverStream{id: o.id, cancel: cancel, credit: req.credit, window: req.credit, more: make(chan struct{}, 1)}
	ss.streams[o.id] = st
	ss.mu.Unlock()
	req.opts.Concurrency = ss.s.o.HashConcurrency
	if ss.s.book.mustReadDirect(ss.d.Identity()) {
		req.opts.Direct = blockdiff.DirectAlways
	}
	ss.workers.Add(1)
	go func() {
		defer ss.workers.Done()
		defer func() {
			cancel()
			ss.mu.Lock()
			delete(ss.streams, o.id)
			ss.mu.Unlock()
		}()
		err := ss.hash(ctx, st, req)
		var b []byte
		if err != nil {
			b = appendErr(nil, errCode(err), errMsg(err))
		} else {
			b = []byte{statusOK}
		}
		ss.send(frame(mHashEnd, o.id, b))
	}()
	return nil
}

// hash runs blockdiff.HashBlocks on the disk and sends the hashes in
// batches: a batch goes when it is full, or when it has waited
// batchDelay for more blocks; each waits for the client's credit.
func (ss *session) hash(ctx context.Context, st *serverStream, req hashReq) error {
	enc := newHashEncoder(req.h.Alg, int64(req.opts.BlockSize))
	limit := int(min(maxBatch, req.credit/2))
	var (
		mu      sync.Mutex // guards enc, opened, size
		sendMu  sync.Mutex // serialises sending, so batches go in order
		opened  time.Time  // when the batch got its first block
		size    = min(firstBatch, limit)
		sendErr error
	)
	// sendBatch sends what is batched; called with sendMu held.
	sendBatch := func() error {
		mu.Lock()
		p, n := enc.take()
		var f []byte
		if n > 0 {
			f = frame(mHashes, st.id, p)
		}
		if size < limit {
			size = min(size*2, limit)
		}
		mu.Unlock()
		if n == 0 {
			return nil
		}
		if err := st.take(ctx, int64(n)); err != nil {
			return err
		}
		select {
		case ss.out <- f:
			return nil
		case <-ss.wdead:
			return ErrDisconnected
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	tick := time.NewTicker(batchDelay)
	defer tick.Stop()
	tctx, stopTick := context.WithCancel(ctx)
	var ticking sync.WaitGroup
	ticking.Add(1)
	go func() {
		defer ticking.Done()
		for {
			select {
			case <-tctx.Done():
				return
			case <-tick.C:
			}
			mu.Lock()
			due := enc.blocks > 0 && time.Since(opened) >= batchDelay
			mu.Unlock()
			if due {
				sendMu.Lock()
				if sendErr == nil {
					sendErr = sendBatch()
				}
				sendMu.Unlock()
			}
		}
	}()
	err := blockdiff.HashBlocks(ctx, ss.d, ss.d.Size(), req.h, &req.opts, func(bh blockdiff.BlockHash) error {
		mu.Lock()
		if enc.blocks == 0 {
			opened = time.Now()
		}
		enc.add(bh)
		full := enc.blocks >= size
		mu.Unlock()
		if !full {
			return nil
		}
		sendMu.Lock()
		defer sendMu.Unlock()
		if sendErr == nil {
			sendErr = sendBatch()
		}
		return sendErr
	})
	stopTick()
	ticking.Wait()
	if err == nil {
		err = sendErr
	}
	if err == nil {
		err = sendBatch()
	}
	return err
}

// bufPool keeps payload buffers in a few size classes; a write of
// MaxWrite (raw or decompressed) fits the fourth.
type bufPool struct {
	classes [len(poolSizes)]sync.Pool
}

var poolSizes = [...]int{smallFrame, 64 << 10, 1 << 20, MaxWrite + writePrefix, MaxPayload}

func newBufPool() *bufPool { return &bufPool{} }

func (bp *bufPool) get(n int) []byte {
	for i, sz := range poolSizes {
		if n <= sz {
			if b, ok := bp.classes[i].Get().(*[]byte); ok {
				return (*b)[:n]
			}
			return make([]byte, n, sz)
		}
	}
	return make([]byte, n)
}

func (bp *bufPool) put(b []byte) {
	for i, sz := range poolSizes {
		if cap(b) == sz {
			b = b[:0]
			bp.classes[i].Put(&b)
			return
		}
	}
}
