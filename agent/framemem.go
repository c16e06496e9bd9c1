package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// Defaults of ServerOptions' frame limits.
const (
	DefaultFrameMemory  = 256 << 20
	DefaultFrameTimeout = 2 * time.Minute
	// MinFrameMemory is the least FrameMemory: one frame's most (a
	// compressed write of MaxPayload bytes and its MaxWrite decompressed).
	MinFrameMemory = MaxPayload + MaxWrite
)

// smallFrame: payloads of at most this many bytes (and compressed writes
// that decompress to at most this) are not counted in FrameMemory. A
// session holds at most 14 at once (one being read, opQueue queued, one
// being applied, maxReqs requests of a source session), each with its
// decompressed copy: 112 KiB.
const smallFrame = 4 << 10

// frameGrace is the least time the rest of a payload has to arrive once
// its share of FrameMemory is granted, however long that took (see
// readPayload).
const frameGrace = time.Second

// writePrefix: a write's flags, offset and length come first in its
// payload, in at most this many bytes.
const writePrefix = 1 + 2*binary.MaxVarintLen64

// frameBudget is the agent's FrameMemory: a byte-weighted semaphore,
// first come first served, and the bytes it has handed out.
type frameBudget struct {
	sem  *semaphore.Weighted
	held atomic.Int64
}

func newFrameBudget(n int64) *frameBudget {
	return &frameBudget{sem: semaphore.NewWeighted(n)}
}

// acquire waits for n bytes until ctx is done or the deadline. It and
// release count nothing on a nil budget (a Server made by hand, in
// tests).
func (b *frameBudget) acquire(ctx context.Context, n int64, deadline time.Time) error {
	if n == 0 || b == nil {
		return nil
	}
	if !b.sem.TryAcquire(n) {
		ctx, cancel := context.WithDeadline(ctx, deadline)
		defer cancel()
		if err := b.sem.Acquire(ctx, n); err != nil {
			return err
		}
	}
	b.held.Add(n)
	return nil
}

func (b *frameBudget) release(n int64) {
	if n == 0 || b == nil {
		return
	}
	b.held.Add(-n)
	b.sem.Release(n)
}

// frameBytes is how much of FrameMemory the sessions hold.
func (s *Server) frameBytes() int64 {
	if s.frames == nil {
		return 0
	}
	return s.frames.held.Load()
}

// frameCost is what a pooled buffer for n bytes holds of FrameMemory: the
// size of its class; nothing for a small one.
func frameCost(n int) int64 {
	if n <= smallFrame {
		return 0
	}
	for _, sz := range poolSizes {
		if n <= sz {
			return int64(sz)
		}
	}
	return int64(n)
}

// decodedLen is the length a write decompresses to, from the start of its
// payload; 0 when it is not compressed, or the prefix is malformed or
// says more than MaxWrite (parseOp then refuses it).
func decodedLen(pre []byte) int {
	if len(pre) == 0 || pre[0]&flagCompressed == 0 {
		return 0
	}
	_, k := binary.Uvarint(pre[1:])
	if k <= 0 {
		return 0
	}
	v, j := binary.Uvarint(pre[1+k:])
	if j <= 0 || v > MaxWrite {
		return 0
	}
	return int(v)
}

// readPayload reads the payload of a frame of type typ and n bytes, whose
// header arrived at since, into a pooled buffer, and returns what it
// holds of FrameMemory (to release with the buffer, see free). A payload
// of more than smallFrame bytes, or a compressed write that decompresses
// to more, first waits for its share of FrameMemory (its client's next
// bytes wait in the network meanwhile), and must then arrive; both within
// FrameTimeout of since, but the payload has frameGrace at least once
// granted. A session that does not get there is ended, and what it held
// released. So clients that stall, however many, delay another's frame by
// about FrameTimeout at most: those ahead of it in line (first come,
// first served) got their headers in before it, and by its own deadline
// they have released what they held or given up waiting for it.
func (ss *session) readPayload(ctx context.Context, r io.Reader, typ uint8, n int, since time.Time) (p []byte, cost int64, err error) {
	var pre [writePrefix]byte
	k := 0
	cost = frameCost(n)
	if typ == mWrite {
		// The decompressed size is known from the start of the payload,
		// read before anything is held.
		k = min(n, len(pre))
		if _, err := io.ReadFull(r, pre[:k]); err != nil {
			return nil, 0, eofMidFrame(err)
		}
		cost += frameCost(decodedLen(pre[:k]))
	}
	dl := since.Add(ss.s.o.FrameTimeout)
	if err := ss.s.frames.acquire(ctx, cost, dl); err != nil {
		if ctx.Err() == nil {
			err = fmt.Errorf("a frame of type %d and %d bytes waited %v (FrameTimeout) for FrameMemory: %w", typ, n, ss.s.o.FrameTimeout, err)
		}
		return nil, 0, err
	}
	if cost > 0 {
		if b, ok := r.(interface{ Buffered() int }); !ok || b.Buffered() < n-k {
			if least := time.Now().Add(frameGrace); dl.Before(least) {
				dl = least
			}
			ss.setRD(dl)
			defer ss.setRD(time.Time{})
		}
	}
	p = ss.pool.get(n)
	copy(p, pre[:k])
	if _, err := io.ReadFull(r, p[k:]); err != nil {
		ss.free(p, cost)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, 0, fmt.Errorf("a frame of type %d and %d bytes did not arrive within %v (FrameTimeout): %w", typ, n, ss.s.o.FrameTimeout, err)
		}
		return nil, 0, eofMidFrame(err)
	}
	return p, cost, nil
}

// eofMidFrame: the connection's end in the middle of a frame.
func eofMidFrame(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// free returns a payload buffer to the pool and its share of FrameMemory
// to the budget.
func (ss *session) free(p []byte, cost int64) {
	ss.pool.put(p)
	ss.s.frames.release(cost)
}

// done frees an op's payload.
func (ss *session) done(o *op) { ss.free(o.p, o.cost) }
