//go:build !linux

package agent

import (
	"fmt"
	"runtime"

	"github.com/deltasync/deltasync/localdisk"
)

// openLocal refuses: localdisk, which a server opens its disks with, is
// Linux's. The client side of this package (Dial, Open, OpenTarget)
// works here; a server runs next to its disks, on Linux.
func openLocal(bool, localdisk.ZeroMode) func(path string, write bool) (serverDisk, error) {
	return func(path string, write bool) (serverDisk, error) {
		return nil, fmt.Errorf("agent: cannot serve %s: serving local disks needs Linux (this is %s)", path, runtime.GOOS)
	}
}
