package agent

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Disk is a disk served by an agent, opened by Client.OpenTarget or
// Client.OpenSource. It is a disk.Target and Source with the
// capabilities Flusher, Zeroer, Resizer, WriteLimits, Identifier,
// Versioner, AllocationMapper, CacheDropper and BlockHasher. Every method
// may be called concurrently (WriteAt and ZeroRange on disjoint ranges).
//
// One TLS connection carries everything, in both directions at once:
// writes and zeroings are queued and pipelined (see WriteAt), hashes
// stream back while writes go out, and requests (reads, flushes, resizes)
// are answered by number. Reads, hashing and flushes see every write
// queued before them.
type Disk struct {
	addr, name   string
	write        bool
	instance     string
	hostBoot     string // the agent machine's boot ID, "" when unknown
	proto        string // the protocol version agreed (an ALPN name)
	align        int64
	maxWrite     int64
	size         atomic.Int64
	budget       int64
	window       int
	closeTimeout time.Duration

	conn  net.Conn
	bc    *batchConn // under conn's TLS
	br    *bufio.Reader
	codec *codec

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	mu      sync.Mutex
	wake    *sync.Cond // the writer: something to send
	room    *sync.Cond // writers waiting for the budget, Close waiting for acks
	control [][]byte   // credits and cancellations: sent first
	ordered [][]byte   // everything else, in order
	used    int64      // bytes of writes queued or unacknowledged
	sent    uint64     // writes and zeroings queued
	acked   uint64     // writes and zeroings the agent applied
	costs   []int64    // cost of each unacknowledged one, oldest first
	werr    error      // the first write the agent failed
	fatal   error      // the connection's end, wrapping ErrDisconnected
	closed  bool
	stopW   bool // the writer ends once the queues are empty
	nextID  uint32
	pending map[uint32]chan []byte
	streams map[uint32]*hashStream

	dead       chan struct{} // closed when fatal is set
	wdone      chan struct{}
	rdone      chan struct{}
	framePools [frameClasses]sync.Pool
}

// start runs the reader and the writer.
func (d *Disk) start() {
	d.wake = sync.NewCond(&d.mu)
	d.room = sync.NewCond(&d.mu)
	d.pending = map[uint32]chan []byte{}
	d.streams = map[uint32]*hashStream{}
	d.dead = make(chan struct{})
	d.wdone = make(chan struct{})
	d.rdone = make(chan struct{})
	d.ctx, d.cancel = context.WithCancel(context.Background())
	go d.writer()
	go d.reader()
}

// fail ends the connection with err, once.
func (d *Disk) fail(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.failLocked(err)
}

func (d *Disk) failLocked(err error) {
	if d.fatal != nil {
		return
	}
	d.fatal = fmt.Errorf("%w from %s/%s: %w", ErrDisconnected, d.addr, d.name, err)
	close(d.dead)
	d.wake.Broadcast()
	d.room.Broadcast()
	d.closeSocket()
}

// closeSocket closes the TCP connection under TLS at once: closing the
// TLS connection would first send TLS's closing alert, which waits (up to
// 5 s) behind a writer blocked on a peer that does not read.
func (d *Disk) closeSocket() {
	if d.bc != nil {
		d.bc.Conn.Close()
		return
	}
	d.conn.Close()
}

// errLocked is the error every call returns once something failed.
func (d *Disk) errLocked() error {
	switch {
	case d.closed:
		return ErrClosed
	case d.werr != nil:
		return d.werr
	case d.fatal != nil:
		return d.fatal
	}
	return nil
}

// Write frames are pooled by size class, so that a 64 KiB write does not
// take (and zero) a buffer for the largest write: class k holds buffers
// for payloads of up to minFrameClass<<k data bytes plus the frame's own
// header and fields (frameOverhead).
const (
	minFrameClass = 64 << 10
	frameClasses  = 7 // 64 KiB .. 4 MiB = MaxWrite
	frameOverhead = headerSize + 1 + 2*binary.MaxVarintLen64
)

// frameClass is the smallest class whose buffers hold n data bytes, or
// frameClasses when none does.
func frameClass(n int) int {
	k := 0
	for k < frameClasses && minFrameClass<<k < n {
		k++
	}
	return k
}

// getFrame returns an empty buffer for a write frame of n data bytes.
func (d *Disk) getFrame(n int) []byte {
	k := frameClass(n)
	if k == frameClasses {
		return make([]byte, 0, frameOverhead+n)
	}
	if b, ok := d.framePools[k].Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, frameOverhead+minFrameClass<<k)
}

// putFrame returns a buffer to the largest class it holds (compression may
// have grown it); smaller and larger ones are left to the collector.
func (d *Disk) putFrame(b []byte) {
	if k := frameSlot(cap(b)); k >= 0 {
		d.framePools[k].Put(&b)
	}
}

// frameSlot is the class a buffer of capacity c goes back to, or -1.
func frameSlot(c int) int {
	n := c - frameOverhead
	if n < minFrameClass || n > 2*(minFrameClass<<(frameClasses-1)) {
		return -1
	}
	k := frameClass(n)
	if k == frameClasses || minFrameClass<<k > n {
		k--
	}
	return k
}

// enqueue queues an ordered frame; cost > 0 makes it a write or a
// zeroing, charged to the budget until acknowledged (waiting for room).
func (d *Disk) enqueue(f []byte, cost int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if cost > 0 {
		for d.used > 0 && d.used+cost > d.budget && d.errLocked() == nil {
			d.room.Wait()
		}
	}
	if err := d.errLocked(); err != nil {
		return err
	}
	if cost > 0 {
		d.used += cost
		d.sent++
		d.costs = append(d.costs, cost)
	}
	d.ordered = append(d.ordered, f)
	d.wake.Signal()
	return nil
}

// sendControl queues a credit or a cancellation ahead of ordered frames.
func (d *Disk) sendControl(f []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fatal != nil || d.stopW {
		return
	}
	d.control = append(d.control, f)
	d.wake.Signal()
}

// writer sends queued frames, control ones first, flushing the buffer
// whenever the queues run dry.
func (d *Disk) writer() {
	defer close(d.wdone)
	bw := newSender(d.conn, d.bc)
	for {
		d.mu.Lock()
		for len(d.control) == 0 && len(d.ordered) == 0 && d.fatal == nil && !d.stopW {
			d.wake.Wait()
		}
		if d.fatal != nil || (d.stopW && len(d.control) == 0 && len(d.ordered) == 0) {
			d.mu.Unlock()
			_ = bw.Flush()
			return
		}
		var f []byte
		if len(d.control) > 0 {
			f = d.control[0]
			d.control[0] = nil
			d.control = d.control[1:]
		} else {
			f = d.ordered[0]
			d.ordered[0] = nil
			d.ordered = d.ordered[1:]
		}
		more := len(d.control)+len(d.ordered) > 0
		d.mu.Unlock()
		_, err := bw.Write(f)
		d.putFrame(f)
		if err == nil && !more {
			err = bw.Flush()
		}
		if err != nil {
			d.fail(err)
			return
		}
	}
}

// reader handles the agent's messages until the connection ends.
func (d *Disk) reader() {
	defer close(d.rdone)
	// Only a reply's payload outlives handle (it goes to the caller); the
	// others (hashes, acknowledgements) are read into one reused buffer.
	var scratch []byte
	get := func(typ uint8, n int) []byte {
		if typ == mReply {
			return make([]byte, n)
		}
		if cap(scratch) < n {
			scratch = make([]byte, n)
		}
		return scratch[:n]
	}
	for {
		typ, id, p, err := readFrame(d.br, MaxPayload, get)
		if err == nil {
			err = d.handle(typ, id, p)
		}
		if err != nil {
			d.fail(err)
			return
		}
	}
}

func (d *Disk) handle(typ uint8, id uint32, p []byte) error {
	r := dec{b: p}
	switch typ {
	case mAck:
		n := r.u64("ack")
		if err := r.end("ack"); err != nil {
			return err
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if n < d.acked || n > d.sent {
			return protoErr("acknowledgement of %d writes (%d sent, %d acknowledged)", n, d.sent, d.acked)
		}
		for ; d.acked < n; d.acked++ {
			d.used -= d.costs[0]
			d.costs = d.costs[1:]
		}
		d.room.Broadcast()
	case mWriteErr:
		r.u64("write error seq")
		off := r.i64("write error offset")
		n := r.i64("write error length")
		err := readStatus(&r, "write", off, n)
		if err == nil || r.end("write error") != nil {
			return protoErr("malformed write error")
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.werr == nil {
			d.werr = err
		}
		d.room.Broadcast()
	case mReply:
		d.mu.Lock()
		ch := d.pending[id]
		delete(d.pending, id)
		d.mu.Unlock()
		if ch != nil {
			ch <- p // buffered; a reply nobody waits for any more is dropped
		}
	case mHashes, mHashEnd:
		d.mu.Lock()
		st := d.streams[id]
		d.mu.Unlock()
		if st == nil {
			return nil // a cancelled stream's tail
		}
		if typ == mHashEnd {
			err := readStatus(&r, "hash", -1, 0)
			if err == nil {
				err = r.end("hash end")
			}
			st.finish(err)
			return nil
		}
		return st.deliver(p)
	case mFatal:
		err := readStatus(&r, "session", -1, 0)
		if err == nil {
			err = protoErr("fatal message without an error")
		}
		return err
	default:
		return protoErr("unknown message type %d from the agent", typ)
	}
	return nil
}

// call sends a request and waits for its answer.
func (d *Disk) call(ctx context.Context, typ uint8, payload []byte) ([]byte, error) {
	ch := make(chan []byte, 1)
	d.mu.Lock()
	d.nextID++
	id := d.nextID
	d.pending[id] = ch
	d.mu.Unlock()
	f := make([]byte, headerSize, headerSize+len(payload))
	f = append(f, payload...)
	putHeader(f, typ, id)
	forget := func() {
		d.mu.Lock()
		delete(d.pending, id)
		d.mu.Unlock()
	}
	if err := d.enqueue(f, 0); err != nil {
		forget()
		return nil, err
	}
	select {
	case p := <-ch:
		return p, nil
	case <-ctx.Done():
		forget()
		return nil, ctx.Err()
	case <-d.ctx.Done():
		forget()
		return nil, ErrClosed
	case <-d.dead:
		forget()
		d.mu.Lock()
		defer d.mu.Unlock()
		return nil, d.fatal
	}
}

// Close sends every queued write and waits (at most the Client's
// CloseTimeout) until the agent has acknowledged them, then ends the
// session. It does not flush: call Flush for durability. It returns the
// first write the agent failed, or the connection's failure if queued
// writes could not be delivered. Later calls return ErrClosed.
func (d *Disk) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	t := time.AfterFunc(d.closeTimeout, func() {
		d.fail(fmt.Errorf("writes not acknowledged within %v of Close", d.closeTimeout))
	})
	for d.acked < d.sent && d.fatal == nil && d.werr == nil {
		d.room.Wait() // after a failed write, nothing more is acknowledged
	}
	t.Stop()
	err := d.werr
	if err == nil && d.acked < d.sent {
		err = d.fatal
	}
	d.closed = true
	if d.fatal == nil {
		bye := appendHeader(nil, mBye, 0, 0)
		d.ordered = append(d.ordered, bye)
	}
	d.stopW = true
	d.wake.Broadcast()
	d.room.Broadcast()
	d.mu.Unlock()
	// Let the agent see the bye and close first: closing with its
	// last messages unread would reset the connection, and the reset
	// could overtake the bye.
	linger := time.NewTimer(5 * time.Second)
	select {
	case <-d.wdone:
		select {
		case <-d.rdone:
		case <-linger.C:
		}
	case <-linger.C:
	}
	linger.Stop()
	d.cancel()
	select {
	case <-d.wdone:
		d.conn.Close() // TLS's closing alert, then the socket
	default:
		d.closeSocket()
	}
	<-d.rdone
	<-d.wdone
	d.mu.Lock()
	for _, st := range d.streams {
		st.finish(ErrClosed)
	}
	d.mu.Unlock()
	if d.codec != nil {
		d.codec.close()
	}
	return err
}

func appendCredit(id uint32, n int) []byte {
	b := appendHeader(make([]byte, 0, headerSize+4), mCredit, 4, id)
	return binary.BigEndian.AppendUint32(b, uint32(n))
}
