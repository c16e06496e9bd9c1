package replicate_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/deltasync/deltasync/replicate"
)

// Retention keeps the 2 newest points and the newest point of each of the
// 3 most recent hours that have points (restic's keep-last and
// keep-hourly); times are the target service's clock.
func ExamplePolicy_Retain() {
	p := replicate.Policy{KeepLast: 2, KeepHourly: 3}
	t0 := time.Date(2026, 5, 1, 9, 40, 0, 0, time.UTC)
	var pts []replicate.Point
	for i := range 8 {
		at := t0.Add(time.Duration(i) * 15 * time.Minute)
		pts = append(pts, replicate.Point{ID: at.Format("15:04"), Time: at})
	}
	keep, drop := p.Retain(pts)
	for _, k := range keep {
		fmt.Print(k.ID, " ")
	}
	fmt.Println("kept")
	for _, d := range drop {
		fmt.Print(d.ID, " ")
	}
	fmt.Println("deleted")
	// Output:
	// 09:55 10:55 11:10 11:25 kept
	// 09:40 10:10 10:25 10:40 deleted
}

// A 30-second interval cuts too many incremental snapshots for a managed
// disk (7 per 5 minutes); 24 hourly points plus 12 recent ones fit the 100
// snapshots of a premium page blob.
func ExamplePolicy_Validate() {
	p := replicate.Policy{Interval: 30 * time.Second}
	err := p.Validate(0, replicate.ManagedDiskQuota)
	fmt.Println(errors.Is(err, replicate.ErrBadPolicy))
	fmt.Println(err)
	fmt.Println(replicate.Policy{}.Validate(1, replicate.PremiumPageBlobQuota), replicate.Policy{}.MaxPoints())
	// Output:
	// true
	// replicate: invalid policy: an interval of 30s cuts up to 10 snapshots per 5m0s, managed disk incremental snapshots allow 7 (use at least 42.857142858s)
	// <nil> 37
}

// A dirty map records written ranges by grain; a cycle takes them. A new
// map is not trusted: the first cycle compares everything.
func ExampleDirtyMap() {
	dir, _ := os.MkdirTemp("", "dirty")
	defer os.RemoveAll(dir)
	m, err := replicate.OpenDirtyMap(filepath.Join(dir, "vm1.dirty"), 1<<20, 64<<10)
	if err != nil {
		panic(err)
	}
	_, trusted, why := m.Take()
	fmt.Println(trusted, why)
	m.Done() // the first, full cycle succeeded

	m.Mark(100, 10)
	m.Mark(200<<10, 70<<10)
	rs, trusted, _ := m.Take()
	fmt.Println(trusted, rs)
	m.Done()
	m.Close()
	// Output:
	// false new dirty map
	// true [{0 65536} {196608 131072}]
}
