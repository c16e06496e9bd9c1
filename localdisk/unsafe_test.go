//go:build linux

package localdisk_test

import "unsafe"

func uintptrOf(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }
