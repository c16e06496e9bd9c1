package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/deltasync/deltasync/replicate"
)

// dirtyFeed is -dirty-feed FILE: a text file to which the source's writer
// appends one line "OFFSET LENGTH" (decimal bytes) for every write, BEFORE
// it issues the write. The replicator reads the lines it has not read yet
// into a dirty map (replicate.DirtyMap, in the state folder) when a cycle
// freezes its source, and the cycle compares only those ranges.
//
// When the feed is trusted: after a cycle that compared everything, as long
// as the map is (see replicate.DirtyMap: not a new map, closed cleanly, the
// generation the replicator committed) and the feed has only grown since the
// position last read (same file, not shorter). A replaced or truncated
// feed, a line that is not two numbers, or a range past the disk's end
// makes the next cycle compare everything, and says why in its log line.
type dirtyFeed struct {
	path, posPath string
	m             *replicate.DirtyMap
	size          int64

	mu  sync.Mutex
	pos feedPos
}

// feedPos is how far the feed was read: the file (device and inode) and
// the offset after the last whole line read.
type feedPos struct {
	Dev, Ino uint64
	Off      int64
}

func openDirtyFeed(path, mapPath string, size int64) (*dirtyFeed, error) {
	m, err := replicate.OpenDirtyMap(mapPath, size, 0)
	if err != nil {
		return nil, fmt.Errorf("-dirty-feed: the dirty map %s: %w", mapPath, err)
	}
	f := &dirtyFeed{path: path, posPath: mapPath + ".feed", m: m, size: size}
	if b, err := os.ReadFile(f.posPath); err == nil {
		if json.Unmarshal(b, &f.pos) != nil {
			m.Invalidate("the dirty feed's position file " + f.posPath + " is damaged")
			f.pos = feedPos{}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		m.Close()
		return nil, err
	}
	return f, nil
}

func (f *dirtyFeed) Close() error { return f.m.Close() }

// catchUp reads the feed's new lines into the map, saves the map, then
// the position (so a crash between the two reads lines twice, never
// skips one).
func (f *dirtyFeed) catchUp() {
	f.mu.Lock()
	defer f.mu.Unlock()
	fl, err := os.Open(f.path)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) || f.pos.Off > 0 {
			f.m.Invalidate(fmt.Sprintf("the dirty feed %s cannot be read: %v", f.path, err))
		}
		return
	}
	defer fl.Close()
	st, err := fl.Stat()
	if err != nil {
		f.m.Invalidate(fmt.Sprintf("the dirty feed %s: %v", f.path, err))
		return
	}
	sys, _ := st.Sys().(*syscall.Stat_t)
	var dev, ino uint64
	if sys != nil {
		dev, ino = uint64(sys.Dev), uint64(sys.Ino)
	}
	if f.pos.Off > 0 && (dev != f.pos.Dev || ino != f.pos.Ino || st.Size() < f.pos.Off) {
		f.m.Invalidate(fmt.Sprintf("the dirty feed %s was replaced or truncated since it was read", f.path))
		f.pos = feedPos{}
	}
	if _, err := fl.Seek(f.pos.Off, io.SeekStart); err != nil {
		f.m.Invalidate(fmt.Sprintf("the dirty feed %s: %v", f.path, err))
		return
	}
	r := bufio.NewReader(fl)
	off := f.pos.Off
	for {
		line, err := r.ReadString('\n')
		if err != nil { // a line not yet ended is read next time
			break
		}
		off += int64(len(line))
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		a, e1 := strconv.ParseInt(fields[0], 10, 64)
		var n int64
		var e2 error
		if len(fields) == 2 {
			n, e2 = strconv.ParseInt(fields[1], 10, 64)
		}
		if len(fields) != 2 || e1 != nil || e2 != nil || a < 0 || n < 0 || a > f.size-n {
			f.m.Invalidate(fmt.Sprintf("the dirty feed %s has a bad line at byte %d: %q (want OFFSET LENGTH within the disk's %d bytes)",
				f.path, off-int64(len(line)), strings.TrimSpace(line), f.size))
			continue
		}
		f.m.Mark(a, n)
	}
	if err := f.m.Save(); err != nil {
		f.m.Invalidate(fmt.Sprintf("saving the dirty map: %v", err))
		return
	}
	f.pos = feedPos{Dev: dev, Ino: ino, Off: off}
	b, _ := json.Marshal(f.pos)
	if err := writeFileAtomic(f.posPath, b); err != nil {
		f.m.Invalidate(fmt.Sprintf("saving the dirty feed's position: %v", err))
	}
}

// feedFreezer reads the feed when the source is frozen: after the freeze,
// so that the lines of every write done before it are in the map when the
// cycle takes its hints.
type feedFreezer struct {
	replicate.Freezer
	feed *dirtyFeed
}

func (f feedFreezer) Freeze(ctx context.Context) (replicate.View, error) {
	f.feed.catchUp() // before: what is there goes in the Take's ranges already
	v, err := f.Freezer.Freeze(ctx)
	if err == nil {
		f.feed.catchUp()
	}
	return v, err
}

// ReleaseView passes an earlier process's view on to the freezer.
func (f feedFreezer) ReleaseView(ctx context.Context, id string) error {
	if r, ok := f.Freezer.(replicate.ViewReleaser); ok {
		return r.ReleaseView(ctx, id)
	}
	return nil
}
