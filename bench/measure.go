package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Measure is what the harness observed of one child process, from outside
// it: wall time, CPU time, peak memory sampled from /proc/PID/status, and
// the block I/O the kernel charged to it (getrusage of the reaped child).
type Measure struct {
	Seconds    float64 `json:"seconds"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// PeakAnonMiB is the largest RssAnon sampled (every 5 ms): anonymous
	// memory, what a mapped file's page cache does not count in.
	PeakAnonMiB float64 `json:"peak_anon_mib"`
	// VmHWMMiB is the kernel's peak resident set (mapped file pages
	// included), as last sampled.
	VmHWMMiB float64 `json:"vmhwm_mib"`
	// ReadBytes and WriteBytes come from /proc/PID/io (read_bytes,
	// write_bytes: bytes the process caused to be fetched from or sent
	// to storage), last sampled before exit.
	ReadBytes  int64 `json:"read_bytes"`
	WriteBytes int64 `json:"write_bytes"`
	// Verified is true when the target was compared with the source
	// after the run and found identical.
	Verified bool `json:"verified,omitempty"`
	// Child is what the child itself reported (its own counters).
	Child map[string]any `json:"child,omitempty"`
}

// runChild runs this program again as "bench child ARGS..." or runs an
// external command (when ext is true), sampling it until it exits.
func runChild(ctx context.Context, ext bool, args ...string) (Measure, error) {
	var cmd *exec.Cmd
	if ext {
		cmd = exec.CommandContext(ctx, args[0], args[1:]...)
	} else {
		self, err := os.Executable()
		if err != nil {
			return Measure{}, err
		}
		cmd = exec.CommandContext(ctx, self, append([]string{"child"}, args...)...)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Measure{}, err
	}
	var m Measure
	done := make(chan struct{})
	sampled := make(chan struct{})
	pid := cmd.Process.Pid
	go func() {
		defer close(sampled)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			sampleStatus(pid, &m)
			sampleIO(pid, &m)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	// Wait for exit without reaping, so the last /proc sample sees the
	// final counters; then reap.
	_ = waitid(pid)
	close(done)
	<-sampled
	sampleStatus(pid, &m)
	sampleIO(pid, &m)
	err := cmd.Wait()
	m.Seconds = time.Since(start).Seconds()
	if ps := cmd.ProcessState; ps != nil {
		m.CPUSeconds = (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	if err != nil {
		return m, fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	if out.Len() > 0 {
		// Children print one JSON object; so does deltasync --json.
		// Other tools' output is kept out of the report.
		if jerr := json.Unmarshal(out.Bytes(), &m.Child); jerr != nil && !ext {
			return m, fmt.Errorf("child output %q: %v", out.String(), jerr)
		}
	}
	return m, nil
}

func sampleStatus(pid int, m *Measure) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 0 {
			continue
		}
		kb, err := strconv.ParseFloat(fs[0], 64)
		if err != nil {
			continue
		}
		switch k {
		case "RssAnon":
			m.PeakAnonMiB = max(m.PeakAnonMiB, kb/1024)
		case "VmHWM":
			m.VmHWMMiB = max(m.VmHWMMiB, kb/1024)
		}
	}
}

func sampleIO(pid int, m *Measure) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "read_bytes":
			m.ReadBytes = max(m.ReadBytes, n)
		case "write_bytes":
			m.WriteBytes = max(m.WriteBytes, n)
		}
	}
}
