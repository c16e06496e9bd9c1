package agent

import (
	"container/list"
	"context"
	"errors"
	"net"
	"sync"
	"time"
)

// Before a connection is authenticated it holds no session slot, only a
// place in a budget of its own, for HandshakeTimeout at most:
//
//   - stageNew: accepted, no whole ClientHello read yet. Idle connections
//     and ones that send their ClientHello slowly stay here.
//   - stageWait: its ClientHello has arrived; it waits in line for one of
//     the MaxHandshakes handshake slots (the handshake's cryptography is
//     what costs), first come first served.
//   - stageHello: it holds a handshake slot; the handshake is under way.
//   - stageTLS: it holds a handshake slot; its TLS handshake is done and
//     the hello is awaited.
//
// Connections in stageNew and stageWait are at most
// freshPerHandshake*MaxHandshakes (each costs a goroutine, a socket and a
// few KiB); when they are that many, a new connection displaces the
// oldest in stageNew. A client's ClientHello arrives with its
// connection, so before displacing one the agent looks whether a whole
// first TLS record has arrived for it, read by its goroutine or still in
// the socket: a goroutine not yet scheduled under a flood must not cost
// its client its place. Such a connection goes in line instead (it is as
// far as one in line). When no connection in stageNew can go, the one
// longest in line does if it has been there evictGrace; else the new
// connection is closed at once.
//
// A connection holding a handshake slot for evictGrace gives it up to the
// first in line: a client completes its handshake and hello in about two
// round trips, a connection that takes longer is very far away or
// hostile. Once authenticated, a connection leaves the budget and takes a
// session slot (or is told the agent is busy).

// evictGrace is how long a connection holds its handshake slot, or its
// place in line, at least, when others want it.
const evictGrace = 500 * time.Millisecond

// freshPerHandshake: connections in stageNew and stageWait may be this
// many times MaxHandshakes.
const freshPerHandshake = 16

// peeksPerAdmit bounds the connections admit looks into for a ClientHello
// before it gives up making room among those in stageNew (each that has
// one goes in line, so it is looked into once).
const peeksPerAdmit = 16

// Stages of a connection before authentication.
const (
	stageNew   = iota // accepted; no whole ClientHello yet
	stageWait         // its ClientHello has arrived; in line for a handshake slot
	stageHello        // holding a handshake slot; handshake under way
	stageTLS          // holding a handshake slot; TLS handshake done
)

// errNoHandshakeSlot ends a handshake that found no slot in time.
var errNoHandshakeSlot = errors.New("agent: too many TLS handshakes at once")

// pendingConn is a connection in the pre-authentication budget.
type pendingConn struct {
	raw   net.Conn
	bc    net.Conn // the conn TLS runs on: its key in Server.pending
	since time.Time
	pre   *preRead
	// Under Server.mu:
	stage  int
	elem   *list.Element // in Server.fresh (stageNew) or Server.waiting (stageWait)
	at     time.Time     // when it got in line (stageWait) or its slot (stageHello)
	inLine bool          // its goroutine waits in handshakeSlot
}

// preRead counts the bytes a connection's goroutine read before
// authentication and keeps the first few (the first TLS record's header).
type preRead struct {
	mu  sync.Mutex
	n   int
	hdr [5]byte
}

func (p *preRead) add(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n < len(p.hdr) {
		copy(p.hdr[p.n:], b)
	}
	p.n += len(b)
}

func (p *preRead) load() (int, [5]byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n, p.hdr
}

// helloArrived tells whether the connection's first TLS record (its
// ClientHello) has arrived, read by its goroutine or waiting in the
// socket or partly each: whole, or its first helloStart bytes (a
// ClientHello of a few KiB may span several TCP segments, the first of
// which is a sign of a client; a connection that sends its ClientHello a
// byte at a time takes many seconds to get there).
func (pc *pendingConn) helloArrived() bool {
	n0, hdr := pc.pre.load()
	var peek [5]byte
	inq, k := waiting(pc.raw, peek[:])
	if n1, _ := pc.pre.load(); n1 != n0 {
		return true // being read as we look: it is arriving
	}
	var h [5]byte
	m := copy(h[:], hdr[:min(n0, len(hdr))])
	m += copy(h[m:], peek[:k])
	if m < len(h) || h[0] != 0x16 || h[1] != 3 { // a handshake record
		return false
	}
	return n0+inq >= len(h)+min(int(h[3])<<8|int(h[4]), helloStart)
}

// helloStart: see helloArrived.
const helloStart = 512

// admit puts a new connection in the pre-authentication budget, making
// room if need be; false means that c is to be closed at once.
func (s *Server) admit(c net.Conn, bc *batchConn) bool {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fresh.Len()+s.waiting.Len() >= freshPerHandshake*s.o.MaxHandshakes {
		s.dropped++
		s.summaryLocked()
		if !s.makeRoomLocked(now) {
			return false
		}
	}
	pre := &preRead{}
	bc.pre = pre
	pc := &pendingConn{raw: c, bc: bc, since: now, pre: pre}
	pc.elem = s.fresh.PushBack(pc)
	s.pending[bc] = pc
	s.conns[c] = struct{}{}
	return true
}

// makeRoomLocked displaces the oldest connection that has not sent its
// ClientHello, queueing on the way those that have; or else the one
// longest in line, if evictGrace long; false when there is none.
func (s *Server) makeRoomLocked(now time.Time) bool {
	for range peeksPerAdmit {
		e := s.fresh.Front()
		if e == nil {
			break
		}
		pc := e.Value.(*pendingConn)
		if !pc.helloArrived() {
			s.evictLocked(pc)
			return true
		}
		s.queueLocked(pc, now)
	}
	if e := s.waiting.Front(); e != nil {
		if pc := e.Value.(*pendingConn); now.Sub(pc.at) >= evictGrace {
			s.evictLocked(pc)
			return true
		}
	}
	return false
}

// queueLocked moves a connection from stageNew to the end of the line.
func (s *Server) queueLocked(pc *pendingConn, now time.Time) {
	s.fresh.Remove(pc.elem)
	pc.stage, pc.elem, pc.at = stageWait, s.waiting.PushBack(pc), now
}

// evictLocked closes a connection not yet authenticated and takes it out
// of the budget.
func (s *Server) evictLocked(pc *pendingConn) {
	s.forgetLocked(pc.bc)
	pc.raw.Close()
}

// forgetLocked takes the connection TLS runs on, bc, out of the budget,
// releasing its handshake slot if it holds one.
func (s *Server) forgetLocked(bc net.Conn) {
	pc := s.pending[bc]
	if pc == nil {
		return
	}
	delete(s.pending, bc)
	switch pc.stage {
	case stageNew:
		s.fresh.Remove(pc.elem)
	case stageWait:
		s.waiting.Remove(pc.elem)
		s.wakeLocked() // another may be first in line now
	default:
		s.handshakes--
		s.wakeLocked()
	}
	pc.elem = nil
}

// wakeLocked wakes every connection waiting for a handshake slot.
func (s *Server) wakeLocked() {
	close(s.hsWake)
	s.hsWake = make(chan struct{})
}

// firstInLineLocked is the connection longest in line whose goroutine
// waits for a slot (one queued by makeRoomLocked may not be there yet).
func (s *Server) firstInLineLocked() *pendingConn {
	for e := s.waiting.Front(); e != nil; e = e.Next() {
		if pc := e.Value.(*pendingConn); pc.inLine {
			return pc
		}
	}
	return nil
}

// handshakeSlot is called once bc's ClientHello is read: it waits in line
// until a handshake slot is free, or one has been held for evictGrace
// (its holder is then displaced), within the connection's
// HandshakeTimeout.
func (s *Server) handshakeSlot(ctx context.Context, bc net.Conn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	pc := s.pending[bc]
	if pc == nil {
		return errNoHandshakeSlot // displaced meanwhile
	}
	switch pc.stage {
	case stageNew:
		s.queueLocked(pc, time.Now())
	case stageWait: // queued by makeRoomLocked
	default:
		return nil
	}
	pc.inLine = true
	s.wakeLocked() // for those behind a connection that was not there yet
	end := pc.since.Add(s.o.HandshakeTimeout)
	for {
		if s.pending[bc] != pc {
			return errNoHandshakeSlot // displaced
		}
		now := time.Now()
		wakeAt := end
		if s.firstInLineLocked() == pc {
			var oldest *pendingConn
			if s.handshakes >= s.o.MaxHandshakes {
				for _, p := range s.pending {
					if p.stage >= stageHello && (oldest == nil || p.at.Before(oldest.at)) {
						oldest = p
					}
				}
			}
			if s.handshakes < s.o.MaxHandshakes || oldest != nil && now.Sub(oldest.at) >= evictGrace {
				if s.handshakes >= s.o.MaxHandshakes {
					s.evictLocked(oldest)
				}
				s.waiting.Remove(pc.elem)
				pc.stage, pc.elem, pc.at, pc.inLine = stageHello, nil, now, false
				s.handshakes++
				s.wakeLocked()
				return nil
			}
			if oldest != nil && oldest.at.Add(evictGrace).Before(wakeAt) {
				wakeAt = oldest.at.Add(evictGrace)
			}
		}
		if !now.Before(end) {
			pc.inLine = false
			return errNoHandshakeSlot
		}
		wake := s.hsWake
		s.mu.Unlock()
		t := time.NewTimer(time.Until(wakeAt))
		select {
		case <-wake:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		s.mu.Lock()
		if err := ctx.Err(); err != nil {
			pc.inLine = false
			return err
		}
	}
}

// advance records that the connection TLS runs on, bc, got to stage
// (stageTLS: its handshake is done).
func (s *Server) advance(bc net.Conn, stage int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.pending[bc]; p != nil && p.stage >= stageHello {
		p.stage = stage
	}
}

// authenticated takes the connection out of the pre-authentication
// budget; false when it was displaced meanwhile (and is closed).
func (s *Server) authenticated(bc *batchConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending[bc] == nil {
		return false
	}
	s.forgetLocked(bc)
	bc.pre = nil // read only by the connection's goroutine, which calls this
	return true
}

// wasEvicted tells whether a connection not yet authenticated was
// displaced from the budget (its failure is then not worth a log line).
func (s *Server) wasEvicted(bc net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending[bc] == nil
}

// preauthLogs bounds the lines a second about connections refused before
// authentication; the others are counted in a summary line.
const preauthLogs = 10

// refusedf logs why a connection not yet authenticated was refused,
// unless preauthLogs lines did so in the last second.
func (s *Server) refusedf(format string, args ...any) {
	s.mu.Lock()
	if s.logged < preauthLogs {
		s.logged++
		if s.logged == 1 {
			s.summaryLocked()
		}
		s.mu.Unlock()
		s.o.Logf(format, args...)
		return
	}
	s.quiet++
	s.mu.Unlock()
}

// summaryLocked makes sure that a line a second at most sums up the
// connections dropped and the refusals not logged.
func (s *Server) summaryLocked() {
	if s.summary {
		return
	}
	s.summary, s.sumSince = true, time.Now()
	s.sumWG.Add(1)
	s.sumTimer = time.AfterFunc(time.Second, func() {
		defer s.sumWG.Done()
		s.sumUp()
	})
}

// sumUp writes the summary line, if there is anything to say, and starts
// a new second.
func (s *Server) sumUp() {
	s.mu.Lock()
	dropped, quiet, since := s.dropped, s.quiet, s.sumSince
	s.dropped, s.quiet, s.logged, s.summary = 0, 0, 0, false
	s.mu.Unlock()
	if dropped > 0 || quiet > 0 {
		s.o.Logf("agent: in %v, %d connections dropped before authentication (more than %d waiting, see MaxHandshakes) and %d more refused",
			time.Since(since).Round(10*time.Millisecond), dropped, freshPerHandshake*s.o.MaxHandshakes, quiet)
	}
}

// flushSummary writes a summary line due now rather than later, and
// waits for one being written: Serve returns after its last line.
func (s *Server) flushSummary() {
	s.mu.Lock()
	t := s.sumTimer
	s.mu.Unlock()
	if t != nil && t.Stop() {
		s.sumUp()
		s.sumWG.Done()
	}
	s.sumWG.Wait()
}
