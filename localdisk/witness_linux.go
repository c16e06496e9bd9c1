package localdisk

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/deltasync/deltasync/disk"
)

// The evidence a journal is trusted on (transfer's Witness; see the
// package doc, # Evidence, which this comment details).
//
// A file's evidence is its identity (device, inode, birth time) and its
// change time (ctime, nanoseconds), read after the run stopped writing.
// Anything that writes the file, truncates it, or changes its metadata
// moves the ctime; a file deleted and created again has another birth
// time, even when ext4 gives it the same inode. On Linux 6.13 and later
// (multigrain timestamps) a change made after a stat gets a ctime later
// than the one that stat saw; before, a change within one clock tick
// (1-10 ms) of the run's last write keeps the ctime.
//
// A block device's evidence is its diskseq and its completed write and
// discard counters, and those of its parent disk when it is a partition,
// read after a flush; for a loop device, also the evidence of its backing
// file (writes to the backing file do not move the loop device's
// counters).
//
// A run killed with SIGKILL cannot record anything itself. A watchdog
// process does it: started by Watch (when the program called
// RunWatchdogIfAsked at start, as the deltasync command does), it waits
// on a pipe whose other end only the run holds; when the pipe closes
// without the run having said it stopped, the run's process is gone, all
// its writes done, and the watchdog flushes (devices) and records the
// evidence in a file named by the watch's token. It ignores SIGINT,
// SIGTERM and SIGHUP and runs in its own process group; a SIGKILL of the
// whole group (a cgroup kill) leaves no evidence, and the rerun compares
// everything.

// watchdogEnv marks the process that RunWatchdogIfAsked turns into a
// watchdog.
const watchdogEnv = "DELTASYNC_LOCALDISK_WATCHDOG"

// watchdogReady tells that this program calls RunWatchdogIfAsked, so it
// can be started again as a watchdog.
var watchdogReady atomic.Bool

// RunWatchdogIfAsked must be called at the start of main, before anything
// else, by programs whose interrupted runs onto local targets should
// resume after SIGKILL: when the process was started as a watchdog it
// does that job and exits; otherwise it returns at once and lets Watch
// start watchdogs. Programs that do not call it still resume after a
// clean stop (an error, a cancellation); after SIGKILL their reruns
// compare everything.
func RunWatchdogIfAsked() {
	if os.Getenv(watchdogEnv) != "1" {
		watchdogReady.Store(true)
		return
	}
	os.Exit(watchdogMain())
}

// evidence is what is recorded of a disk; see above.
type evidence struct {
	V     int    `json:"v"`
	Kind  string `json:"kind"` // "file" or "blockdev"
	Dev   uint64 `json:"dev,omitempty"`
	Ino   uint64 `json:"ino,omitempty"`
	Birth string `json:"birth,omitempty"` // "" where the filesystem keeps none
	Gen   string `json:"gen,omitempty"`   // inode generation, where there is no birth time
	Ctime string `json:"ctime,omitempty"`
	Size  int64  `json:"size"`
	// Devices.
	Rdev     uint64    `json:"rdev,omitempty"`
	Counters string    `json:"counters,omitempty"` // the device's and its parent's
	Backing  *evidence `json:"backing,omitempty"`  // a loop device's backing file
	// Tainted is the process ID of another process the watchdog saw
	// write the target while the run was writing it or after it died
	// (-1: its event queue overflowed). Such evidence never holds.
	Tainted int `json:"tainted,omitempty"`
	// Unflushed: the device still had the killed run's writes to write
	// back when the watchdog came (see watchdogMain). Never holds.
	Unflushed bool `json:"unflushed,omitempty"`
	// FlushFailed: the watchdog's flush of the killed run's writes
	// failed (its error, without the path). Never holds; Check returns
	// an error wrapping disk.ErrFlushFailed, so the rerun reads the
	// device with O_DIRECT.
	FlushFailed string `json:"flush_failed,omitempty"`
}

// fileEvidence reads the evidence of the file open at fd (any fd,
// O_PATH included).
func fileEvidence(fd int) (*evidence, error) {
	var sx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_SYNC_AS_STAT,
		unix.STATX_BASIC_STATS|unix.STATX_BTIME, &sx); err != nil {
		return nil, fmt.Errorf("statx: %w", err)
	}
	e := &evidence{V: 1, Kind: "file", Dev: unix.Mkdev(sx.Dev_major, sx.Dev_minor), Ino: sx.Ino, Size: int64(sx.Size),
		Ctime: fmt.Sprintf("%d.%09d", sx.Ctime.Sec, sx.Ctime.Nsec)}
	if sx.Mask&unix.STATX_BTIME != 0 {
		e.Birth = fmt.Sprintf("%d.%09d", sx.Btime.Sec, sx.Btime.Nsec)
	} else if g, err := unix.IoctlGetUint32(fd, fsIocGetVersion); err == nil {
		e.Gen = fmt.Sprint(g)
	}
	return e, nil
}

// deviceEvidence reads the evidence of the block device rdev.
func deviceEvidence(rdev uint64) (*evidence, error) {
	e := &evidence{V: 1, Kind: "blockdev", Rdev: rdev}
	c, ok := deviceCounters(rdev)
	if !ok {
		return nil, fmt.Errorf("the device's write counters are not readable in %s", sysDir(rdev))
	}
	e.Counters = c
	dir := sysDir(rdev)
	if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil {
		if real, err := filepath.EvalSymlinks(dir); err == nil {
			if parent, ok := readDev(filepath.Join(filepath.Dir(real), "dev")); ok {
				if pc, ok := deviceCounters(parent); ok {
					e.Counters += " parent " + pc
				}
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "loop", "backing_file")); err == nil {
		name := strings.TrimSpace(string(b))
		f, err := os.OpenFile(name, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("the loop device's backing file %s: %w", name, err)
		}
		be, err := fileEvidence(int(f.Fd()))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("the loop device's backing file %s: %w", name, err)
		}
		e.Backing = be
	}
	return e, nil
}

// differs names the first way in which now differs from e, or "".
func (e *evidence) differs(now *evidence) string {
	switch {
	case e.Tainted != 0:
		return tainted(e.Tainted) + " while the run was writing it or after it was killed"
	case e.Unflushed:
		return "the device still held writes of the killed run in its page cache, and writes by another program in the moment they were written back could not be told from them"
	case e.Kind != now.Kind:
		return fmt.Sprintf("the target was a %s and is now a %s", e.Kind, now.Kind)
	case e.Dev != now.Dev || e.Ino != now.Ino || e.Birth != now.Birth || e.Gen != now.Gen || e.Rdev != now.Rdev:
		return "the target is another file or device than the one the journal was saved for (deleted and created again?)"
	case e.Size != now.Size:
		return fmt.Sprintf("the target's size changed from %d to %d bytes since the run stopped", e.Size, now.Size)
	case e.Ctime != now.Ctime:
		return fmt.Sprintf("the target was changed since the run stopped (its change time moved from %s to %s)", e.Ctime, now.Ctime)
	case e.Counters != now.Counters:
		return fmt.Sprintf("the device was written since the run stopped (counters %s, now %s)", e.Counters, now.Counters)
	case (e.Backing == nil) != (now.Backing == nil):
		return "the loop device's backing file changed"
	case e.Backing != nil:
		if why := e.Backing.differs(now.Backing); why != "" {
			return "the loop device's backing file: " + why
		}
	}
	return ""
}

func tainted(pid int) string {
	if pid < 0 {
		return "the watchdog lost count of the target's writers"
	}
	return fmt.Sprintf("another process (pid %d) wrote the target", pid)
}

// current reads the disk's evidence now.
func (d *Disk) current() (*evidence, error) {
	if d.kind == BlockDevice {
		return deviceEvidence(d.rdev)
	}
	var e *evidence
	err := d.control(func(fd int) error {
		var err error
		e, err = fileEvidence(fd)
		return err
	})
	return e, err
}

// token is what a watch's Token says: where the watchdog records.
type token struct {
	V        int    `json:"v"`
	Evidence string `json:"evidence,omitempty"` // the watchdog's file, "" without one
}

// Watch implements transfer's Witness: see the package doc, # Evidence.
// It marks a file target incomplete (the extended attribute
// user.deltasync.incomplete, where the filesystem keeps user attributes)
// and, for a resumable run of a program that calls RunWatchdogIfAsked,
// starts the watchdog.
func (d *Disk) Watch(ctx context.Context, resumable bool) (disk.Watch, error) {
	if !d.writable {
		return nil, newError("watch", d.path, -1, 0, errf(ErrReadOnly, "opened as a source"))
	}
	if err := ctx.Err(); err != nil {
		return nil, newError("watch", d.path, -1, 0, err)
	}
	if d.kind == RegularFile {
		if err := d.setIncomplete(true); err != nil {
			return nil, err
		}
	}
	w := &watch{d: d}
	if resumable && watchdogReady.Load() {
		if err := w.startWatchdog(); err != nil {
			return nil, newError("watch", d.path, -1, 0, fmt.Errorf("starting the watchdog that records the target's state if this process is killed: %w", err))
		}
	}
	return w, nil
}

// IncompleteAttr is the extended attribute that marks a file target a run
// is writing; it is removed when the run succeeds.
const IncompleteAttr = "user.deltasync.incomplete"

func (d *Disk) setIncomplete(on bool) error {
	err := d.control(func(fd int) error {
		if on {
			// Only when missing: setting it again would move the ctime
			// that an earlier run's evidence holds.
			err := unix.Fsetxattr(fd, IncompleteAttr, []byte("1"), unix.XATTR_CREATE)
			if errors.Is(err, unix.EEXIST) {
				return nil
			}
			return err
		}
		err := unix.Fremovexattr(fd, IncompleteAttr)
		if errors.Is(err, unix.ENODATA) {
			return nil
		}
		return err
	})
	if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
		return nil // no user attributes here: no mark
	}
	if err != nil {
		return newError("watch", d.path, -1, 0, fmt.Errorf("the extended attribute %s: %w", IncompleteAttr, err))
	}
	return nil
}

// Incomplete reports whether a file target is marked as being written by
// a run that has not finished (IncompleteAttr).
func (d *Disk) Incomplete() bool {
	if d.kind != RegularFile {
		return false
	}
	var n int
	d.control(func(fd int) error {
		var err error
		n, err = unix.Fgetxattr(fd, IncompleteAttr, nil)
		if err != nil {
			n = -1
		}
		return nil
	})
	return n >= 0
}

// Check implements transfer's Witness: it compares the evidence recorded
// when the run stopped (by the run itself, or by its watchdog after a
// SIGKILL) with the disk now.
func (d *Disk) Check(ctx context.Context, tok, ev string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if ev == "" {
		var t token
		if err := json.Unmarshal([]byte(tok), &t); err != nil || t.V != 1 {
			return "the journal's evidence token is not one of localdisk's", nil
		}
		if t.Evidence == "" {
			return "the run was not stopped cleanly and had no watchdog to record the target's state (the program does not call localdisk.RunWatchdogIfAsked)", nil
		}
		// The watchdog holds a lock on its file while it lives: wait
		// for it to have recorded (a rerun may start at once).
		waitWatchdog(ctx, t.Evidence+".lock")
		b, err := readSmall(t.Evidence)
		os.Remove(t.Evidence)
		os.Remove(t.Evidence + ".lock")
		if err != nil {
			return "the run was not stopped cleanly and its watchdog left no record (was it killed too?)", nil
		}
		ev = string(b)
	}
	var was evidence
	if err := json.Unmarshal([]byte(ev), &was); err != nil || was.V != 1 {
		return "the journal's evidence is not one of localdisk's", nil
	}
	if was.FlushFailed != "" {
		return "", fmt.Errorf("%w: the watchdog's flush of the killed run's writes failed (%s), so nothing that run wrote is trusted", disk.ErrFlushFailed, was.FlushFailed)
	}
	now, err := d.current()
	if err != nil {
		return "", newError("check evidence", d.path, -1, 0, err)
	}
	return was.differs(now), nil
}

// waitWatchdog waits, at most 5 s, until no process holds the lock file
// name (a watchdog still recording).
func waitWatchdog(ctx context.Context, name string) {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return // no watchdog ever held it, or it is long gone
	}
	defer f.Close()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func readSmall(name string) ([]byte, error) {
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	return io.ReadAll(io.LimitReader(f, 64<<10))
}

// watch is one run's watch of a Disk.
type watch struct {
	d     *Disk
	tok   token
	once  sync.Once
	ctl   *os.File  // the run's end of the pipe to the watchdog
	reply *os.File  // the watchdog's answers
	proc  *exec.Cmd // the watchdog
	taint int       // what the watchdog saw when the run ended it
}

func (w *watch) Token() string {
	b, _ := json.Marshal(w.tok)
	return string(b)
}

// Stopped records the evidence now (the engine has flushed) and ends the
// watchdog, which says whether another process wrote the target.
func (w *watch) Stopped(ctx context.Context) (string, error) {
	if w.d.kind == BlockDevice {
		// Counters move when dirty pages reach the device: flush first.
		if err := w.d.control(func(fd int) error { return retryEINTR(func() error { return unix.Fdatasync(fd) }) }); err != nil {
			w.end()
			return "", newError("stopped", w.d.path, -1, 0, fmt.Errorf("fdatasync: %w", err))
		}
	}
	e, err := w.d.current()
	w.end()
	if err != nil {
		return "", newError("stopped", w.d.path, -1, 0, err)
	}
	e.Tainted = w.taint
	b, _ := json.Marshal(e)
	return string(b), nil
}

// Done clears the incomplete mark and ends the watch. When the watchdog
// saw another process write the target during the run, the target may
// differ from the source: Done says so and keeps the mark.
func (w *watch) Done(ctx context.Context) error {
	w.end()
	if w.taint != 0 {
		return newError("done", w.d.path, -1, 0, fmt.Errorf("%w: %s during the run, so the target may differ from the source; run the command again", ErrWrittenByOther, tainted(w.taint)))
	}
	if w.d.kind == RegularFile {
		return w.d.setIncomplete(false)
	}
	return nil
}

// Abandon ends the watch; the watchdog records nothing.
func (w *watch) Abandon() { w.end() }

// end tells the watchdog that the run ended knowingly, takes its answer
// (whether it saw another writer) and reaps it.
func (w *watch) end() {
	w.once.Do(func() {
		if w.ctl == nil {
			return
		}
		w.ctl.Write([]byte("stop\n"))
		w.ctl.Close()
		line, _ := readLine(w.reply, 10*time.Second)
		w.reply.Close()
		if pid, ok := strings.CutPrefix(line, "tainted "); ok {
			w.taint, _ = strconv.Atoi(pid)
			if w.taint == 0 {
				w.taint = -1
			}
		}
		w.proc.Wait()
		if w.tok.Evidence != "" {
			os.Remove(w.tok.Evidence)
			os.Remove(w.tok.Evidence + ".lock")
		}
	})
}

// readLine reads up to a newline, a byte at a time (the answers are
// short and nothing may be read past them), waiting at most timeout in
// all. f is a blocking pipe (blockingPipe), waited on with poll(2).
func readLine(f *os.File, timeout time.Duration) (string, error) {
	var b []byte
	var c [1]byte
	deadline := time.Now().Add(timeout)
	fd := int(f.Fd())
	for len(b) < 256 {
		left := time.Until(deadline)
		if left <= 0 {
			return string(b), os.ErrDeadlineExceeded
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(pfd, int(left/time.Millisecond)+1); err == unix.EINTR || (err == nil && n == 0) {
			continue
		} else if err != nil {
			return string(b), err
		}
		n, err := unix.Read(fd, c[:])
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if n == 1 {
			if c[0] == '\n' {
				return string(b), nil
			}
			b = append(b, c[0])
			continue
		}
		if err == nil {
			err = io.EOF
		}
		return string(b), err
	}
	return string(b), nil
}

// blockingPipe is os.Pipe with descriptors left blocking, so that the Go
// runtime does not register them with its network poller: a process
// whose poller has a descriptor parks its idle threads in epoll, which
// cost a sync thousands of context switches.
func blockingPipe() (r, w *os.File, err error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, nil, err
	}
	return os.NewFile(uintptr(p[0]), "|0"), os.NewFile(uintptr(p[1]), "|1"), nil
}

// evidenceDir is where watchdogs record: StateDir/evidence, by default
// $XDG_STATE_HOME/deltasync/evidence or ~/.local/state/deltasync/evidence.
func (d *Disk) evidenceDir() (string, error) {
	if d.stateDir != "" {
		return filepath.Join(d.stateDir, "evidence"), nil
	}
	dir, err := disk.DefaultStateDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "evidence"), nil
}

func (w *watch) startWatchdog() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := w.d.evidenceDir()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var id [16]byte
	rand.Read(id[:])
	out := filepath.Join(dir, hex.EncodeToString(id[:]))
	var target *os.File
	if err := w.d.control(func(fd int) error {
		// A path descriptor of the target: the watchdog stats it, and
		// reopens a device through it to flush, without holding it open.
		nfd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		target = os.NewFile(uintptr(nfd), w.d.path)
		return nil
	}); err != nil {
		return err
	}
	defer target.Close()
	ctlR, ctlW, err := blockingPipe()
	if err != nil {
		return err
	}
	defer ctlR.Close()
	repR, repW, err := blockingPipe()
	if err != nil {
		ctlW.Close()
		return err
	}
	defer repW.Close()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), watchdogEnv+"=1", "DELTASYNC_WATCHDOG_OUT="+out, "DELTASYNC_WATCHDOG_KIND="+w.d.kind.String())
	cmd.ExtraFiles = []*os.File{ctlR, target, repW} // fds 3, 4 and 5
	// Its own process group: a terminal's Ctrl-C does not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		ctlW.Close()
		repR.Close()
		return err
	}
	repW.Close()
	// The watchdog watches the target's writers from before the first
	// write: wait until it says so. A run killed before that leaves the
	// pipe closed, and the watchdog records as soon as it runs.
	line, err := readLine(repR, 10*time.Second)
	if !strings.HasPrefix(line, "ready") {
		ctlW.Close()
		repR.Close()
		cmd.Process.Kill()
		cmd.Wait()
		return fmt.Errorf("the watchdog did not start (%q, %v)", line, err)
	}
	w.ctl, w.reply, w.proc, w.tok = ctlW, repR, cmd, token{V: 1, Evidence: out}
	return nil
}

// watchdogMain is the watchdog process; see RunWatchdogIfAsked. Where
// fanotify is allowed (CAP_SYS_ADMIN), it also listens for writes to the
// target (FAN_MODIFY) and notes any made by another process than the run
// (kernel events carry the writer's process ID and are queued in order,
// so a write made after the run died cannot be mistaken for the run's).
func watchdogMain() int {
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
	out := os.Getenv("DELTASYNC_WATCHDOG_OUT")
	kind := os.Getenv("DELTASYNC_WATCHDOG_KIND")
	const ctl, target, reply = 3, 4, 5
	run, self := os.Getppid(), os.Getpid()
	// A loop device's backing file is watched too: the run's writes
	// reach it from the loop driver's kernel threads, anyone else's from
	// their own process.
	backing := ""
	if kind == BlockDevice.String() {
		var st unix.Stat_t
		if unix.Fstat(target, &st) == nil {
			if b, rerr := os.ReadFile(filepath.Join(sysDir(st.Rdev), "loop", "backing_file")); rerr == nil {
				backing = strings.TrimSpace(string(b))
			}
		}
	}
	// Events that report a file handle (FAN_REPORT_FID) rather than an
	// open descriptor: otherwise the kernel opens the target for the
	// watchdog at each of the run's writes, in the writer's time (653
	// against 206 close calls in a 4 GiB 1% sync; no change of its time
	// could be measured). Where the file system cannot give
	// handles (FUSE, some device nodes), events with descriptors.
	initFan := func(report uint) (int, error) {
		fan, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK|report, unix.O_RDONLY|unix.O_LARGEFILE|unix.O_CLOEXEC)
		if err != nil {
			return -1, err
		}
		if err := unix.FanotifyMark(fan, unix.FAN_MARK_ADD, unix.FAN_MODIFY, unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", target)); err != nil {
			unix.Close(fan)
			return -1, err
		}
		if backing != "" {
			if err := unix.FanotifyMark(fan, unix.FAN_MARK_ADD, unix.FAN_MODIFY, unix.AT_FDCWD, backing); err != nil && report != 0 {
				unix.Close(fan)
				return -1, err
			}
		}
		return fan, nil
	}
	fan, err := initFan(unix.FAN_REPORT_FID)
	if err != nil {
		fan, err = initFan(0)
	}
	// Held until this process ends: a rerun waits on it for the record.
	if lk, err := os.OpenFile(out+".lock", os.O_RDWR|os.O_CREATE, 0o600); err == nil {
		unix.Flock(int(lk.Fd()), unix.LOCK_EX)
	}
	if err != nil {
		fan = -1
		unix.Write(reply, []byte("ready nofan\n"))
	} else {
		unix.Write(reply, []byte("ready fan\n"))
	}
	taint := 0
	buf := make([]byte, 64<<10)
	drain := func() {
		for fan >= 0 {
			n, err := unix.Read(fan, buf)
			if err == unix.EINTR {
				continue
			}
			if err != nil || n <= 0 {
				return
			}
			for b := buf[:n]; len(b) >= int(unsafe.Sizeof(unix.FanotifyEventMetadata{})); {
				ev := (*unix.FanotifyEventMetadata)(unsafe.Pointer(&b[0]))
				if ev.Event_len < uint32(unsafe.Sizeof(*ev)) || int(ev.Event_len) > len(b) {
					break
				}
				if ev.Fd >= 0 {
					unix.Close(int(ev.Fd))
				}
				switch {
				case ev.Mask&unix.FAN_Q_OVERFLOW != 0:
					taint = -1
				case ev.Mask&unix.FAN_MODIFY != 0 && int(ev.Pid) != run && int(ev.Pid) != self && taint == 0 && !kernelThread(int(ev.Pid)):
					taint = int(ev.Pid)
				}
				b = b[ev.Event_len:]
			}
		}
	}
	// The events are read in batches, every drainEvery, not as each
	// write makes one, so that the watchdog does not wake at every write
	// of the run. Events stay queued in
	// order, with their writers' process IDs, so reading them late loses
	// nothing (the kernel merges a writer's repeated events; an overflow
	// of the queue taints).
	const drainEvery = 100 // ms
	fds := []unix.PollFd{{Fd: ctl, Events: unix.POLLIN}}
	for {
		timeout := -1
		if fan >= 0 {
			timeout = drainEvery
		}
		if _, err := unix.Poll(fds, timeout); err != nil && err != unix.EINTR {
			return 1
		}
		drain()
		if fds[0].Revents == 0 {
			continue
		}
		n, _ := unix.Read(ctl, buf[:64])
		if n > 0 && strings.HasPrefix(string(buf[:n]), "stop") {
			// The run ended knowingly: tell it what was seen.
			drain()
			if taint != 0 {
				unix.Write(reply, []byte(fmt.Sprintf("tainted %d\n", taint)))
			} else {
				unix.Write(reply, []byte("clean\n"))
			}
			return 0
		}
		if n <= 0 {
			break // EOF: the run's process is gone, all its writes done
		}
	}
	var e *evidence
	if kind == BlockDevice.String() {
		var st unix.Stat_t
		if err = unix.Fstat(target, &st); err == nil {
			// The counters at once, then after a flush of the run's dirty
			// pages. Writes to a device node make no fanotify events:
			// when the flush moved the counters, the run's writeback and
			// a write by another program in that moment look alike, and
			// the evidence says so.
			var before *evidence
			before, err = deviceEvidence(st.Rdev)
			if dev, oerr := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", target), os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil && oerr == nil {
				// The run's dirty pages reach the device. This flush may
				// be the one to see a write-back failure, which no later
				// fsync reports again: it is recorded, and the cached
				// pages, which may hold what the device lost, dropped.
				ferr := unix.Fdatasync(int(dev.Fd()))
				if ferr != nil {
					unix.Fadvise(int(dev.Fd()), 0, 0, unix.FADV_DONTNEED)
					dropLoopBacking(st.Rdev)
				}
				dev.Close()
				e, err = deviceEvidence(st.Rdev)
				if err == nil && ferr != nil {
					e.FlushFailed = ferr.Error()
				}
				if err == nil && e.differs(before) != "" {
					e.Unflushed = true
				}
			} else if err == nil {
				err = oerr
			}
		}
	} else {
		e, err = fileEvidence(target)
	}
	if err != nil {
		return 1
	}
	// A write whose change time the stat saw may still be finishing: its
	// event comes at its end.
	time.Sleep(20 * time.Millisecond)
	drain()
	e.Tainted = taint
	data, _ := json.Marshal(e)
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return 1
	}
	if f, err := os.Open(tmp); err == nil {
		f.Sync()
		f.Close()
	}
	if err := os.Rename(tmp, out); err != nil {
		return 1
	}
	return 0
}

// kernelThread reports whether pid is a kernel thread (PF_KTHREAD in
// /proc/PID/stat): a loop device's worker writing its backing file.
func kernelThread(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The command name is in parentheses and may hold spaces: fields
	// count from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 7 {
		return false
	}
	flags, err := strconv.ParseUint(f[6], 10, 64)
	return err == nil && flags&0x00200000 != 0
}

// fsIocGetVersion is FS_IOC_GETVERSION (_IOR('v', 1, long)) on 64-bit
// Linux: the inode generation.
const fsIocGetVersion = 0x80087601
