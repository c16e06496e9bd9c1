package main

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"

	"golang.org/x/sys/unix"
)

// makeImage writes a file of size bytes: random data, with zeroFrac of its
// 1 MiB pieces left as holes (sparse zeros).
func makeImage(path string, size int64, zeroFrac float64, seed uint64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), 1})
	pick := rand.New(rand.NewPCG(seed, 99))
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		n := min(int64(len(buf)), size-off)
		if zeroFrac > 0 && pick.Float64() < zeroFrac {
			continue
		}
		rng.Read(buf[:n])
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			return err
		}
	}
	return f.Sync()
}

// changeBlocks copies src to dst then changes frac of its blocks of bs
// bytes, chosen at random (or in clusters of 64 blocks when clustered),
// each by len bytes (a whole block when len is 0). It returns the number
// of distinct blocks changed.
func changeBlocks(src, dst string, bs int64, frac float64, length int64, clustered bool, seed uint64) (int, error) {
	if err := copyFile(src, dst); err != nil {
		return 0, err
	}
	f, err := os.OpenFile(dst, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	nblocks := st.Size() / bs
	want := int(float64(nblocks) * frac)
	if want == 0 && frac > 0 {
		want = 1
	}
	if length == 0 || length > bs {
		length = bs
	}
	pick := rand.New(rand.NewPCG(seed, 7))
	chosen := map[int64]bool{}
	for len(chosen) < want {
		b := pick.Int64N(nblocks)
		if clustered {
			b = b / 64 * 64
			for i := int64(0); i < 64 && b+i < nblocks && len(chosen) < want; i++ {
				chosen[b+i] = true
			}
			continue
		}
		chosen[b] = true
	}
	buf := make([]byte, length)
	noise := rand.NewChaCha8([32]byte{byte(seed), 42})
	for b := range chosen {
		noise.Read(buf)
		off := b*bs + pick.Int64N(bs-length+1)/512*512
		old := make([]byte, length)
		if _, err := f.ReadAt(old, off); err != nil {
			return 0, err
		}
		buf[0] = old[0] ^ 0xff // guarantees a difference
		if _, err := f.WriteAt(buf, off); err != nil {
			return 0, err
		}
	}
	return len(chosen), f.Sync()
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	// copy_file_range keeps holes on most filesystems and is fast.
	var off int64
	for off < st.Size() {
		n, err := unix.CopyFileRange(int(in.Fd()), nil, int(out.Fd()), nil, int(min(st.Size()-off, 1<<30)), 0)
		if err != nil {
			return fmt.Errorf("copy_file_range: %w", err)
		}
		if n == 0 {
			break
		}
		off += int64(n)
	}
	return out.Sync()
}

// evict makes files cold: their dirty pages written, then their cached
// pages dropped (drop_caches is not permitted here).
func evict(paths ...string) error {
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = f.Sync()
		if err == nil {
			err = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("evict %s: %w", p, err)
		}
	}
	return nil
}

// warm reads files into the page cache.
func warm(paths ...string) error {
	_, err := readFloor(paths)
	return err
}

// dataBytes counts the bytes of path in 64 KiB blocks that are not all
// zeros: what a seed must write.
func dataBytes(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	zero := make([]byte, 64<<10)
	var n int64
	for {
		m, err := io.ReadFull(f, buf)
		if m > 0 && !bytes.Equal(buf[:m], zero[:m]) {
			n += int64(m)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return n, nil
		}
		if err != nil {
			return 0, err
		}
	}
}
