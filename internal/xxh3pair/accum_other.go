//go:build !amd64 || purego

package xxh3pair

var useAsm = false

func accumBlocks(acc *[8]uint64, data *byte, secret *[secretSize]byte, nblocks int) {
	panic("xxh3pair: no assembly on this platform")
}

func accumBlocks2(acc0, acc1 *[8]uint64, d0, d1 *byte, secret *[secretSize]byte, nblocks int) {
	panic("xxh3pair: no assembly on this platform")
}

func accumBlocks4(accs *[4][8]uint64, data *[4]*byte, secret *[secretSize]byte, nblocks int) {
	panic("xxh3pair: no assembly on this platform")
}

func accumStripes(acc *[8]uint64, data *byte, secret *byte, nstripes int) {
	panic("xxh3pair: no assembly on this platform")
}
