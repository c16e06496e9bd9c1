package agent

import (
	"context"
	"encoding/binary"
	"io"
	"sync"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
)

// Name returns the disk's name on its agent.
func (d *Disk) Name() string { return d.name }

// Size returns the disk's size, as the agent reported it when the disk
// was opened or last resized.
func (d *Disk) Size() int64 { return d.size.Load() }

// WriteLimits reports the agent's disk's alignment and, as the largest
// write, MaxWrite or the disk's own limit if smaller.
func (d *Disk) WriteLimits() (align, maxWrite int64) { return d.align, d.maxWrite }

// Identity is "agent://HOST:PORT/NAME#INSTANCE", where INSTANCE is a
// digest of the agent's local identity of the disk (device and inode),
// so that a disk replaced behind the same name is another disk. It holds
// no secret.
func (d *Disk) Identity() string {
	return "agent://" + d.addr + "/" + d.name + "#" + d.instance
}

// WritesBehind reports true: WriteAt returns before the agent has the
// write (disk.WriteBehind), so transfer makes sure the agent has every
// write before a journal save: with Applied when the agent told its boot
// ID, else with Flush.
func (d *Disk) WritesBehind() bool { return true }

// HostBootID returns the boot ID of the agent's machine, as the agent
// told it when the Disk was opened ("" from an agent that did not): the
// writes it acknowledged live in that machine's page cache until flushed,
// so they are lost only if it reboots (disk.AppliedBarrier).
func (d *Disk) HostBootID() string { return d.hostBoot }

// Applied returns once the agent has applied (not necessarily made
// durable) every write and zeroing queued before the call, which the
// agent acknowledges as it applies them; no round trip is added. It
// returns the error of a write the agent failed, or the connection's.
func (d *Disk) Applied(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.sent
	stop := context.AfterFunc(ctx, func() {
		d.mu.Lock()
		d.room.Broadcast()
		d.mu.Unlock()
	})
	defer stop()
	for d.acked < n && d.errLocked() == nil && ctx.Err() == nil {
		d.room.Wait()
	}
	if err := d.errLocked(); err != nil {
		return err
	}
	if d.acked < n {
		return ctx.Err()
	}
	return nil
}

// WriteAt queues a write and returns at once, having copied p (and
// compressed it when that pays): it does not wait for the agent. The
// write is sent in order with the others, and the agent applies it and
// acknowledges it; WriteAt waits only while the Client's WriteBuffer is
// full of writes not yet acknowledged. An error the agent reports for
// this write is returned by a later WriteAt, ZeroRange or Flush, and
// every call fails after it. Applied proves writes applied, Flush
// applied and durable. Writes longer than MaxWrite are split.
func (d *Disk) WriteAt(p []byte, off int64) (int, error) {
	if !d.write {
		return 0, ErrReadOnly
	}
	if off < 0 || off > d.Size()-int64(len(p)) {
		return 0, &RemoteError{Op: "write", Off: off, Len: int64(len(p)), Code: codeOutOfRange, Msg: "outside the disk (checked locally)"}
	}
	done := 0
	for done < len(p) {
		n := min(len(p)-done, MaxWrite)
		f := d.getFrame(n)
		f = f[:headerSize]
		f = append(f, 0)
		f = binary.AppendUvarint(f, uint64(off+int64(done)))
		mark := len(f)
		f = binary.AppendUvarint(f, uint64(n))
		f, z := d.codec.compress(f, p[done:done+n])
		if z {
			f[headerSize] = flagCompressed
		} else {
			// Raw: no length field, the data runs to the end.
			f = append(f[:mark], p[done:done+n]...)
		}
		putHeader(f, mWrite, 0)
		if err := d.enqueue(f, int64(len(f))); err != nil {
			d.putFrame(f)
			return done, err
		}
		done += n
	}
	return len(p), nil
}

// zeroCost is what a zeroing is charged against the write buffer.
const zeroCost = 64

// ZeroRange queues the clearing of [off, off+n) and returns at once, as
// WriteAt does. The agent punches a hole (or as its disk does it).
func (d *Disk) ZeroRange(ctx context.Context, off, n int64) error {
	if !d.write {
		return ErrReadOnly
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if off < 0 || n < 0 || off > d.Size()-n {
		return &RemoteError{Op: "zero", Off: off, Len: n, Code: codeOutOfRange, Msg: "outside the disk (checked locally)"}
	}
	if n == 0 {
		return nil
	}
	f := make([]byte, headerSize, headerSize+20)
	f = binary.AppendUvarint(f, uint64(off))
	f = binary.AppendUvarint(f, uint64(n))
	putHeader(f, mZero, 0)
	return d.enqueue(f, zeroCost)
}

// Flush waits until the agent has applied every write and zeroing queued
// before it and made them durable (fdatasync), and returns the first one
// that failed, if any. Writes queued while it waits are not covered.
// A source has nothing to flush.
func (d *Disk) Flush(ctx context.Context) error {
	if !d.write {
		return nil
	}
	p, err := d.call(ctx, mFlush, nil)
	if err != nil {
		return err
	}
	r := dec{b: p}
	err = readStatus(&r, "flush", -1, 0)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.werr != nil {
		// The failed write itself, reported before this answer.
		return d.werr
	}
	return err
}

// Resize sets the disk's size on the agent, after every queued write.
func (d *Disk) Resize(ctx context.Context, size int64) error {
	if !d.write {
		return ErrReadOnly
	}
	if size < 0 {
		return badOptions("negative size %d", size)
	}
	p, err := d.call(ctx, mResize, appendVarints(nil, size))
	if err != nil {
		return err
	}
	r := dec{b: p}
	if err := readStatus(&r, "resize", size, 0); err != nil {
		return err
	}
	got := r.i64("resize size")
	if err := r.end("resize reply"); err != nil {
		return err
	}
	d.size.Store(got)
	return nil
}

// ReadAt reads from the agent: a round trip per MaxWrite bytes, after
// every write queued before it. It returns io.EOF when p reaches past
// the disk's end.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, badOptions("negative offset %d", off)
	}
	done := 0
	for done < len(p) {
		n := min(len(p)-done, maxRead)
		at := off + int64(done)
		reply, err := d.call(d.ctx, mRead, appendVarints(nil, at, int64(n)))
		if err != nil {
			return done, err
		}
		r := dec{b: reply}
		if err := readStatus(&r, "read", at, int64(n)); err != nil {
			return done, err
		}
		flags := r.u8("read flags")
		k := r.ivarint("read length")
		data := r.rest()
		if r.err != nil || k > int64(n) || flags&^flagCompressed != 0 {
			return done, d.protocolFailure(protoErr("malformed read reply"))
		}
		dst := p[done : done+int(k)]
		if flags&flagCompressed != 0 {
			if err := d.codec.decode(data, dst); err != nil {
				return done, d.protocolFailure(err)
			}
		} else if int64(len(data)) != k {
			return done, d.protocolFailure(protoErr("read reply of %d bytes, says %d", len(data), k))
		} else {
			copy(dst, data)
		}
		done += int(k)
		if int(k) < n {
			return done, io.EOF
		}
	}
	return done, nil
}

// protocolFailure ends the connection for a malformed answer.
func (d *Disk) protocolFailure(err error) error {
	d.fail(err)
	return err
}

// AllocatedRanges lists the ranges of [off, off+n) that may hold data on
// the agent's disk; the rest reads as zeros (a sparse file's holes).
func (d *Disk) AllocatedRanges(ctx context.Context, off, n int64) ([]disk.Range, error) {
	p, err := d.call(ctx, mAlloc, appendVarints(nil, off, n))
	if err != nil {
		return nil, err
	}
	r := dec{b: p}
	if err := readStatus(&r, "allocated ranges", off, n); err != nil {
		return nil, err
	}
	cnt := r.uvarint("ranges")
	if r.err != nil || cnt > uint64(len(r.b)/2) {
		return nil, d.protocolFailure(protoErr("malformed allocated ranges"))
	}
	rs := make([]disk.Range, 0, cnt)
	prev := off
	for range cnt {
		x := disk.Range{Off: r.ivarint("range"), Len: r.ivarint("range")}
		if r.err != nil || x.Off < prev || x.Len < 0 || x.Len > off+n-x.Off {
			return nil, d.protocolFailure(protoErr("allocated range [%d,+%d) outside [%d,+%d) or out of order", x.Off, x.Len, off, n))
		}
		prev = x.Off + x.Len
		rs = append(rs, x)
	}
	if err := r.end("allocated ranges"); err != nil {
		return nil, d.protocolFailure(err)
	}
	return rs, nil
}

// Version returns the agent's version of its disk (localdisk's: size and
// modification time of a file, counters of a device).
func (d *Disk) Version(ctx context.Context) (string, error) {
	p, err := d.call(ctx, mVersion, nil)
	if err != nil {
		return "", err
	}
	r := dec{b: p}
	if err := readStatus(&r, "version", -1, 0); err != nil {
		return "", err
	}
	v := r.str(4096, "version")
	if err := r.end("version"); err != nil {
		return "", d.protocolFailure(err)
	}
	return "agent:" + d.instance + ":" + v, nil
}

// DropCache has the agent drop its cached pages of the range, so that
// verification reads what its disk holds.
func (d *Disk) DropCache(off, n int64) error {
	p, err := d.call(d.ctx, mDropCache, appendVarints(nil, off, n))
	if err != nil {
		return err
	}
	r := dec{b: p}
	return readStatus(&r, "drop cache", off, n)
}

func appendVarints(b []byte, vs ...int64) []byte {
	for _, v := range vs {
		b = binary.AppendUvarint(b, uint64(v))
	}
	return b
}

// HashBlocks has the agent hash its disk's blocks with h (its algorithm
// and key travel inside TLS) over opts' range, BlockSize and Hints (and
// with O_DIRECT when opts.Direct is DirectAlways, as after a failed
// flush; the agent also does so by itself on a disk whose flush failed
// since it started), and
// returns the hashes as they stream in; the agent stays at most the
// Client's HashWindow blocks ahead of Next. Hashing starts after every
// write queued before it. Cancelling ctx stops the stream.
func (d *Disk) HashBlocks(ctx context.Context, h blockdiff.Hasher, opts *blockdiff.Options) (blockdiff.HashIterator, error) {
	var o blockdiff.Options
	if opts != nil {
		o = *opts
	}
	if o.BlockSize == 0 {
		o.BlockSize = blockdiff.DefaultBlockSize
	}
	if h.Alg.Size() == 0 {
		return nil, badOptions("hash algorithm %d", h.Alg)
	}
	if o.BlockSize < blockdiff.SectorSize || o.BlockSize > blockdiff.MaxBlockSize || o.BlockSize%blockdiff.SectorSize != 0 {
		return nil, badOptions("block size %d", o.BlockSize)
	}
	if o.Offset < 0 || o.Length < 0 || len(o.Hints) > maxHints {
		return nil, badOptions("range [%d,+%d) or %d hints", o.Offset, o.Length, len(o.Hints))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f := make([]byte, headerSize, headerSize+64+20*len(o.Hints))
	f = append(f, byte(h.Alg))
	f = append(f, h.Key[:]...)
	f = appendU32(f, uint32(o.BlockSize))
	f = appendU64(f, uint64(o.Offset))
	f = appendU64(f, uint64(o.Length))
	f = appendU32(f, uint32(d.window))
	var flags byte
	if o.Hints != nil {
		flags |= hashHints
	}
	if o.Direct == blockdiff.DirectAlways {
		flags |= hashDirect
	}
	f = append(f, flags)
	f = binary.AppendUvarint(f, uint64(len(o.Hints)))
	for _, x := range o.Hints {
		if x.Off < 0 || x.Len < 0 {
			return nil, badOptions("hint %+v", x)
		}
		f = appendVarints(f, x.Off, x.Len)
	}
	st := &hashStream{d: d, size: h.Alg.Size(), bs: int64(o.BlockSize), window: d.window, more: make(chan struct{}, 1)}
	d.mu.Lock()
	d.nextID++
	st.id = d.nextID
	d.streams[st.id] = st
	d.mu.Unlock()
	putHeader(f, mHash, st.id)
	if err := d.enqueue(f, 0); err != nil {
		d.forget(st.id)
		return nil, err
	}
	st.stop = context.AfterFunc(ctx, func() {
		d.sendControl(appendHeader(nil, mCancel, 0, st.id))
		st.finish(ctx.Err())
	})
	return st, nil
}

func (d *Disk) forget(id uint32) {
	d.mu.Lock()
	delete(d.streams, id)
	d.mu.Unlock()
}

// hashStream is the client's side of a hash stream: a blockdiff
// HashIterator fed by the connection's reader.
type hashStream struct {
	d      *Disk
	id     uint32
	size   int
	bs     int64
	window int
	stop   func() bool

	mu       sync.Mutex
	queue    []blockdiff.BlockHash
	head     int
	prevEnd  int64
	consumed int // taken by Next and not yet granted back as credit
	done     bool
	err      error
	more     chan struct{}
}

// deliver decodes a batch from the reader; more than the credit allows is
// a protocol error.
func (st *hashStream) deliver(p []byte) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.done {
		return nil
	}
	limit := st.window - (len(st.queue) - st.head) - st.consumed
	if st.head > 4096 && st.head*2 > len(st.queue) {
		st.queue = append(st.queue[:0], st.queue[st.head:]...)
		st.head = 0
	}
	q, end, err := decodeHashes(p, st.size, st.bs, st.prevEnd, limit, st.queue)
	if err != nil {
		return err
	}
	st.queue, st.prevEnd = q, end
	select {
	case st.more <- struct{}{}:
	default:
	}
	return nil
}

// finish ends the stream: err nil means the agent sent every hash.
func (st *hashStream) finish(err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.done {
		return
	}
	st.done, st.err = true, err
	select {
	case st.more <- struct{}{}:
	default:
	}
}

// Next returns the next block hash, io.EOF after the last, or the error
// that ended the stream.
func (st *hashStream) Next() (blockdiff.BlockHash, error) {
	for {
		st.mu.Lock()
		if st.head < len(st.queue) {
			bh := st.queue[st.head]
			st.head++
			st.consumed++
			var grant int
			if st.consumed >= st.window/4 && !st.done {
				grant, st.consumed = st.consumed, 0
			}
			st.mu.Unlock()
			if grant > 0 {
				st.d.sendControl(appendCredit(st.id, grant))
			}
			return bh, nil
		}
		if st.done {
			err := st.err
			st.mu.Unlock()
			st.close()
			if err == nil {
				return blockdiff.BlockHash{}, io.EOF
			}
			return blockdiff.BlockHash{}, err
		}
		st.mu.Unlock()
		select {
		case <-st.more:
		case <-st.d.dead:
			st.d.mu.Lock()
			err := st.d.fatal
			st.d.mu.Unlock()
			st.finish(err)
		case <-st.d.ctx.Done():
			st.finish(ErrClosed)
		}
	}
}

// close forgets the stream once it has ended.
func (st *hashStream) close() {
	if st.stop != nil {
		st.stop()
	}
	st.d.forget(st.id)
}
