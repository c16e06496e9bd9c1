//go:build !linux

package blockdiff

import (
	"context"
	"errors"
	"os"
	"sync/atomic"

	"github.com/deltasync/deltasync/disk"
)

// directFile is Linux only: elsewhere every chunk goes through the page cache.
type directFile struct{}

func openDirect(*os.File, *config) *directFile { return nil }

func (x *directFile) close() {}

func (x *directFile) cold(off, end int64) bool { return false }

func cached(*os.File, int64, int64) bool { return false }

var errDirectRefused = errors.New("direct read refused")

func (x *directFile) read(context.Context, Side, int64, int64, []disk.Range, bool, *atomic.Int64) (view, error) {
	return view{}, errDirectRefused
}
