//go:build !purego

package xxh3multi

import "golang.org/x/sys/cpu"

// useAsm says whether this CPU runs the assembly loops (VPMULLQ needs
// AVX512DQ). A variable so the tests can check the fallback too.
var useAsm = cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ

// accumBlocks4 accumulates nblocks full 1 KiB blocks of each of four
// inputs, interleaved, scrambling after each block. It returns at once
// for a count of 0.
//
//go:noescape
func accumBlocks4(accs *[4][8]uint64, data *[4]*byte, secret *[secretSize]byte, nblocks int)

// accumStripes accumulates nstripes 64-byte stripes of data, the secret
// advancing 8 bytes a stripe, without scrambling. It returns at once for
// a count of 0.
//
//go:noescape
func accumStripes(acc *[8]uint64, data *byte, secret *byte, nstripes int)
