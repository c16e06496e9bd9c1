package agent

import (
	"encoding/binary"
	"io"
	"math"
)

// A frame is an 8-byte header followed by its payload:
//
//	type    1 byte   what the message is (the m* constants)
//	length  3 bytes  big-endian payload length, at most MaxPayload
//	id      4 bytes  big-endian request or stream number (0 when none)
const (
	headerSize = 8
	// MaxPayload bounds a frame's payload: a longer one ends the session.
	MaxPayload = 8 << 20
	// MaxWrite is the largest write the protocol carries in one frame;
	// Disk.WriteLimits reports it (or the agent's disk's limit, if
	// smaller), so the engine never issues a larger one.
	MaxWrite = 4 << 20
	// maxRead is the largest read asked in one request.
	maxRead = 4 << 20
	// maxHello bounds the first frame, read before authentication.
	maxHello = 4 << 10
)

// Message types. Client to agent:
const (
	mHello     = 1  // magic, version, mode, token, disk name
	mWrite     = 2  // ordered: flags, offset, [raw length], data
	mZero      = 3  // ordered: offset, length
	mFlush     = 4  // ordered, id: every earlier write done and fdatasync'd
	mResize    = 5  // ordered, id: new size
	mRead      = 6  // id: offset, length
	mHash      = 7  // ordered start, id = stream: hasher, block size, range, credit, hints
	mCredit    = 8  // id = stream: more blocks the client can take
	mCancel    = 9  // id = stream: stop
	mAlloc     = 10 // id: allocated ranges of [offset, offset+length)
	mVersion   = 11 // id: the disk's version
	mDropCache = 12 // id: drop cached pages of a range
	mBye       = 13 // the client is done; the agent closes
	// Version 3 (never sent to an older agent):
	mWatch    = 14 // ordered, id: flags (1: resumable), watch ID; a run begins
	mWatchEnd = 15 // ordered, id (0: no answer wanted): how (watchStopped, watchDone, watchAbandoned)
	mCheck    = 16 // ordered, id: watch ID; answered with why its evidence fails, "" if it holds
)

// How a watch ends (mWatchEnd).
const (
	watchStopped   = 1
	watchDone      = 2
	watchAbandoned = 3
)

// maxWatchID bounds a watch ID on the wire.
const maxWatchID = 64

// Agent to client:
const (
	mWelcome  = 32 // size, alignment, largest write, instance
	mAck      = 33 // writes and zeroings applied so far (cumulative)
	mWriteErr = 34 // the first failed write or zeroing: seq, offset, length, code, message
	mReply    = 35 // id: status, then the answer or code and message
	mHashes   = 36 // id = stream: a batch of block hashes
	mHashEnd  = 37 // id = stream: status
	mFatal    = 38 // code, message; the agent closes the session
)

// helloMagic starts the hello payload: protocol name and version 1.
var helloMagic = [4]byte{'D', 'S', 'A', '1'}

// Session modes.
const (
	modeRead  = 1
	modeWrite = 2
)

// readHeader reads one frame header.
func readHeader(r io.Reader, hdr *[headerSize]byte) (typ uint8, n int, id uint32, err error) {
	if _, err = io.ReadFull(r, hdr[:]); err != nil {
		return 0, 0, 0, err
	}
	typ = hdr[0]
	n = int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
	id = binary.BigEndian.Uint32(hdr[4:])
	return typ, n, id, nil
}

// readFrame reads one frame whose payload is at most limit bytes into a
// buffer from get (which must return a slice of length n for a frame of
// type typ).
func readFrame(r io.Reader, limit int, get func(typ uint8, n int) []byte) (typ uint8, id uint32, payload []byte, err error) {
	var hdr [headerSize]byte
	typ, n, id, err := readHeader(r, &hdr)
	if err != nil {
		return 0, 0, nil, err
	}
	if n > limit {
		return 0, 0, nil, protoErr("frame of type %d has %d bytes, more than %d", typ, n, limit)
	}
	payload = get(typ, n)
	if _, err = io.ReadFull(r, payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, 0, nil, err
	}
	return typ, id, payload, nil
}

// appendHeader appends a header for a payload of n bytes.
func appendHeader(b []byte, typ uint8, n int, id uint32) []byte {
	return append(b, typ, byte(n>>16), byte(n>>8), byte(n), byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
}

// putHeader writes the header of the frame b (whose first headerSize
// bytes are reserved for it) now that its payload is complete.
func putHeader(b []byte, typ uint8, id uint32) {
	n := len(b) - headerSize
	b[0], b[1], b[2], b[3] = typ, byte(n>>16), byte(n>>8), byte(n)
	binary.BigEndian.PutUint32(b[4:], id)
}

// frame builds a whole frame from a payload.
func frame(typ uint8, id uint32, payload []byte) []byte {
	b := make([]byte, 0, headerSize+len(payload))
	b = appendHeader(b, typ, len(payload), id)
	return append(b, payload...)
}

// dec reads a payload with bounds checks: a short or malformed payload
// sets err, after which every read returns zero values.
type dec struct {
	b   []byte
	err error
}

func (d *dec) fail(what string) {
	if d.err == nil {
		d.err = protoErr("malformed %s", what)
	}
	d.b = nil
}

func (d *dec) u8(what string) uint8 {
	if b := d.bytes(1, what); b != nil {
		return b[0]
	}
	return 0
}

func (d *dec) u32(what string) uint32 {
	if b := d.bytes(4, what); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (d *dec) u64(what string) uint64 {
	if b := d.bytes(8, what); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

// i64 reads a u64 that must fit an int64 offset or length.
func (d *dec) i64(what string) int64 {
	v := d.u64(what)
	if v > math.MaxInt64 {
		d.fail(what)
		return 0
	}
	return int64(v)
}

func (d *dec) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

// ivarint reads a uvarint that must fit an int64.
func (d *dec) ivarint(what string) int64 {
	v := d.uvarint(what)
	if v > math.MaxInt64 {
		d.fail(what)
		return 0
	}
	return int64(v)
}

func (d *dec) bytes(n int, what string) []byte {
	if d.err != nil || n < 0 || len(d.b) < n {
		d.fail(what)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// str reads a uvarint length, at most max, and that many bytes.
func (d *dec) str(max int, what string) string {
	n := d.uvarint(what)
	if d.err != nil || n > uint64(max) {
		d.fail(what)
		return ""
	}
	return string(d.bytes(int(n), what))
}

// rest returns the remaining bytes.
func (d *dec) rest() []byte {
	if d.err != nil {
		return nil
	}
	v := d.b
	d.b = nil
	return v
}

// end fails if bytes are left over.
func (d *dec) end(what string) error {
	if d.err == nil && len(d.b) != 0 {
		d.fail(what)
	}
	return d.err
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// status payloads: 0 and the answer, or 1, a code and a message.
const (
	statusOK  = 0
	statusErr = 1
)

// maxMsg bounds an error message on the wire.
const maxMsg = 1024

func appendErr(b []byte, code uint8, msg string) []byte {
	if len(msg) > maxMsg {
		msg = msg[:maxMsg]
	}
	b = append(b, statusErr, code)
	return appendStr(b, msg)
}

// readStatus reads a status; on an error status it returns the remote
// error for op.
func readStatus(d *dec, op string, off, n int64) error {
	switch d.u8("status") {
	case statusOK:
		return d.err
	case statusErr:
		code := d.u8("error code")
		msg := d.str(maxMsg, "error message")
		if d.err != nil {
			return d.err
		}
		return &RemoteError{Op: op, Off: off, Len: n, Code: code, Msg: msg}
	}
	if d.err != nil {
		return d.err
	}
	return protoErr("unknown status in %s reply", op)
}
