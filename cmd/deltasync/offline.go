package main

// The offline form of a sync: sign the target, diff the source against
// the signature into a patch, carry the patch, apply it to the target.
//
//	deltasync sign DISK -o SIG
//	deltasync diff SRC SIG -o PATCH
//	deltasync apply PATCH DST

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/patch"
)

func offlineUsage(fs *flag.FlagSet, text string) {
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), text)
		fs.PrintDefaults()
	}
}

// offlineCreate writes a file through fn: to standard output for "-",
// else to a temporary file (mode 0600: signatures and patches are as
// private as the disks) in the same folder, synced and renamed over path
// once fn succeeds, so that a failed or interrupted command leaves no
// half-written file. An existing path must be a regular file that is none
// of inputs.
func offlineCreate(path string, inputs []string, fn func(io.Writer) error) error {
	if path == "-" {
		bw := bufio.NewWriterSize(os.Stdout, 1<<20)
		if err := fn(bw); err != nil {
			return err
		}
		return bw.Flush()
	}
	if fi, err := os.Stat(path); err == nil {
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s exists and is not a regular file; not replacing it", path)
		}
		for _, in := range inputs {
			if ii, err := os.Stat(in); err == nil && os.SameFile(fi, ii) {
				return fmt.Errorf("%s is also an input of the command; not replacing it", path)
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := fn(bw); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	ok = true
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// offlineOut prints one JSON object on standard output, or a line on a
// terminal's standard error.
func offlineOut(asJSON bool, v any, line string) error {
	if asJSON {
		return json.NewEncoder(os.Stdout).Encode(v)
	}
	if isTerminal(os.Stderr) {
		fmt.Fprintln(os.Stderr, line)
	}
	return nil
}

func cmdSign(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("sign", flag.ContinueOnError)
	var bs size
	fs.Var(&bs, "block-size", "block size: a multiple of 512 up to 4M (0: the default, 64K)")
	hash := fs.String("hash", "xxh3", "block hash: xxh3 (fast) or blake3 (cryptographic: for data an adversary may choose)")
	out := fs.String("o", "", "the signature file to write (- for standard output)")
	allowLive := fs.Bool("allow-live", false, "read a disk that is mounted or in use")
	noMmap := fs.Bool("no-mmap", false, "read with pread instead of memory mappings")
	asJSON := fs.Bool("json", false, "print one JSON object with the result on standard output")
	offlineUsage(fs, `usage: deltasync sign [flags] DISK -o SIG
Write the signature of DISK (its block hashes, keyed with a fresh random key)
for 'deltasync diff'. A signature holds its key: keep it as private as DISK.
`+sizesNote)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *out == "" {
		return usagef("sign", "want DISK and -o SIG")
	}
	var alg blockdiff.HashAlgorithm
	switch *hash {
	case "xxh3":
		alg = blockdiff.XXH3
	case "blake3":
		alg = blockdiff.BLAKE3
	default:
		return fmt.Errorf("-hash %q: want xxh3 or blake3", *hash)
	}
	d, err := localdisk.OpenSource(pos[0], localdisk.SourceOptions{AllowLive: *allowLive})
	if err != nil {
		return err
	}
	defer d.Close()
	key, err := blockdiff.NewKey()
	if err != nil {
		return err
	}
	var hdr blockdiff.SignatureHeader
	err = offlineCreate(*out, pos, func(w io.Writer) error {
		hdr, err = blockdiff.WriteSignature(ctx, w, d, d.Size(), blockdiff.Hasher{Alg: alg, Key: key},
			&blockdiff.Options{BlockSize: int(bs), NoMmap: *noMmap})
		return err
	})
	if err != nil {
		return err
	}
	return offlineOut(*asJSON, map[string]any{
		"command": "sign", "disk": pos[0], "signature": *out,
		"disk_size": hdr.DiskSize, "block_size": hdr.BlockSize, "hash": hdr.Alg.String(),
	}, fmt.Sprintf("sign: %s of %s hashed in blocks of %s (%v)", bytesHuman(hdr.DiskSize), pos[0], bytesHuman(int64(hdr.BlockSize)), hdr.Alg))
}

func cmdDiff(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("diff", flag.ContinueOnError)
	out := fs.String("o", "", "the patch file to write (- for standard output)")
	compress := fs.String("compress", "default", "zstd level of the data: default, fastest, better, none")
	var rs size
	fs.Var(&rs, "record-size", "largest data record (0: the default, 1M; at most 16M)")
	allowLive := fs.Bool("allow-live", false, "read a source that is mounted or in use")
	noMmap := fs.Bool("no-mmap", false, "read with pread instead of memory mappings")
	asJSON := fs.Bool("json", false, "print one JSON object with the result on standard output")
	offlineUsage(fs, `usage: deltasync diff [flags] SRC SIG -o PATCH
Write a patch that turns the disk SIG was made from into SRC: SRC's blocks
that differ, compressed, with the identities of both. A patch holds SRC's
data and the signature's key: keep it as private as the disks.
`+sizesNote)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 || *out == "" {
		return usagef("diff", "want SRC, SIG and -o PATCH")
	}
	var o patch.WriteOptions
	switch *compress {
	case "default":
		o.Compression = patch.CompressDefault
	case "fastest":
		o.Compression = patch.CompressFastest
	case "better":
		o.Compression = patch.CompressBetter
	case "none":
		o.Compression = patch.CompressNone
	default:
		return fmt.Errorf("-compress %q: want default, fastest, better or none", *compress)
	}
	o.RecordSize, o.NoMmap = int(rs), *noMmap
	src, err := localdisk.OpenSource(pos[0], localdisk.SourceOptions{AllowLive: *allowLive})
	if err != nil {
		return err
	}
	defer src.Close()
	sf, err := os.Open(pos[1])
	if err != nil {
		return err
	}
	defer sf.Close()
	sig, err := blockdiff.NewSignatureReader(bufio.NewReaderSize(sf, 1<<20))
	if err != nil {
		return fmt.Errorf("%s: %w", pos[1], err)
	}
	defer sig.Close()
	var st patch.WriteStats
	err = offlineCreate(*out, pos, func(w io.Writer) error {
		st, err = patch.Write(ctx, w, src, src.Size(), sig, &o)
		return err
	})
	if err != nil {
		return err
	}
	tr := st.Trailer
	return offlineOut(*asJSON, map[string]any{
		"command": "diff", "source": pos[0], "signature": pos[1], "patch": *out,
		"base_size": st.Header.BaseSize, "result_size": st.Header.ResultSize,
		"bytes_compared": st.Compared, "bytes_data": tr.DataBytes, "bytes_zero": tr.ZeroBytes,
		"bytes_stored": st.Stored, "patch_bytes": st.Bytes, "records": tr.Records,
		"base_digest": tr.BaseDigest.String(), "result_digest": tr.ResultDigest.String(),
		"seconds": st.Elapsed.Seconds(),
	}, fmt.Sprintf("diff: compared %s, %s differ (%s of data, %s of zeros), patch %s, in %.2fs",
		bytesHuman(st.Compared), bytesHuman(tr.DataBytes+tr.ZeroBytes), bytesHuman(tr.DataBytes), bytesHuman(tr.ZeroBytes),
		bytesHuman(st.Bytes), st.Elapsed.Seconds()))
}

func cmdApply(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("apply", flag.ContinueOnError)
	noBase := fs.Bool("no-base-check", false, "do not read and hash DST to prove it is the patch's base (the patch itself is still checked whole before writing)")
	verify := fs.Bool("verify", false, "read DST back after applying and prove it is the patch's result")
	keep := fs.Bool("keep-excess", false, "keep the tail of a DST longer than the result (a block device cannot be cut)")
	zeroMode := fs.String("zero-mode", "punch", "how a file target clears zero ranges: punch (sparse), zero-range (keeps blocks), write")
	direct := fs.Bool("direct", false, "open DST with O_DIRECT")
	noMmap := fs.Bool("no-mmap", false, "read with pread instead of memory mappings")
	asJSON := fs.Bool("json", false, "print one JSON object with the result on standard output")
	offlineUsage(fs, `usage: deltasync apply [flags] PATCH DST
Apply PATCH to DST, the disk its signature was made from. The whole patch is
checked, and DST hashed and proven to be its base, before anything is
written; a DST already the result is left alone. An interrupted apply can be
run again.
`)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("apply", "want PATCH and DST")
	}
	rf := runFlags{zeroMode: *zeroMode, cmd: "apply"}
	zm, err := rf.zero()
	if err != nil {
		return err
	}
	pf, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer pf.Close()
	if a, err := pf.Stat(); err == nil {
		if b, err := os.Stat(pos[1]); err == nil && os.SameFile(a, b) {
			return fmt.Errorf("%s and %s are one file", pos[0], pos[1])
		}
	}
	hdr, err := patch.ReadHeader(bufio.NewReader(pf))
	if err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	if _, err := pf.Seek(0, io.SeekStart); err != nil {
		return err
	}
	dst, err := localdisk.OpenTarget(pos[1], localdisk.TargetOptions{Direct: *direct, ZeroMode: zm})
	if err != nil {
		return err
	}
	if dst.Kind() == localdisk.BlockDevice {
		if n := dst.Size(); n < hdr.ResultSize || (n > hdr.ResultSize && !*keep) {
			dst.Close()
			return fmt.Errorf("%w: the device %s has %d bytes, the patch's result %d, and a device cannot be resized (-keep-excess keeps a longer device's tail)",
				patch.ErrBadOptions, pos[1], n, hdr.ResultSize)
		}
	}
	st, err := patch.Apply(ctx, pf, dst, &patch.ApplyOptions{NoBaseCheck: *noBase, Verify: *verify, KeepExcess: *keep, NoMmap: *noMmap})
	if cerr := dst.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return interrupted(err, -1, 0, "rerun the same command to resume")
	}
	what := fmt.Sprintf("wrote %s, zeroed %s", bytesHuman(st.Written), bytesHuman(st.Zeroed))
	if st.AlreadyApplied {
		what = "already the result, nothing written"
	}
	if st.Verified {
		what += "; verified"
	}
	return offlineOut(*asJSON, map[string]any{
		"command": "apply", "patch": pos[0], "target": pos[1],
		"base_checked": st.BaseChecked, "already_applied": st.AlreadyApplied,
		"records": st.Records, "bytes_written": st.Written, "bytes_zeroed": st.Zeroed,
		"resized": st.Resized, "verified": st.Verified,
		"check_seconds": st.Check.Seconds(), "write_seconds": st.Write.Seconds(),
		"verify_seconds": st.Verify.Seconds(), "seconds": st.Elapsed.Seconds(),
	}, fmt.Sprintf("apply: %s, in %.2fs", what, st.Elapsed.Seconds()))
}
