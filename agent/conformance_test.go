package agent

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/disk/disktest"
)

// TestConformance runs disktest's checker on agent disks over loopback
// TLS: one agent serves a fresh zeroed disk to each case.
func TestConformance(t *testing.T) {
	const disks = 16
	m := map[string][]byte{}
	for i := range disks {
		m[fmt.Sprintf("d%d", i)] = make([]byte, disktest.CheckSize)
	}
	a := startAgent(t, m, nil)
	var next atomic.Int64
	disktest.TestTarget(t, func(ctx context.Context, size int64) (disk.Target, func(), error) {
		i := next.Add(1) - 1
		if i >= disks || size != disktest.CheckSize {
			return nil, nil, fmt.Errorf("the test agent serves %d disks of %d bytes", disks, disktest.CheckSize)
		}
		d, err := a.client().OpenTarget(ctx, fmt.Sprintf("d%d", i))
		if err != nil {
			return nil, nil, err
		}
		return d, func() { d.Close() }, nil
	})
}
