package transfer

import (
	"sync/atomic"
	"time"
)

// Phase names what a run is doing.
type Phase uint8

const (
	// PhasePrepare: sizing the target, loading the journal.
	PhasePrepare Phase = iota
	// PhaseCopy: comparing and writing, in one pipeline.
	PhaseCopy
	// PhaseFlush: making the target's writes durable.
	PhaseFlush
	// PhaseVerify: re-reading both sides to prove them equal.
	PhaseVerify
	// PhaseDone: the run succeeded.
	PhaseDone
)

func (p Phase) String() string {
	switch p {
	case PhasePrepare:
		return "prepare"
	case PhaseCopy:
		return "copy"
	case PhaseFlush:
		return "flush"
	case PhaseVerify:
		return "verify"
	case PhaseDone:
		return "done"
	}
	return "unknown"
}

// ProgressReport is the state of a run at one moment (not a recovery
// point, which the project calls a snapshot).
type ProgressReport struct {
	Phase Phase
	// Total is the bytes of the range this phase goes over; Compared is
	// how many of them it has gone over (in PhaseVerify, verified).
	Total, Compared int64
	// Written, Zeroed and Extents are as in Stats, so far.
	Written, Zeroed, Extents int64
	// Elapsed is the time spent in this phase; Rate is Compared per
	// second over it; ETA is the estimated time left in this phase, 0
	// when unknown.
	Elapsed time.Duration
	Rate    float64
	ETA     time.Duration
	// ResumedFrom is, for a run that resumed from its journal, the offset
	// it restarted at (the journal's watermark): in PhaseCopy, Compared
	// counts from there and Total is the bytes from there to the range's
	// end, so the whole range is ResumedFrom-Options.Offset+Total. It is
	// 0 when the run did not resume, and in PhasePrepare.
	ResumedFrom int64
	// Journal is the key of the run's journal in Options.Journal (a
	// DirStore keeps it as the file Dir/Journal+".journal"); "" when the
	// run keeps none, and in PhasePrepare.
	Journal string
}

// Progress receives reports of a run: at every phase change and at most
// once per Options.ProgressInterval while a phase goes on. Update is
// called from one goroutine at a time, in the run's path: it must return
// quickly and must not keep the reported run waiting.
type Progress interface {
	Update(ProgressReport)
}

// ProgressFunc adapts a function to Progress.
type ProgressFunc func(ProgressReport)

// Update calls f(s).
func (f ProgressFunc) Update(s ProgressReport) { f(s) }

var _ Progress = ProgressFunc(nil)

type noProgress struct{}

func (noProgress) Update(ProgressReport) {}

// reporter builds progress reports; its counters are updated concurrently by the
// writers, its report methods are called by one goroutine at a time.
type reporter struct {
	p        Progress
	every    time.Duration
	now      func() time.Time
	phase    Phase
	start    time.Time
	last     time.Time
	total    int64
	compared int64
	extents  int64
	written  atomic.Int64
	zeroed   atomic.Int64
	// resumedFrom and journal are set by openJournal (ProgressReport's
	// ResumedFrom and Journal).
	resumedFrom int64
	journal     string
}

// enter starts a phase over total bytes and reports it.
func (r *reporter) enter(ph Phase, total int64) {
	r.phase, r.total, r.compared = ph, total, 0
	if ph == PhaseDone {
		r.compared = total
	}
	r.start = r.now()
	r.report(true)
}

// advance records n more bytes compared and reports when due.
func (r *reporter) advance(n int64) {
	r.compared += n
	r.report(false)
}

func (r *reporter) report(force bool) {
	now := r.now()
	if !force && now.Sub(r.last) < r.every {
		return
	}
	r.last = now
	s := ProgressReport{
		Phase:    r.phase,
		Total:    r.total,
		Compared: r.compared,
		Written:  r.written.Load(),
		Zeroed:   r.zeroed.Load(),
		Extents:  r.extents,
		Elapsed:  now.Sub(r.start),

		ResumedFrom: r.resumedFrom,
		Journal:     r.journal,
	}
	if sec := s.Elapsed.Seconds(); sec > 0 && s.Compared > 0 {
		s.Rate = float64(s.Compared) / sec
		s.ETA = time.Duration(float64(s.Total-s.Compared) / s.Rate * float64(time.Second))
	}
	r.p.Update(s)
}
