//go:build !amd64 || purego

package xxh3multi

var useAsm = false

func accumBlocks4(accs *[4][8]uint64, data *[4]*byte, secret *[secretSize]byte, nblocks int) {
	panic("xxh3multi: no assembly on this platform")
}

func accumStripes(acc *[8]uint64, data *byte, secret *byte, nstripes int) {
	panic("xxh3multi: no assembly on this platform")
}
