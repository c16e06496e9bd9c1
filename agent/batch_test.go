package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// countConn counts the writes that reach it and keeps their bytes.
type countConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
	got    bytes.Buffer
	err    error
}

func (c *countConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	c.writes++
	c.got.Write(p)
	return len(p), nil
}

func (c *countConn) Close() error { return nil }

func TestBatchConnGathers(t *testing.T) {
	cc := &countConn{}
	bc := newBatchConn(cc)
	var want bytes.Buffer
	write := func(p []byte) {
		t.Helper()
		if n, err := bc.Write(p); n != len(p) || err != nil {
			t.Fatalf("Write(%d bytes) = %d, %v", len(p), n, err)
		}
		want.Write(p)
	}
	// Before batch: every write goes through at once (the handshake).
	write([]byte("hello"))
	if cc.writes != 1 {
		t.Fatalf("before batch: %d socket writes, want 1", cc.writes)
	}
	bc.batch()
	for i := range 100 {
		write(bytes.Repeat([]byte{byte(i)}, 1000))
	}
	if cc.writes != 1 {
		t.Fatalf("batched writes reached the socket before Flush: %d writes", cc.writes)
	}
	if err := bc.Flush(); err != nil {
		t.Fatal(err)
	}
	if cc.writes != 2 {
		t.Fatalf("100 records of 1000 bytes took %d socket writes after Flush, want 1", cc.writes-1)
	}
	// More than the buffer holds: sent when full, without a Flush.
	for i := range 3 * batchSize / 16384 {
		write(bytes.Repeat([]byte{byte(i)}, 16384))
	}
	if cc.writes < 4 {
		t.Fatalf("%d bytes gathered without being sent (%d socket writes)", 3*batchSize, cc.writes)
	}
	write(make([]byte, batchSize+1)) // larger than the buffer: straight through
	if err := bc.Flush(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cc.got.Bytes(), want.Bytes()) {
		t.Fatal("bytes reached the socket changed or out of order")
	}
	// A failed socket write fails every later call.
	cc.err = errors.New("broken pipe")
	write([]byte("gathered"))
	if err := bc.Flush(); err == nil {
		t.Fatal("Flush over a broken socket succeeded")
	}
	cc.err = nil
	if _, err := bc.Write([]byte("x")); err == nil {
		t.Fatal("Write after a failed flush succeeded")
	}
}

// TestBatchConnCloseBreaksWrite: Close returns, and breaks a write blocked
// on a peer that does not read, as closing a plain connection does.
func TestBatchConnCloseBreaksWrite(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	bc := newBatchConn(a)
	bc.batch()
	done := make(chan error, 1)
	go func() {
		_, err := bc.Write(make([]byte, 2*batchSize)) // nobody reads b
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	closed := make(chan struct{})
	go func() { bc.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked behind a write to a peer that does not read")
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the blocked write succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not break the blocked write")
	}
}

// TestBatchConnCloseSends: what is gathered when Close is called (TLS's
// closing alert) reaches the peer.
func TestBatchConnCloseSends(t *testing.T) {
	a, b := net.Pipe()
	bc := newBatchConn(a)
	bc.batch()
	if _, err := bc.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() { p, _ := io.ReadAll(b); got <- p }()
	if err := bc.Close(); err != nil {
		t.Fatal(err)
	}
	if p := <-got; string(p) != "last words" {
		t.Fatalf("peer read %q", p)
	}
}

// TestWorthCompressing: the estimate samples a 16th of the data (at least
// one sample, at most four) and tells text from random data at every size
// a write takes.
func TestWorthCompressing(t *testing.T) {
	c, err := newCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	rng := newRand(t)
	for _, n := range []int{2 << 10, 12 << 10, 64 << 10, 100 << 10, 1 << 20, MaxWrite} {
		text := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog "), n/44+1)[:n]
		random := randBytes(rng, n)
		if !c.worthCompressing(text) {
			t.Errorf("%d bytes of text: judged not worth compressing", n)
		}
		if n > 2*sampleSize && c.worthCompressing(random) {
			t.Errorf("%d random bytes: judged worth compressing", n)
		}
		// Small data is simply tried; either way compress decides.
		if _, z := c.compress(nil, text); !z {
			t.Errorf("%d bytes of text: sent raw", n)
		}
		if _, z := c.compress(nil, random); z {
			t.Errorf("%d random bytes: sent compressed", n)
		}
	}
	if c.worthCompressing(make([]byte, minCompress-1)) {
		t.Error("data below minCompress judged worth compressing")
	}
}

// TestFrameClasses: a write's frame buffer is of the smallest class that
// holds it, and a buffer returns to the largest class it holds. (Whether
// the pool hands it back is sync.Pool's business, and random under -race.)
func TestFrameClasses(t *testing.T) {
	d := &Disk{}
	for _, n := range []int{1, 64 << 10, 64<<10 + 1, 1 << 20, MaxWrite} {
		f := d.getFrame(n)
		want := frameOverhead + minFrameClass<<frameClass(n)
		if len(f) != 0 || cap(f) != want {
			t.Errorf("getFrame(%d): len %d cap %d, want 0 and %d", n, len(f), cap(f), want)
		}
		if k := frameSlot(cap(f)); k != frameClass(n) {
			t.Errorf("a buffer for %d bytes goes back to class %d, want %d", n, k, frameClass(n))
		}
		d.putFrame(f)
	}
	for _, c := range []struct{ cap, slot int }{
		{frameOverhead + 100<<10, 0}, // grown by compression: still a 64 KiB one
		{frameOverhead + 128<<10, 1},
		{frameOverhead + 64<<10 - 1, -1}, // too small for any class
		{frameOverhead + 3*MaxWrite, -1}, // an oversized write's: dropped
	} {
		if k := frameSlot(c.cap); k != c.slot {
			t.Errorf("frameSlot(%d) = %d, want %d", c.cap, k, c.slot)
		}
	}
	if f := d.getFrame(MaxWrite + 1); cap(f) != frameOverhead+MaxWrite+1 {
		t.Errorf("getFrame(MaxWrite+1): cap %d", cap(f))
	}
}

// recWriter records what a session writes, yielding on every write so
// that the applier and the writer interleave.
type recWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *recWriter) Write(p []byte) (int, error) {
	runtime.Gosched()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(p)
}

func (r *recWriter) Flush() error { return nil }

// TestNoAckPastFailedWrite: the agent never acknowledges a write that
// failed, nor one after it: its writer sends acknowledgements ahead of
// queued frames, so such an acknowledgement could reach the client before
// the failure's report and let Disk.Applied (hence a journal) count a
// write that is not on the disk.
func TestNoAckPastFailedWrite(t *testing.T) {
	cd, err := newCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer cd.close()
	s := &Server{o: ServerOptions{WriteTimeout: time.Second, Logf: func(string, ...any) {}}, codec: cd}
	for i := range 300 {
		md := newMemDisk(make([]byte, 64<<10))
		md.FailWritesAt(4096) // the second write fails
		var in []byte
		for _, off := range []int64{0, 4096, 8192} {
			in = append(in, writeFrame(off, bytes.Repeat([]byte{1}, 1024))...)
		}
		in = append(in, frame(mBye, 0, nil)...)
		ss := newSession(s, md, true)
		w := &recWriter{}
		_ = ss.run(context.Background(), bytes.NewReader(in), w, func(time.Time) {}, func() {})
		sawErr := false
		for b := w.buf.Bytes(); len(b) >= headerSize; {
			typ := b[0]
			n := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
			p := b[headerSize : headerSize+n]
			b = b[headerSize+n:]
			switch typ {
			case mWriteErr:
				sawErr = true
			case mAck:
				if a := binary.BigEndian.Uint64(p); a > 1 {
					t.Fatalf("session %d: acknowledged %d writes; the second failed (error reported before: %v)", i, a, sawErr)
				}
			}
		}
		if !sawErr {
			t.Fatalf("session %d: the failed write was not reported", i)
		}
	}
}
