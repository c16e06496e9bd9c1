//go:build linux

package localdisk

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestScanMounts(t *testing.T) {
	const info = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
36 22 7:0 / /mnt/a rw,relatime shared:2 - ext4 /dev/loop0 rw,errors=remount-ro
37 22 7:1 / /mnt/with\040space ro,relatime - ext4 /dev/loop1 ro
38 22 7:2 / /mnt/bind ro,relatime - ext4 /dev/loop2 rw
39 22 0:45 / /proc rw,nosuid - proc proc rw
garbage line
`
	for _, tc := range []struct {
		fam    []uint64
		rw     bool
		mounts string
	}{
		{[]uint64{unix.Mkdev(7, 0)}, true, "/mnt/a (ext4, rw)"},
		{[]uint64{unix.Mkdev(7, 1)}, false, "/mnt/with space (ext4, ro)"},
		{[]uint64{unix.Mkdev(7, 2)}, false, "/mnt/bind (ext4, ro)"}, // read-only mount of a read-write superblock
		{[]uint64{unix.Mkdev(7, 1), unix.Mkdev(7, 0)}, true, "/mnt/a (ext4, rw), /mnt/with space (ext4, ro)"},
		{[]uint64{unix.Mkdev(7, 9)}, false, ""},
	} {
		fam := map[uint64]bool{}
		for _, d := range tc.fam {
			fam[d] = true
		}
		var u deviceUse
		scanMounts(strings.NewReader(info), fam, &u)
		if u.rw != tc.rw || u.String() != tc.mounts || u.mounted() != (tc.mounts != "") {
			t.Errorf("family %v: rw=%v mounts %q; want rw=%v %q", tc.fam, u.rw, u.String(), tc.rw, tc.mounts)
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/a\040b`:    "/a b",
		`/tab\011x`:  "/tab\tx",
		`/back\134s`: `/back\s`,
		`/plain`:     "/plain",
		`/short\04`:  `/short\04`,
		`/bad\09x`:   `/bad\09x`,
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}
