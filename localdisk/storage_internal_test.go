//go:build linux

package localdisk

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeSys builds a sysfs tree: vda (1 MiB) with partitions vda1 (sectors
// 64-575) and vda2 (576-1599), vdb, a device-mapper device dm-0 over vda1
// and an md device md0 over vda2 and vdb; sysRoot points at it for the
// test.
func fakeSys(t *testing.T) {
	root := t.TempDir()
	type dev struct {
		path, majmin, name string
		files              map[string]string
		slaves             []string
	}
	devs := []dev{
		{"vda", "252:0", "vda", map[string]string{"size": "2048"}, nil},
		{"vda/vda1", "252:1", "vda1", map[string]string{"size": "512", "partition": "1", "start": "64"}, nil},
		{"vda/vda2", "252:2", "vda2", map[string]string{"size": "1024", "partition": "2", "start": "576"}, nil},
		{"vdb", "252:16", "vdb", map[string]string{"size": "4096"}, nil},
		{"dm-0", "253:0", "dm-0", map[string]string{"size": "256", "dm/name": "vg-lv"}, []string{"vda1"}},
		{"md0", "9:0", "md0", map[string]string{"size": "4096", "md/level": "raid0"}, []string{"vda2", "vdb"}},
	}
	for _, d := range devs {
		dir := filepath.Join(root, "devices", d.path)
		files := map[string]string{"dev": d.majmin + "\n", "uevent": "MAJOR=x\nDEVNAME=" + d.name + "\n"}
		for k, v := range d.files {
			files[k] = v + "\n"
		}
		for k, v := range files {
			p := filepath.Join(dir, k)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for _, s := range d.slaves {
			if err := os.MkdirAll(filepath.Join(dir, "slaves", s), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for _, link := range []string{filepath.Join(root, "dev", "block", d.majmin), filepath.Join(root, "class", "block", d.name)} {
			if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(dir, link); err != nil {
				t.Fatal(err)
			}
		}
	}
	old := sysRoot
	sysRoot = root
	t.Cleanup(func() { sysRoot = old })
}

// TestResolveStacked: partitions are ranges of their disk; device-mapper
// and md devices are their members, whole and Inexact (their tables are
// not read), so they overlap what overlaps a member and nothing else.
func TestResolveStacked(t *testing.T) {
	fakeSys(t)
	resolve := func(maj, min uint32) Storage {
		t.Helper()
		rs, err := resolveDevice(unix.Mkdev(maj, min), -1, 0)
		if err != nil {
			t.Fatalf("%d:%d: %v", maj, min, err)
		}
		return Storage{Path: "x", Ranges: rs}
	}
	vda := StorageRef{Kind: StorageDevice, Dev: unix.Mkdev(252, 0)}
	vdb := StorageRef{Kind: StorageDevice, Dev: unix.Mkdev(252, 16)}

	whole, p1, p2, b := resolve(252, 0), resolve(252, 1), resolve(252, 2), resolve(252, 16)
	dm, md := resolve(253, 0), resolve(9, 0)
	if len(p2.Ranges) != 1 || p2.Ranges[0] != (StorageRange{Ref: vda, Name: "/dev/vda", Off: 576 * 512, Len: 1024 * 512, DiskOff: 0,
		Via: "/dev/vda2 is a partition of /dev/vda from byte 294912; /dev/vda is a whole disk"}) {
		t.Errorf("vda2 = %+v", p2.Ranges)
	}
	if len(dm.Ranges) != 1 || dm.Ranges[0].Ref != vda || !dm.Ranges[0].Inexact || dm.Ranges[0].DiskOff != -1 ||
		dm.Ranges[0].Off != 64*512 || dm.Ranges[0].Len != 512*512 || !strings.Contains(dm.Ranges[0].Via, "device-mapper") {
		t.Errorf("dm-0 = %+v", dm.Ranges)
	}
	if len(md.Ranges) != 2 || md.Ranges[0].Ref != vda || md.Ranges[1].Ref != vdb || !md.Ranges[1].Inexact ||
		!strings.Contains(md.Ranges[1].Via, "an md device") {
		t.Errorf("md0 = %+v", md.Ranges)
	}
	for _, tc := range []struct {
		name string
		x, y Storage
		want bool
	}{
		{"disk, partition", whole, p1, true},
		{"partitions", p1, p2, false},
		{"dm, its member", dm, p1, true},
		{"dm, its member's disk", dm, whole, true},
		{"dm, another partition", dm, p2, false},
		{"md, a member", md, b, true},
		{"md, dm on other members", md, dm, false},
		{"other disks", b, whole, false},
	} {
		if _, got := firstOverlap(tc.x, tc.y); got != tc.want {
			t.Errorf("%s: overlap %v, want %v", tc.name, got, tc.want)
		}
	}

	// Aliases are loop devices and their partitions only.
	if a := loopAliases(); len(a) != 0 {
		t.Errorf("loopAliases = %v in a tree without loop devices", a)
	}
}

func TestSubRanges(t *testing.T) {
	f := StorageRef{Kind: StorageFile, Dev: 1, Ino: 2}
	rs := []StorageRange{
		{Ref: f, Off: 1000, Len: 100, DiskOff: 0, Via: "a"},
		{Ref: f, Off: 5000, Len: 100, DiskOff: 100, Via: "b"},
		{Ref: f, Off: 0, Len: 10, DiskOff: -1, Inexact: true, Via: "c"},
	}
	got := subRanges(rs, 50, 100, "s")
	want := []StorageRange{
		{Ref: f, Off: 1050, Len: 50, DiskOff: 0, Via: "s; a"},
		{Ref: f, Off: 5000, Len: 50, DiskOff: 50, Via: "s; b"},
		{Ref: f, Off: 0, Len: 10, DiskOff: -1, Inexact: true, Via: "s; c"},
	}
	if len(got) != len(want) {
		t.Fatalf("subRanges = %+v", got)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("subRanges[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	if got := subRanges(rs[:2], 200, 10, "s"); len(got) != 0 {
		t.Errorf("subRanges past the end = %+v", got)
	}
}
