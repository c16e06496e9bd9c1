package transfer

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/deltasync/deltasync/disk"
)

func TestPlanner(t *testing.T) {
	D, Z := disk.Data, disk.Zero
	type ext = disk.Extent
	x := func(off, n int64, k disk.Kind) ext { return ext{Off: off, Len: n, Kind: k} }
	for _, tc := range []struct {
		name     string
		zeroSize int64 // 0: no Zeroer
		limit    int64
		in       []ext
		want     string
	}{
		{"data rounded outward", 16384, 1 << 20, []ext{x(100, 100, D)}, "w[0,4096)"},
		{"data split to the write size", 16384, 1 << 20, []ext{x(0, 20000, D)}, "w[0,8192) w[8192,16384) w[16384,20480)"},
		{"zero split to the zero size", 16384, 1 << 20, []ext{x(0, 4096, D), x(4096, 36864, Z)},
			"w[0,4096) z[4096,20480) z[20480,36864) z[36864,40960)"},
		{"zero edges written as data", 16384, 1 << 20, []ext{x(100, 8900, Z)}, "w[0,4096) z[4096,8192) w[8192,12288)"},
		{"zero without aligned interior", 16384, 1 << 20, []ext{x(100, 900, Z)}, "w[0,4096)"},
		{"neighbours merged after rounding", 16384, 1 << 20, []ext{x(0, 100, D), x(5000, 100, D)}, "w[0,8192)"},
		{"overlap after rounding merged", 16384, 1 << 20, []ext{x(0, 100, D), x(200, 100, Z), x(300, 100, D)}, "w[0,4096)"},
		{"data then zero edge clipped", 16384, 1 << 20, []ext{x(0, 100, D), x(200, 7992, Z)}, "w[0,4096) z[4096,8192)"},
		{"clipped to the target's end", 16384, 10000, []ext{x(8192, 1808, D)}, "w[8192,10000)"},
		{"zeros written without Zeroer", 0, 1 << 20, []ext{x(0, 20480, Z)}, "z[0,8192) z[8192,16384) z[16384,20480)"},
		{"issued piece not rewritten", 16384, 1 << 20, []ext{x(0, 8192, D), x(8200, 100, D)}, "w[0,8192) w[8192,12288)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			p := &planner{align: 4096, writeSize: 8192, zeroSize: tc.zeroSize, limit: tc.limit,
				emit: func(o *op) error {
					k := "w"
					if o.kind == opZero {
						k = "z"
					}
					got = append(got, fmt.Sprintf("%s[%d,%d)", k, o.off, o.end))
					return nil
				}}
			for _, e := range tc.in {
				if err := p.add(e); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.flush(); err != nil {
				t.Fatal(err)
			}
			if s := fmt.Sprint(got); s != "["+tc.want+"]" {
				t.Fatalf("got %s, want [%s]", s, tc.want)
			}
		})
	}
}

// An unaligned source end, rounded up over a longer target, is padded
// with the target's own bytes: its excess is kept as it was.
func TestUnalignedSourceEndKeepsTargetTail(t *testing.T) {
	src := bytes.Repeat([]byte{7}, 10000)
	old := bytes.Repeat([]byte{9}, 16384)
	d := newMemDisk(bytes.Clone(old), "dst")
	d.Align = 4096
	st, err := Sync(context.Background(), newMemDisk(bytes.Clone(src), "src"), d, &Options{BlockSize: 4096, NoJournal: true, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Clone(src), old[len(src):]...)
	if !bytes.Equal(d.Bytes(), want) {
		t.Fatalf("target differs at %d", firstDiff(d.Bytes(), want))
	}
	if st.ExcessKept != int64(len(old)-len(src)) {
		t.Fatalf("stats %+v", st)
	}
	checkOps(t, d, 4096, 0, int64(len(old)))
}
