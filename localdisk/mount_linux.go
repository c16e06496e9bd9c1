package localdisk

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// deviceUse is what /proc and /sys say about the use of a block device,
// counting its family: the device, its parent disk when it is a partition,
// its partitions, and the devices stacked on any of these (device-mapper,
// md), recursively.
type deviceUse struct {
	mounts  []string // "<mount point> (<fstype>, rw|ro)"
	rw      bool     // some member is mounted read-write or is active swap
	holders []string // names of devices stacked on the device, e.g. "dm-0"
}

func (u deviceUse) mounted() bool { return len(u.mounts) > 0 }

func (u deviceUse) String() string {
	return strings.Join(u.mounts, ", ")
}

// useOf inspects the family of the device rdev. It reads only the caller's
// mount namespace: a mount in another namespace is not seen here (O_EXCL,
// which is kernel-wide, catches it). Unreadable /proc or /sys files count
// as "nothing found".
func useOf(rdev uint64) deviceUse {
	fam := map[uint64]bool{}
	var u deviceUse
	family(rdev, fam, &u.holders, 0, true)
	mountsOf(fam, &u)
	swapsOf(fam, &u)
	return u
}

func sysDir(rdev uint64) string {
	return fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(rdev), unix.Minor(rdev))
}

// family adds rdev, its partitions, its holders (recursively) and, at the
// top level, the whole disk a partition belongs to.
func family(rdev uint64, fam map[uint64]bool, holders *[]string, depth int, top bool) {
	if fam[rdev] || depth > 8 {
		return
	}
	fam[rdev] = true
	dir := sysDir(rdev)
	if top {
		if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil {
			if real, err := filepath.EvalSymlinks(dir); err == nil {
				if parent, ok := readDev(filepath.Join(filepath.Dir(real), "dev")); ok {
					fam[parent] = true
				}
			}
		}
	}
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			if _, err := os.Stat(filepath.Join(p, "partition")); err != nil {
				continue
			}
			if d, ok := readDev(filepath.Join(p, "dev")); ok {
				family(d, fam, holders, depth+1, false)
			}
		}
	}
	if ents, err := os.ReadDir(filepath.Join(dir, "holders")); err == nil {
		for _, e := range ents {
			*holders = append(*holders, e.Name())
			if d, ok := readDev(filepath.Join("/sys/class/block", e.Name(), "dev")); ok {
				family(d, fam, holders, depth+1, false)
			}
		}
	}
}

// readDev parses a sysfs "dev" file ("major:minor").
func readDev(path string) (uint64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	return parseMajMin(strings.TrimSpace(string(b)))
}

// mountsOf adds the mounts of /proc/self/mountinfo whose device is in fam.
// A mount is matched by its major:minor, or, for filesystems that report an
// anonymous device (btrfs), by the device its source path names.
func mountsOf(fam map[uint64]bool, u *deviceUse) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	scanMounts(f, fam, u)
}

// scanMounts reads mountinfo lines from r.
func scanMounts(r io.Reader, fam map[uint64]bool, u *deviceUse) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint mountopts [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 6 || len(b) < 3 {
			continue
		}
		match := false
		if d, ok := parseMajMin(a[2]); ok && fam[d] {
			match = true
		} else if src := unescapeMount(b[1]); strings.HasPrefix(src, "/") {
			var st unix.Stat_t
			if unix.Stat(src, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK && fam[uint64(st.Rdev)] {
				match = true
			}
		}
		if !match {
			continue
		}
		rw := hasOpt(a[5], "rw") && hasOpt(b[2], "rw")
		mode := "ro"
		if rw {
			mode = "rw"
			u.rw = true
		}
		u.mounts = append(u.mounts, fmt.Sprintf("%s (%s, %s)", unescapeMount(a[4]), b[0], mode))
	}
}

// swapsOf counts an active swap device in fam as a read-write mount.
func swapsOf(fam map[uint64]bool, u *deviceUse) {
	b, err := os.ReadFile("/proc/swaps")
	if err != nil {
		return
	}
	for i, line := range strings.Split(string(b), "\n") {
		fs := strings.Fields(line)
		if i == 0 || len(fs) == 0 {
			continue
		}
		var st unix.Stat_t
		name := unescapeMount(fs[0])
		if unix.Stat(name, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK && fam[uint64(st.Rdev)] {
			u.rw = true
			u.mounts = append(u.mounts, name+" (swap, rw)")
		}
	}
}

func parseMajMin(s string) (uint64, bool) {
	maj, min, ok := strings.Cut(s, ":")
	if !ok {
		return 0, false
	}
	a, err1 := strconv.ParseUint(maj, 10, 32)
	c, err2 := strconv.ParseUint(min, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return unix.Mkdev(uint32(a), uint32(c)), true
}

func hasOpt(opts, want string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == want {
			return true
		}
	}
	return false
}

// unescapeMount undoes the octal escapes (\040 for a space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
