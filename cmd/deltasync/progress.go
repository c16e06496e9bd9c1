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

// progressBar draws one line on a terminal.
type progressBar struct {
	w    io.Writer
	last transfer.Snapshot
}

func newProgressBar(w io.Writer) *progressBar { return &progressBar{w: w} }

func (p *progressBar) Update(s transfer.Snapshot) {
	p.last = s
	pct := 0.0
	if s.Total > 0 {
		pct = float64(s.Compared) / float64(s.Total)
	}
	const width = 30
	n := int(pct * width)
	eta := ""
	if s.ETA > 0 {
		eta = " ETA " + s.ETA.Round(time.Second).String()
	}
	fmt.Fprintf(p.w, "\r%-7s [%s%s] %5.1f%% %s/s written %s zeroed %s%s\x1b[K",
		s.Phase, strings.Repeat("=", n), strings.Repeat(" ", width-n), pct*100,
		bytesHuman(int64(s.Rate)), bytesHuman(s.Written), bytesHuman(s.Zeroed), eta)
}

func (p *progressBar) done() { fmt.Fprint(p.w, "\r\x1b[K") }
