package main

import (
	"io"

	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/transfer"
)

// disk is an opened source or target.
type disk interface {
	transfer.Target
	io.Closer
}

// openSource opens SRC: a path to an image file or a block device, a
// page blob URL (blob.go), or an agent:// disk (agent.go).
func openSource(arg string, rf *runFlags) (transfer.Source, io.Closer, error) {
	if isBlobURL(arg) {
		return openBlobSource(arg, rf)
	}
	if isAgentURL(arg) {
		d, err := openAgent(arg, rf, false)
		if err != nil {
			return nil, nil, err
		}
		return d, d, nil
	}
	d, err := localdisk.OpenSource(arg, localdisk.SourceOptions{AllowLive: rf.allowLive})
	if err != nil {
		return nil, nil, err
	}
	return d, d, nil
}

// openTarget opens DST, creating a missing file (or page blob) when
// create is set.
func openTarget(arg string, rf *runFlags, create bool) (disk, error) {
	if isBlobURL(arg) {
		return openBlobTarget(arg, rf, create)
	}
	if isAgentURL(arg) {
		d, err := openAgent(arg, rf, true)
		if err != nil {
			return nil, err
		}
		return d, nil
	}
	zm, err := rf.zero()
	if err != nil {
		return nil, err
	}
	return localdisk.OpenTarget(arg, localdisk.TargetOptions{Create: create, Direct: rf.direct, ZeroMode: zm, StateDir: rf.journalDir})
}

// checkSides refuses two local disks that are names of one storage (a
// loop device and its backing file, two loop devices over one file, a
// disk and its partition) with overlapping byte ranges, before anything
// is written: localdisk.CheckSides. Other kinds of disk are not checked
// here.
func checkSides(src, dst any) error {
	s, ok1 := src.(*localdisk.Disk)
	d, ok2 := dst.(*localdisk.Disk)
	if !ok1 || !ok2 {
		return nil
	}
	return localdisk.CheckSides(s, d)
}
