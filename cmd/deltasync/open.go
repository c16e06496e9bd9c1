package main

import (
	"io"

	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/localdisk"
)

// opened is an opened source or target.
type opened interface {
	disk.Target
	io.Closer
}

// openSource opens SRC: a path to an image file or a block device, a
// page blob URL (blob.go), or an agent:// disk (agent.go). With -vhd, a
// fixed VHD file is the disk inside it (vhd.go).
func openSource(arg string, rf *runFlags) (disk.Source, io.Closer, error) {
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
	ld, err := localdisk.OpenSource(arg, localdisk.SourceOptions{AllowLive: rf.allowLive})
	if err != nil {
		return nil, nil, err
	}
	d, err := localVHD(arg, ld, rf.blob.vhd, false)
	if err != nil {
		return nil, nil, err
	}
	return d, d, nil
}

// openTarget opens DST, creating a missing file (or page blob) when
// create is set. A file or page blob that ends in a VHD footer is
// refused unless -vhd says how to take it (vhd.go).
func openTarget(arg string, rf *runFlags, create bool) (opened, error) {
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
	d, err := localdisk.OpenTarget(arg, localdisk.TargetOptions{Create: create, Direct: rf.direct, ZeroMode: zm, StateDir: rf.journalDir})
	if err != nil {
		return nil, err
	}
	return localVHD(arg, d, rf.blob.vhd, true)
}

// checkSides refuses two local disks that are names of one storage (a
// loop device and its backing file, two loop devices over one file, a
// disk and its partition) with overlapping byte ranges, before anything
// is written: localdisk.CheckSides. Other kinds of disk are not checked
// here. A VHD file is checked as the file it is.
func checkSides(src, dst any) error {
	s, ok1 := unwrapLocal(src).(*localdisk.Disk)
	d, ok2 := unwrapLocal(dst).(*localdisk.Disk)
	if !ok1 || !ok2 {
		return nil
	}
	return localdisk.CheckSides(s, d)
}
