package agent

import (
	"context"
	"encoding/binary"
	"io"
)

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
