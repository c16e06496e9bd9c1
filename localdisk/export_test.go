//go:build linux

package localdisk

// ZeroFallbacks reports whether d has given up on fallocate (a file) or
// BLKZEROOUT (a device) and writes zeros instead.
func ZeroFallbacks(d *Disk) (fallocate, zeroout bool) {
	return d.noFallocate.Load(), d.noZeroout.Load()
}
