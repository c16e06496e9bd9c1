//go:build amd64 && !purego

package xxh3pair

import "golang.org/x/sys/cpu"

// useAsm says whether this CPU runs the assembly loops (VPMULLQ needs
// AVX512DQ). A variable so the tests can check the fallback too.
var useAsm = cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ

// accumBlocks accumulates nblocks full 1 KiB blocks of data, scrambling
// after each. The loops of all four return at once for a count of 0.
//
//go:noescape
func accumBlocks(acc *[8]uint64, data *byte, secret *[secretSize]byte, nblocks int)

// accumBlocks2 is accumBlocks on two inputs at once, interleaved.
//
//go:noescape
func accumBlocks2(acc0, acc1 *[8]uint64, d0, d1 *byte, secret *[secretSize]byte, nblocks int)

// accumBlocks4 is accumBlocks on four inputs at once.
//
//go:noescape
func accumBlocks4(accs *[4][8]uint64, data *[4]*byte, secret *[secretSize]byte, nblocks int)

// accumStripes accumulates nstripes 64-byte stripes of data, the secret
// advancing 8 bytes a stripe, without scrambling.
//
//go:noescape
func accumStripes(acc *[8]uint64, data *byte, secret *byte, nstripes int)
