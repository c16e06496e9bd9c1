package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/localdisk"
)

// The evidence a journal through an agent is trusted on (disk.Witness,
// transfer's; see the package doc, # Evidence).
//
// The client side: Disk.Watch sends a random watch ID before the run's
// first change; Check asks the agent about it on the rerun. The agent
// side: a witnessBook per Server says, for each disk (by its local
// identity), a generation that moves whenever a session starts changing
// it, and the evidence recorded when a watched session ended without its
// run finishing: every write it received applied, the disk flushed, then
// the disk's own evidence (localdisk's Witness: device, inode, birth time
// and nanosecond ctime of a file; diskseq and write counters of a
// device), taken before the disk is closed, so before another session can
// open it.

// watchTokenPrefix starts a watch's token (a version, then the ID).
const watchTokenPrefix = "agent-watch/1:"

// watchResumable is mWatch's flag: the run keeps a journal.
const watchResumable = 1

var errSourceWatch = fmt.Errorf("%w: a source session has no run to watch", localdisk.ErrReadOnly)

// Watch implements disk.Witness: it tells the agent that a run is about
// to change the disk, under a new random watch ID (the Token), and the
// agent marks a file incomplete (localdisk's user.deltasync.incomplete)
// until Done. If the run stops without finishing, cleanly or because the
// client died, the agent records the disk's evidence once it has applied
// every write it received (see the package doc, # Evidence). An agent
// from before protocol version 3 keeps no evidence: the watch is then
// empty (no token, no mark) and a rerun compares everything.
func (d *Disk) Watch(ctx context.Context, resumable bool) (disk.Watch, error) {
	if !d.write {
		return nil, ErrReadOnly
	}
	if d.proto != alpn3 {
		return noWatch{}, nil
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	w := &watch{d: d, id: hex.EncodeToString(b[:])}
	var flags byte
	if resumable {
		flags |= watchResumable
	}
	if err := d.watchCall(ctx, "watch", mWatch, appendStr([]byte{flags}, w.id)); err != nil {
		return nil, err
	}
	return w, nil
}

// Check implements disk.Witness: the agent answers whether the evidence
// it recorded when the watched run's session ended still holds: that no
// session of the agent changed the disk since, that nothing failed on the
// agent after the client left (a write, a flush), and that the disk's own
// evidence is unchanged (nothing else wrote it; it is the same file or
// device). The evidence the run's Stopped returned is not needed: the
// agent's record is what counts, and exists also when the client was
// killed. An agent that has no record (it was restarted since) or from
// before protocol version 3 says why not; err is for a check that could
// not be made.
func (d *Disk) Check(ctx context.Context, token, evidence string) (string, error) {
	if !d.write {
		return "", ErrReadOnly
	}
	id, ok := strings.CutPrefix(token, watchTokenPrefix)
	if !ok || id == "" || len(id) > maxWatchID {
		return "the journal's evidence token is not an agent's", nil
	}
	if d.proto != alpn3 {
		return fmt.Sprintf("the agent at %s speaks %s, which keeps no record of who wrote its disks", d.addr, d.proto), nil
	}
	p, err := d.call(ctx, mCheck, appendStr(nil, id))
	if err != nil {
		return "", err
	}
	r := dec{b: p}
	if err := readStatus(&r, "check", -1, 0); err != nil {
		return "", err
	}
	why := r.str(maxMsg, "check answer")
	if err := r.end("check answer"); err != nil {
		return "", d.protocolFailure(err)
	}
	return why, nil
}

// watchCall sends a watch request and reads its status.
func (d *Disk) watchCall(ctx context.Context, op string, typ uint8, payload []byte) error {
	p, err := d.call(ctx, typ, payload)
	if err != nil {
		return err
	}
	r := dec{b: p}
	if err := readStatus(&r, op, -1, 0); err != nil {
		return err
	}
	if err := r.end(op + " answer"); err != nil {
		return d.protocolFailure(err)
	}
	return nil
}

// watch is a run's watch of a Disk (disk.Watch).
type watch struct {
	d     *Disk
	id    string
	ended bool
}

func (w *watch) Token() string { return watchTokenPrefix + w.id }

// Stopped tells the agent that the run stopped writing: a later write in
// this session spoils the evidence. The agent records the evidence itself
// when the session ends (the client's Close, or a dropped connection), so
// a connection already lost is no failure here.
func (w *watch) Stopped(ctx context.Context) (string, error) {
	if w.ended {
		return "", errors.New("agent: the watch has ended")
	}
	w.ended = true
	err := w.d.watchCall(ctx, "watch stopped", mWatchEnd, []byte{watchStopped})
	if errors.Is(err, ErrDisconnected) || errors.Is(err, ErrClosed) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return "agent", nil
}

// Done tells the agent that the run finished: it clears the incomplete
// mark and records nothing.
func (w *watch) Done(ctx context.Context) error {
	if w.ended {
		return errors.New("agent: the watch has ended")
	}
	w.ended = true
	return w.d.watchCall(ctx, "watch done", mWatchEnd, []byte{watchDone})
}

// Abandon tells the agent, without waiting, that nothing is to be
// recorded; the mark stays.
func (w *watch) Abandon() {
	if w.ended {
		return
	}
	w.ended = true
	_ = w.d.enqueue(frame(mWatchEnd, 0, []byte{watchAbandoned}), 0)
}

// noWatch is the watch of an agent from before version 3.
type noWatch struct{}

func (noWatch) Token() string                           { return "" }
func (noWatch) Stopped(context.Context) (string, error) { return "", nil }
func (noWatch) Done(context.Context) error              { return nil }
func (noWatch) Abandon()                                {}

// The agent's side.

// keepRecords bounds the records kept per disk: only the latest can hold
// (any later change of the disk spoils it), the others say why not.
const keepRecords = 8

// witnessBook is what an agent knows of who wrote its disks, by local
// identity (two names for one file are one disk). It lives in memory: an
// agent restarted knows nothing, and every journal saved before is
// compared again.
type witnessBook struct {
	mu    sync.Mutex
	disks map[string]*diskBook
}

type diskBook struct {
	gen  uint64        // moves when a session starts changing the disk
	recs []watchRecord // oldest first
	// flushFailed: a flush of the disk failed since the agent started.
	// Pages whose write-back failed may sit in the page cache, clean,
	// holding data the disk does not have, and a later fsync does not
	// report it again: from then on the agent hashes the disk with
	// O_DIRECT (blockdiff.DirectAlways), for every session, until it
	// restarts (a client whose journal says a flush failed asks for
	// direct reads itself, which covers a restarted agent).
	flushFailed bool
}

// watchRecord is what was recorded when a watched session ended.
type watchRecord struct {
	id       string
	gen      uint64 // the disk's generation then
	evidence string // the disk's own (its disk.Witness's), when why is ""
	why      string // why no evidence can hold
}

func (b *witnessBook) disk(key string) *diskBook {
	if b.disks == nil {
		b.disks = map[string]*diskBook{}
	}
	db := b.disks[key]
	if db == nil {
		db = &diskBook{}
		b.disks[key] = db
	}
	return db
}

// changed notes that a session starts changing disk key.
func (b *witnessBook) changed(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.disk(key).gen++
}

// failedFlush notes that a flush of disk key failed.
func (b *witnessBook) failedFlush(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.disk(key).flushFailed = true
}

// mustReadDirect tells whether disk key must be read with O_DIRECT: a
// flush of it failed since the agent started.
func (b *witnessBook) mustReadDirect(key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.disk(key).flushFailed
}

// record keeps what a session recorded at its end.
func (b *witnessBook) record(key string, r watchRecord) {
	b.mu.Lock()
	defer b.mu.Unlock()
	db := b.disk(key)
	r.gen = db.gen
	if len(db.recs) == keepRecords {
		db.recs = append(db.recs[:0], db.recs[1:]...)
	}
	db.recs = append(db.recs, r)
}

// lookup finds watch id's record on disk key, with the disk's
// generation now.
func (b *witnessBook) lookup(key, id string) (r watchRecord, gen uint64, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	db := b.disk(key)
	for i := len(db.recs) - 1; i >= 0; i-- {
		if db.recs[i].id == id {
			return db.recs[i], db.gen, true
		}
	}
	return watchRecord{}, db.gen, false
}

// sessionWatch is the run watching a session's disk.
type sessionWatch struct {
	id        string
	lw        disk.Watch // the disk's own watch; nil when it keeps no evidence
	resumable bool
	stopped   bool   // the run said it stopped writing
	spoiled   string // why its evidence cannot hold, found during the session
}

// noteChange is called before each change of the disk (write, zeroing,
// resize): the first moves the disk's generation, which spoils every
// record of another session; one after the run stopped spoils the run's.
func (ss *session) noteChange() {
	if !ss.changed {
		ss.changed = true
		ss.s.book.changed(ss.d.Identity())
	}
	if w := ss.watch; w != nil && w.stopped && w.spoiled == "" {
		w.spoiled = "the session wrote the disk after its run had stopped"
	}
}

// startWatch begins a run's watch (mWatch); the disk marks itself
// incomplete. A watch still running in the session ends without a record.
func (ss *session) startWatch(ctx context.Context, o *op) {
	ss.dropWatch()
	w := &sessionWatch{id: string(o.data), resumable: o.n&watchResumable != 0}
	if wd, ok := ss.d.(disk.Witness); ok {
		// The agent records the evidence itself. In a program that calls
		// localdisk.RunWatchdogIfAsked (the deltasync command), a
		// resumable watch also gets localdisk's watchdog, which notes
		// writes by other processes while the session runs; without it
		// (no place for its records), the watch goes on without one.
		lw, err := wd.Watch(ctx, w.resumable)
		if err != nil && w.resumable {
			lw, err = wd.Watch(ctx, false)
		}
		if err != nil {
			ss.reply(o.id, err, nil)
			return
		}
		w.lw = lw
	}
	ss.watch = w
	ss.reply(o.id, nil, nil)
}

// dropWatch ends the session's watch, if any, without a record.
func (ss *session) dropWatch() {
	if w := ss.watch; w != nil {
		ss.watch = nil
		if w.lw != nil {
			w.lw.Abandon()
		}
	}
}

// endWatch handles mWatchEnd.
func (ss *session) endWatch(ctx context.Context, o *op) {
	w := ss.watch
	var err error
	switch {
	case w == nil:
		if o.n != watchAbandoned {
			err = badOptions("no run is being watched in this session")
		}
	case o.n == watchStopped:
		// Recorded when the session ends: only then is it known that
		// nothing more comes.
		w.stopped = true
	case o.n == watchDone:
		ss.watch = nil
		if w.lw != nil {
			err = w.lw.Done(ctx)
		}
	default:
		ss.dropWatch()
	}
	if o.id != 0 {
		ss.reply(o.id, err, nil)
	}
}

// recordWatch records the evidence of a run that did not finish, once
// every write of the session is applied (the session's end): the disk is
// flushed, then its own evidence is taken. A failed write or flush in the
// session, or a write after the run stopped, leaves a record that says so
// instead; after a failed flush the disk's cached pages are dropped, so
// that what is read next comes from the disk rather than from pages whose
// write-back failed.
func (ss *session) recordWatch(ctx context.Context) {
	w := ss.watch
	if w == nil {
		return
	}
	ss.watch = nil
	if !w.resumable {
		if w.lw != nil {
			w.lw.Abandon()
		}
		return
	}
	r := watchRecord{id: w.id}
	switch {
	case w.lw == nil:
		r.why = "the agent cannot record the state of this disk"
	case w.spoiled != "":
		r.why = w.spoiled
	case ss.failed != nil:
		r.why = "a write failed on the agent (" + errMsg(ss.failed) + ")"
	case ss.flushErr != nil:
		r.why = "a flush failed on the agent (" + errMsg(ss.flushErr) + ")"
	}
	if r.why == "" && ss.changed {
		if err := ss.d.Flush(ctx); err != nil {
			ss.flushFailed(err)
			r.why = "flushing the disk failed on the agent when the run's session ended (" + errMsg(err) + ")"
		}
	}
	if r.why == "" {
		ev, err := w.lw.Stopped(ctx)
		if err != nil {
			r.why = "the agent could not record the state of the disk (" + errMsg(err) + ")"
		}
		r.evidence = ev
	} else if w.lw != nil {
		w.lw.Abandon()
	}
	ss.s.book.record(ss.d.Identity(), r)
}

// check answers mCheck: why the evidence of watch ID fails, "" if it
// holds.
func (ss *session) check(ctx context.Context, o *op) {
	why, err := ss.checkWatch(ctx, string(o.data))
	if err != nil {
		ss.reply(o.id, err, nil)
		return
	}
	ss.reply(o.id, nil, appendStr(nil, why))
}

func (ss *session) checkWatch(ctx context.Context, id string) (string, error) {
	if ss.changed {
		return "the session changed the disk before asking", nil
	}
	if w := ss.watch; w != nil && w.id == id {
		return "the run's session has not ended", nil
	}
	r, gen, ok := ss.s.book.lookup(ss.d.Identity(), id)
	switch {
	case !ok:
		return "the agent has no record of the run that saved the journal (the agent was restarted since, or the disk is another)", nil
	case r.gen != gen:
		return "another session of the agent changed the disk since the run stopped", nil
	case r.why != "":
		return r.why, nil
	}
	wd, ok := ss.d.(disk.Witness)
	if !ok {
		return "the agent cannot record the state of this disk", nil
	}
	why, err := wd.Check(ctx, "", r.evidence)
	if err != nil {
		return "", err
	}
	return why, nil
}
