//go:build !purego

#include "textflag.h"

// XXH3's accumulation over 64-byte stripes, eight 64-bit lanes in one
// ZMM register: for lane i, with v the data and k = v ^ secret,
//	acc[i^1] += v;  acc[i] += lo32(k) * hi32(k)
// and after each 1 KiB block the scramble
//	acc ^= acc >> 47;  acc ^= secret[128:192];  acc *= PRIME32_1
// The data sums go to a separate register within a block (addition mod
// 2^64 is associative), so consecutive stripes do not wait on each other.
// Registers of accumBlocks4: Z0, Z8, Z9, Z10 the four accumulators, Z11-Z14
// their block's data sums, Z6 the scramble secret, Z7 PRIME32_1 in every
// lane, Z16-Z31 the secret at offsets 0, 8, ... 120 (one per stripe of a
// block), Z1-Z5 and Z15 temporaries.

// SCRAMBLE(acc, t)
#define SCRAMBLE(acc, t) \
	VPSRLQ     $47, acc, t \
	VPTERNLOGQ $0x96, Z6, t, acc \
	VPMULLQ    Z7, acc, acc

#define LOADSECRET \
	MOVQ         $0x9E3779B1, R8 \
	VPBROADCASTQ R8, Z7 \
	VMOVDQU64    128(DX), Z6 \
	VMOVDQU64    0(DX), Z16 \
	VMOVDQU64    8(DX), Z17 \
	VMOVDQU64    16(DX), Z18 \
	VMOVDQU64    24(DX), Z19 \
	VMOVDQU64    32(DX), Z20 \
	VMOVDQU64    40(DX), Z21 \
	VMOVDQU64    48(DX), Z22 \
	VMOVDQU64    56(DX), Z23 \
	VMOVDQU64    64(DX), Z24 \
	VMOVDQU64    72(DX), Z25 \
	VMOVDQU64    80(DX), Z26 \
	VMOVDQU64    88(DX), Z27 \
	VMOVDQU64    96(DX), Z28 \
	VMOVDQU64    104(DX), Z29 \
	VMOVDQU64    112(DX), Z30 \
	VMOVDQU64    120(DX), Z31

// ONE(src, off, key, acc, sum, t1, t2, t3): one stripe of one stream of
// accumBlocks4, with its own temporaries.
#define ONE(src, off, key, acc, sum, t1, t2, t3) \
	VMOVDQU64 off(src), t1 \
	VPXORQ    key, t1, t2 \
	VPSHUFD   $0x31, t2, t3 \
	VPMULUDQ  t2, t3, t3 \
	VPSHUFD   $0x4E, t1, t1 \
	VPADDQ    t1, sum, sum \
	VPADDQ    t3, acc, acc

// STRIPE4: one stripe of each of four streams (SI, DI, R9, R10; accs Z0,
// Z8, Z9, Z10; sums Z11-Z14).
#define STRIPE4(off, key) \
	ONE(SI, off, key, Z0, Z11, Z1, Z2, Z3) \
	ONE(DI, off, key, Z8, Z12, Z4, Z5, Z15) \
	ONE(R9, off, key, Z9, Z13, Z1, Z2, Z3) \
	ONE(R10, off, key, Z10, Z14, Z4, Z5, Z15)

// func accumBlocks4(accs *[4][8]uint64, data *[4]*byte, secret *[192]byte, nblocks int)
TEXT ·accumBlocks4(SB), NOSPLIT, $0-32
	MOVQ      accs+0(FP), AX
	MOVQ      data+8(FP), BX
	MOVQ      secret+16(FP), DX
	MOVQ      nblocks+24(FP), CX
	TESTQ     CX, CX
	JZ        done4
	MOVQ      0(BX), SI
	MOVQ      8(BX), DI
	MOVQ      16(BX), R9
	MOVQ      24(BX), R10
	VMOVDQU64 0(AX), Z0
	VMOVDQU64 64(AX), Z8
	VMOVDQU64 128(AX), Z9
	VMOVDQU64 192(AX), Z10
	LOADSECRET

block4:
	VPXORQ Z11, Z11, Z11
	VPXORQ Z12, Z12, Z12
	VPXORQ Z13, Z13, Z13
	VPXORQ Z14, Z14, Z14
	STRIPE4(0, Z16)
	STRIPE4(64, Z17)
	STRIPE4(128, Z18)
	STRIPE4(192, Z19)
	STRIPE4(256, Z20)
	STRIPE4(320, Z21)
	STRIPE4(384, Z22)
	STRIPE4(448, Z23)
	STRIPE4(512, Z24)
	STRIPE4(576, Z25)
	STRIPE4(640, Z26)
	STRIPE4(704, Z27)
	STRIPE4(768, Z28)
	STRIPE4(832, Z29)
	STRIPE4(896, Z30)
	STRIPE4(960, Z31)
	VPADDQ Z11, Z0, Z0
	VPADDQ Z12, Z8, Z8
	VPADDQ Z13, Z9, Z9
	VPADDQ Z14, Z10, Z10
	SCRAMBLE(Z0, Z1)
	SCRAMBLE(Z8, Z2)
	SCRAMBLE(Z9, Z3)
	SCRAMBLE(Z10, Z4)
	ADDQ   $1024, SI
	ADDQ   $1024, DI
	ADDQ   $1024, R9
	ADDQ   $1024, R10
	DECQ   CX
	JNZ    block4

	VMOVDQU64 Z0, 0(AX)
	VMOVDQU64 Z8, 64(AX)
	VMOVDQU64 Z9, 128(AX)
	VMOVDQU64 Z10, 192(AX)
	VZEROUPPER

done4:
	RET

// func accumStripes(acc *[8]uint64, data *byte, secret *byte, nstripes int)
TEXT ·accumStripes(SB), NOSPLIT, $0-32
	MOVQ      acc+0(FP), AX
	MOVQ      data+8(FP), SI
	MOVQ      secret+16(FP), DX
	MOVQ      nstripes+24(FP), CX
	TESTQ     CX, CX
	JZ        done
	VMOVDQU64 (AX), Z0
	VPXORQ    Z8, Z8, Z8

stripe:
	ONE(SI, 0, (DX), Z0, Z8, Z1, Z2, Z3)
	ADDQ $64, SI
	ADDQ $8, DX
	DECQ CX
	JNZ  stripe

	VPADDQ    Z8, Z0, Z0
	VMOVDQU64 Z0, (AX)
	VZEROUPPER

done:
	RET
