package agent

import (
	"bufio"
	"net"
	"sync"
	"time"
)

// batchSize is how many bytes of TLS records a batchConn gathers before
// it writes them to the socket without waiting for a Flush.
const batchSize = 256 << 10

// batchConn sits between TLS and the socket and gathers the records TLS
// writes into large socket writes. TLS writes each record (at most 16 KiB
// of data) with its own system call; on loopback or a fast link those
// calls, and the segments each one makes, cost more than the encryption.
// Writes pass straight through until batch is called (after the
// handshake and the hello, which must not wait for a Flush); after that
// they are sent when Flush is called or batchSize bytes are waiting.
type batchConn struct {
	net.Conn
	mu  sync.Mutex
	buf []byte // nil until batch: writes pass straight through
	err error  // the first failed socket write; later ones fail with it

	// pre counts what is read before authentication (see admit); nil
	// after. Only the goroutine that reads touches the field.
	pre *preRead
}

func newBatchConn(c net.Conn) *batchConn { return &batchConn{Conn: c} }

func (c *batchConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.pre != nil && n > 0 {
		c.pre.add(p[:n])
	}
	return n, err
}

// batch starts gathering writes.
func (c *batchConn) batch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.buf == nil {
		c.buf = make([]byte, 0, batchSize)
	}
}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.buf == nil {
		return c.Conn.Write(p)
	}
	if len(c.buf)+len(p) > cap(c.buf) {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) >= cap(c.buf) {
			n, err := c.Conn.Write(p)
			c.err = err
			return n, err
		}
	}
	c.buf = append(c.buf, p...)
	return len(p), nil
}

// Flush writes the gathered records to the socket.
func (c *batchConn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flushLocked()
}

func (c *batchConn) flushLocked() error {
	if c.err != nil {
		return c.err
	}
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	c.err = err
	return err
}

// Close sends what is gathered (TLS's closing alert, typically), waiting
// at most a second for a peer that does not read, and closes the socket.
// When a write is under way (blocked on a peer that does not read), Close
// is how it is broken: the socket is closed at once.
func (c *batchConn) Close() error {
	if c.mu.TryLock() {
		if len(c.buf) > 0 && c.err == nil {
			_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			_ = c.flushLocked()
		}
		c.mu.Unlock()
	}
	return c.Conn.Close()
}

// sender is what a connection's writer writes frames to: a bufio.Writer
// over TLS over a batchConn. Flush pushes both, so a flush of frames is
// one socket write where it fits in batchSize.
type sender struct {
	*bufio.Writer
	bc *batchConn
}

func newSender(tlsConn net.Conn, bc *batchConn) sender {
	return sender{Writer: bufio.NewWriterSize(tlsConn, 256<<10), bc: bc}
}

func (s sender) Flush() error {
	err := s.Writer.Flush()
	// Even when TLS failed: what it gathered may be the alert saying why.
	if ferr := s.bc.Flush(); err == nil {
		err = ferr
	}
	return err
}
