package agent

import "github.com/deltasync/deltasync/localdisk"

// openLocal opens the disks a server serves, with localdisk.
func openLocal(allowLive bool, zm localdisk.ZeroMode) func(path string, write bool) (serverDisk, error) {
	return func(path string, write bool) (serverDisk, error) {
		if write {
			return localdisk.OpenTarget(path, localdisk.TargetOptions{ZeroMode: zm})
		}
		return localdisk.OpenSource(path, localdisk.SourceOptions{AllowLive: allowLive})
	}
}
