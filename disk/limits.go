package disk

// WriteLimits states what a single write must look like: offsets and
// lengths multiples of Align, at most MaxWrite bytes (0: no limit).
// Fallback: Align 1, no limit.
type WriteLimits interface {
	WriteLimits() (align, maxWrite int64)
}
