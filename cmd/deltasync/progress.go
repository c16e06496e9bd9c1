package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/deltasync/deltasync/transfer"
)

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// terminalWidth is the width of the terminal f, in columns (TIOCGWINSZ),
// or 80 when it does not say.
func terminalWidth(f *os.File) int {
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Col == 0 {
		return 80
	}
	return int(ws.Col)
}

// runWatch follows a seed or a sync through its progress snapshots: it
// says where a resumed run restarts, before it copies; it keeps how far
// the run went, for the message of an interrupted run; and it draws the
// progress bar when there is one.
type runWatch struct {
	w       io.Writer
	quiet   bool
	lo      int64 // the range's first byte (-offset)
	size    int64 // the range's length, as far as the command knows it
	journal func(key string) string
	bar     *progressBar // nil: no bar

	last    transfer.ProgressReport
	resumed bool // "resuming at" said
}

// Update implements transfer.Progress.
func (rw *runWatch) Update(s transfer.ProgressReport) {
	switch {
	case s.Phase == transfer.PhaseCopy && s.Total > 0:
		rw.size = rw.base(s) + s.Total
	case (s.Phase == transfer.PhaseVerify || s.Phase == transfer.PhaseDone) && s.Total > 0:
		rw.size = s.Total
	}
	rw.last = s
	if s.Phase == transfer.PhaseCopy && s.ResumedFrom > 0 && !rw.resumed {
		rw.resumed = true
		if !rw.quiet {
			if rw.bar != nil {
				rw.bar.clear()
			}
			j := ""
			if s.Journal != "" {
				j = " (journal " + rw.journal(s.Journal) + ")"
			}
			fmt.Fprintf(rw.w, "deltasync: resuming at %s of %s%s\n", bytesHuman(rw.base(s)), bytesHuman(rw.size), j)
		}
	}
	if rw.bar != nil {
		rw.bar.draw(rw.frame(s, ""))
	}
}

// base is the bytes of the range done before this run's copy began.
func (rw *runWatch) base(s transfer.ProgressReport) int64 {
	if s.ResumedFrom > rw.lo {
		return s.ResumedFrom - rw.lo
	}
	return 0
}

// position returns how far the run went through its range, and the
// range's length: during the copy, from the range's start (a resumed
// run's journal included); during the verification, the bytes verified.
func (rw *runWatch) position() (at, total int64) {
	s := rw.last
	switch s.Phase {
	case transfer.PhaseCopy:
		return rw.base(s) + s.Compared, rw.size
	case transfer.PhaseVerify:
		return s.Compared, s.Total
	case transfer.PhaseFlush, transfer.PhaseDone:
		return rw.size, rw.size
	}
	return 0, rw.size
}

// finish draws the bar's last frame and ends its line: the frame of the
// finished run, or where a failed or interrupted one stopped, from its
// final figures.
func (rw *runWatch) finish(st transfer.Stats, err error) {
	if rw.bar == nil || !rw.bar.drawn {
		return
	}
	if err != nil {
		s := rw.last
		if s.Phase == transfer.PhaseCopy {
			s.Compared = max(s.Compared, st.Compared)
			s.Written, s.Zeroed = st.Written, st.Zeroed
		}
		how := "failed"
		if caught.Load() != nil {
			how = "stopped"
		}
		rw.bar.draw(rw.frame(s, how))
	}
	fmt.Fprintln(rw.bar.w)
}

// frame is the bar's line for s; label replaces the phase's name.
func (rw *runWatch) frame(s transfer.ProgressReport, label string) frame {
	f := frame{label: label}
	if f.label == "" {
		f.label = s.Phase.String()
	}
	el := time.Since(rw.bar.began)
	switch s.Phase {
	case transfer.PhasePrepare:
		f.label = "prepare"
		f.noBar = true
		f.parts = []string{"sizing the target, reading the journal"}
		return f
	case transfer.PhaseCopy:
		at, total := rw.base(s)+s.Compared, rw.base(s)+s.Total
		f.frac = fraction(at, total)
		pos := bytesHuman(at) + " of " + bytesHuman(total)
		switch {
		case label != "":
			f.parts = append(f.parts, pos, "written "+bytesHuman(s.Written))
			return f
		case rw.bar.limit > 0:
			// Writes set the pace: their rate is the one to watch.
			f.parts = append(f.parts, "writing "+rate(s.Written, s.Elapsed)+" (limit "+bytesHuman(rw.bar.limit)+"/s)",
				pos, "written "+bytesHuman(s.Written))
		default:
			f.parts = append(f.parts, pos, rate(s.Compared, s.Elapsed), "written "+bytesHuman(s.Written))
		}
		if s.Zeroed > 0 {
			f.parts = append(f.parts, "zeroed "+bytesHuman(s.Zeroed))
		}
		if s.ETA > 0 {
			f.parts = append(f.parts, "ETA "+s.ETA.Round(time.Second).String())
		}
	case transfer.PhaseFlush:
		f.frac = 1
		f.parts = []string{"flushing the target", "written " + bytesHuman(s.Written)}
	case transfer.PhaseVerify:
		f.label = "verify"
		if label != "" {
			f.label = label
		}
		f.frac = fraction(s.Compared, s.Total)
		f.parts = []string{"verified " + bytesHuman(s.Compared) + " of " + bytesHuman(s.Total)}
		if label == "" {
			f.parts = append(f.parts, rate(s.Compared, s.Elapsed))
			if s.ETA > 0 {
				f.parts = append(f.parts, "ETA "+s.ETA.Round(time.Second).String())
			}
		}
	case transfer.PhaseDone:
		f.frac = 1
		f.parts = []string{bytesHuman(rw.size) + " in " + el.Round(10*time.Millisecond).String(),
			"written " + bytesHuman(s.Written)}
		if s.Zeroed > 0 {
			f.parts = append(f.parts, "zeroed "+bytesHuman(s.Zeroed))
		}
	}
	return f
}

func fraction(at, total int64) float64 {
	if total <= 0 {
		return 0
	}
	return min(1, max(0, float64(at)/float64(total)))
}

// rate is n bytes over d, per second.
func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "- B/s"
	}
	return bytesHuman(int64(float64(n)/d.Seconds())) + "/s"
}

// frame is one line of the bar: a label, a bar filled to frac (unless
// noBar) with its percentage, then parts, the first ones first: the last
// are left out when the terminal is too narrow for them.
type frame struct {
	label string
	noBar bool
	frac  float64
	parts []string
}

// render lays f out in at most width-1 columns (the last column is left
// free, so that a terminal never wraps the line). The bar's width depends
// on the terminal's alone, so that it does not jump from frame to frame;
// parts that do not fit are left out, the last first, then the bar.
func (f frame) render(width int) string {
	room := width - 1
	head := fmt.Sprintf("%-7s ", f.label)
	body := ""
	if !f.noBar {
		bw := min(30, max(10, room/3))
		if len(head)+bw+2+7 > room {
			// Too narrow for a bar: the percentage alone.
			body = fmt.Sprintf("%5.1f%%", f.frac*100)
		} else {
			k := int(f.frac * float64(bw))
			body = "[" + strings.Repeat("=", k) + strings.Repeat(" ", bw-k) + "]" + fmt.Sprintf(" %5.1f%%", f.frac*100)
		}
	}
	s := head + body
	for _, p := range f.parts {
		sep := "  "
		if body == "" && s == head {
			sep = ""
		}
		if len(s)+len(sep)+len(p) > room {
			continue
		}
		s += sep + p
	}
	return clip(s, room)
}

func clip(s string, n int) string {
	if n < 1 {
		return ""
	}
	if len(s) > n {
		return s[:n]
	}
	return s
}

// progressBar draws frames over one line of a terminal.
type progressBar struct {
	w     io.Writer
	width func() int
	limit int64 // -bwlimit, bytes per second; 0: none
	began time.Time
	drawn bool
}

func newProgressBar(f *os.File, limit int64) *progressBar {
	return &progressBar{w: f, width: func() int { return terminalWidth(f) }, limit: limit, began: time.Now()}
}

func (p *progressBar) draw(f frame) {
	p.drawn = true
	fmt.Fprintf(p.w, "\r%s\x1b[K", f.render(p.width()))
}

// clear empties the bar's line, for a message to take it.
func (p *progressBar) clear() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}
