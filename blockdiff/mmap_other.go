//go:build !(linux || darwin || freebsd)

package blockdiff

import (
	"context"
	"errors"
	"os"

	"github.com/deltasync/deltasync/disk"
)

// On systems without the Unix mappings (Windows), files and devices are
// read with ReadAt into pooled buffers (what Options.NoMmap does
// elsewhere), without an allocation map of their own and without cache
// advice.

var pageSize = int64(os.Getpagesize())

// mmapFile is never made here: newMmapFile returns nil, and a nil mapping
// is the ReadAt path.
type mmapFile struct{}

func newMmapFile(*os.File, int64) *mmapFile { return nil }

func (*mmapFile) mapRange(off, end int64) ([]byte, func(), error) {
	return nil, nil, errors.New("memory mappings are not used on this system")
}

func (*mmapFile) prefetch(off, end int64) {}

// catchFault has nothing to catch: nothing is mapped.
func catchFault(err *error, wins ...*faultWindow) {}

func withFaults(fn func()) { fn() }

var errNoAllocationMap = errors.New("allocation map not supported")

type noMapper struct{}

func (noMapper) AllocatedRanges(context.Context, int64, int64) ([]disk.Range, error) {
	return nil, errNoAllocationMap
}

func newSeekMapper(*os.File) disk.AllocationMapper { return noMapper{} }

func dropPages(*os.File, int64, int64) {}

// canDropPages: dropPages drops nothing here.
const canDropPages = false
