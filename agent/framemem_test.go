package agent

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/deltasync/deltasync/transfer"
)

// TestFrameMemoryBound: 60 authenticated sessions that each send the
// header of a message of MaxPayload bytes, half of them a compressed
// write said to decompress to MaxWrite, and then only 64 KiB of it, do not
// make the agent hold 60 such messages: what they hold stays within
// FrameMemory, and the heap grows by at most that and the documented
// 1.1 MiB a session. (Before FrameMemory, each held a buffer of MaxPayload
// and the heap grew by 530 MiB.) Once FrameTimeout has passed since their
// headers, every one is ended, whether it held its share or waited for
// it, and a legitimate sync, which waited meanwhile, runs: with the
// default FrameMemory, and with the least, where they wait in a line of
// 60 for room for one or two.
func TestFrameMemoryBound(t *testing.T) {
	if testing.Short() {
		t.Skip("holds a few hundred MiB")
	}
	for _, mem := range []int64{0, MinFrameMemory} {
		t.Run(fmt.Sprintf("FrameMemory %d MiB", cmp.Or(mem, DefaultFrameMemory)>>20), func(t *testing.T) {
			testFrameMemoryBound(t, mem)
		})
	}
}

func testFrameMemoryBound(t *testing.T, mem int64) {
	rng := newRand(t)
	const sessions = 60
	const frameTimeout = 3 * time.Second
	src := randBytes(rng, 8<<20)
	dst := bytes.Clone(src)
	changeBlocks(rng, dst, 64<<10, 20)
	a := startAgent(t, map[string][]byte{"d": make([]byte, 1<<20), "t": dst}, func(o *ServerOptions) {
		o.FrameTimeout = frameTimeout
		o.FrameMemory = mem
	})
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	part := bytes.Repeat([]byte{0x5A}, 64<<10)
	var conns []*rawConn
	for i := range sessions {
		r := dialRaw(t, a.addr, pinTLS(a.pin))
		_ = r.c.SetDeadline(time.Now().Add(30 * time.Second))
		r.send(helloFrame(modeRead, a.token, "d"))
		if r.until(mWelcome) == nil {
			t.Fatal("no welcome")
		}
		p := appendHeader(nil, mWrite, MaxPayload, 0)
		if i%2 == 0 {
			p = append(p, 0, 0) // raw, at offset 0
		} else {
			p = append(p, flagCompressed, 0)
			p = binary.AppendUvarint(p, MaxWrite)
		}
		r.send(append(p, part...))
		conns = append(conns, r)
	}
	sent := time.Now()
	// Until the budget is spent (the rest wait for it).
	for a.srv.frameBytes() < a.srv.o.FrameMemory-MinFrameMemory && time.Since(sent) < 2*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapInuse) - int64(before.HeapInuse)
	held := a.srv.frameBytes()
	t.Logf("%d sessions each sent part of a message of %d MiB: heap in use grew by %d MiB; FrameMemory held %d MiB of %d",
		sessions, MaxPayload>>20, grew>>20, held>>20, a.srv.o.FrameMemory>>20)
	bound := a.srv.o.FrameMemory + sessions*(1<<20+100<<10)
	if grew > bound {
		t.Fatalf("heap grew by %d MiB, more than %d MiB", grew>>20, bound>>20)
	}
	if held > a.srv.o.FrameMemory {
		t.Fatalf("FrameMemory held %d MiB, more than %d MiB", held>>20, a.srv.o.FrameMemory>>20)
	}
	// A sync meanwhile: its writes wait until the stalled ones are cut
	// off, about FrameTimeout after their headers.
	start := time.Now()
	srcPath := writeTemp(t, "src.img", src)
	if _, err := syncTo(withTimeout(t, 30*time.Second), t, a.client(), srcPath, "t", &transfer.Options{NoJournal: true}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("a sync behind them ran in %v (%v after their headers)", took.Round(time.Millisecond), time.Since(sent).Round(time.Millisecond))
	sameBytes(t, "t", a.bytes(t, "t"), src)
	if limit := frameTimeout + 5*time.Second; time.Since(sent) > limit {
		t.Fatalf("the sync ended %v after the stalled headers (limit %v)", time.Since(sent), limit)
	}
	for i, r := range conns {
		var b [256]byte
		var err error
		for err == nil {
			_, err = r.c.Read(b[:])
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("stalled session %d still open", i)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for a.srv.frameBytes() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := a.srv.frameBytes(); n != 0 {
		t.Fatalf("%d bytes of FrameMemory still held after every stalled session ended", n)
	}
}
