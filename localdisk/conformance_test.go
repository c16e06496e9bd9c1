package localdisk_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/disk/disktest"
	"github.com/deltasync/deltasync/localdisk"
)

// TestConformance runs disktest's checker on file targets and, where
// root allows, on loop devices.
func TestConformance(t *testing.T) {
	t.Run("file", func(t *testing.T) {
		disktest.TestTarget(t, func(ctx context.Context, size int64) (disk.Target, func(), error) {
			p := filepath.Join(t.TempDir(), "target.img")
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				return nil, nil, err
			}
			if err := os.Truncate(p, size); err != nil {
				return nil, nil, err
			}
			d, err := localdisk.OpenTarget(p, localdisk.TargetOptions{})
			if err != nil {
				return nil, nil, err
			}
			return d, func() { d.Close() }, nil
		})
	})
	t.Run("loop", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("loop devices need root")
		}
		if _, err := exec.LookPath("losetup"); err != nil {
			t.Skip("no losetup")
		}
		disktest.TestTarget(t, func(ctx context.Context, size int64) (disk.Target, func(), error) {
			p := filepath.Join(t.TempDir(), "backing.img")
			if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
				return nil, nil, err
			}
			out, err := exec.Command("losetup", "--find", "--show", p).CombinedOutput()
			if err != nil {
				t.Skipf("losetup: %v: %s", err, out)
			}
			dev := strings.TrimSpace(string(out))
			d, err := localdisk.OpenTarget(dev, localdisk.TargetOptions{})
			if err != nil {
				exec.Command("losetup", "--detach", dev).Run()
				return nil, nil, err
			}
			return d, func() { d.Close(); exec.Command("losetup", "--detach", dev).Run() }, nil
		})
	})
}
