package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// cmdStatus reads the status files of replications in a state folder.
func cmdStatus(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	dir := fs.String("state-dir", "", "the replicator's state folder (default "+replicateDirDefault()+")")
	asJSON := fs.Bool("json", false, "print a JSON array of statuses on stdout")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: deltasync status [flags] [NAME...]
Show the state of the replications in the state folder (all, or those named):
running or stopped, the lag (the recovery point objective met: the time since the
source view of the last successful cycle was frozen), the last cycle, the next
one, the points kept and the last error. It reads the files a running or stopped
'deltasync replicate' leaves; it needs no access to the disks.
`)
		fs.PrintDefaults()
	}
	names, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if *dir == "" {
		*dir = replicateDirDefault()
	}
	if len(names) == 0 {
		files, _ := filepath.Glob(filepath.Join(*dir, "*.status.json"))
		for _, f := range files {
			names = append(names, strings.TrimSuffix(filepath.Base(f), ".status.json"))
		}
		sort.Strings(names)
		if len(names) == 0 {
			return fmt.Errorf("no replication has run with the state folder %s (give -state-dir as 'deltasync replicate' was)", *dir)
		}
	}
	var out []statusView
	for _, n := range names {
		v, err := readStatus(*dir, n)
		if err != nil {
			return err
		}
		out = append(out, v)
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	now := time.Now()
	for _, v := range out {
		fmt.Print(v.text(now))
	}
	return nil
}

// statusView is a status file as read, with what is known at reading.
type statusView struct {
	statusFile
	// Running tells that a process holds the replication's lock now.
	Running bool `json:"running"`
	// LagSeconds is the time since LastFrozen, now (-1 before the first
	// successful cycle).
	LagSeconds float64 `json:"lagSeconds"`
	// Note says what the reader found odd (a process gone without
	// stopping).
	Note string `json:"note,omitempty"`
}

func readStatus(dir, name string) (statusView, error) {
	var v statusView
	b, err := os.ReadFile(filepath.Join(dir, name+".status.json"))
	if errors.Is(err, os.ErrNotExist) {
		return v, fmt.Errorf("no replication %q in %s (its status file is missing): check the name and -state-dir", name, dir)
	}
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(b, &v.statusFile); err != nil {
		return v, fmt.Errorf("%s: not a status file of deltasync replicate: %v", filepath.Join(dir, name+".status.json"), err)
	}
	v.Running = lockHeld(filepath.Join(dir, name+".lock"))
	if v.State == "running" && !v.Running {
		v.State = "stopped"
		v.Note = fmt.Sprintf("process %d ended without a clean stop (killed, or its machine went down); the next start continues from the saved state", v.PID)
	}
	v.LagSeconds = -1
	if !v.LastFrozen.IsZero() {
		v.LagSeconds = time.Since(v.LastFrozen).Seconds()
	}
	return v, nil
}

// lockHeld reports whether another process holds the lock file.
func lockHeld(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return errors.Is(err, unix.EWOULDBLOCK)
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}

func (v statusView) text(now time.Time) string {
	var b strings.Builder
	state := v.State
	if v.Running {
		state = fmt.Sprintf("running (pid %d, since %s)", v.PID, v.Started.Format(time.RFC3339))
	}
	fmt.Fprintf(&b, "%s: %s\n", v.Name, state)
	if v.Note != "" {
		fmt.Fprintf(&b, "  note: %s\n", v.Note)
	}
	if v.LagSeconds < 0 {
		fmt.Fprintf(&b, "  lag: no successful cycle yet\n")
	} else {
		fmt.Fprintf(&b, "  lag: %v (the newest point holds the source as of %s)\n",
			time.Duration(v.LagSeconds*float64(time.Second)).Round(time.Second), v.LastFrozen.Format(time.RFC3339))
	}
	fmt.Fprintf(&b, "  cycles: %d done, %d failed, %d ticks skipped; interval %s\n", v.Cycles, v.Failed, v.Skipped, v.Interval)
	if c := v.LastCycle; c != nil {
		kind := "hinted (" + c.Reason + ")"
		if c.Full {
			kind = "full compare (" + c.Reason + ")"
		}
		pt := "cut point " + c.Point
		if c.PointKept {
			pt = "nothing changed: point " + c.Point + " is current"
		}
		fmt.Fprintf(&b, "  last cycle: #%d, %s, compared %s, wrote %s, zeroed %s, %.1fs; %s\n",
			c.Cycle, kind, bytesHuman(c.Compared), bytesHuman(c.Written), bytesHuman(c.Zeroed), c.Seconds, pt)
	}
	if v.Running && !v.Next.IsZero() {
		fmt.Fprintf(&b, "  next cycle: %s (in %v)\n", v.Next.Format(time.RFC3339), v.Next.Sub(now).Round(time.Second))
	}
	if n := len(v.Points); n > 0 {
		fmt.Fprintf(&b, "  points: %d, oldest %s, newest %s\n", n, v.Points[0].ID, v.Points[n-1].ID)
	} else {
		fmt.Fprintf(&b, "  points: none\n")
	}
	if v.LastError != "" {
		fmt.Fprintf(&b, "  last error (%s): %s\n", v.LastErrorAt.Format(time.RFC3339), v.LastError)
	}
	return b.String()
}
