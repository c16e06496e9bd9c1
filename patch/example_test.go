package patch_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/patch"
)

// Sign a target, diff a source against the signature, apply the patch.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "patch-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	base := bytes.Repeat([]byte("base"), 1<<18)  // 1 MiB: the target's content
	src := append(bytes.Clone(base), "grown"...) // the source: changed and longer
	copy(src[300_000:], "changed")
	srcPath, dstPath := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
	if err := os.WriteFile(srcPath, src, 0o644); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(dstPath, base, 0o644); err != nil {
		log.Fatal(err)
	}

	// On the target's side: its signature.
	dst, err := localdisk.OpenTarget(dstPath, localdisk.TargetOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer dst.Close()
	key, err := blockdiff.NewKey()
	if err != nil {
		log.Fatal(err)
	}
	var sig bytes.Buffer
	if _, err := blockdiff.WriteSignature(ctx, &sig, dst, dst.Size(), blockdiff.Hasher{Alg: blockdiff.XXH3, Key: key}, nil); err != nil {
		log.Fatal(err)
	}

	// On the source's side: the patch.
	sd, err := localdisk.OpenSource(srcPath, localdisk.SourceOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer sd.Close()
	sr, err := blockdiff.NewSignatureReader(&sig)
	if err != nil {
		log.Fatal(err)
	}
	var p bytes.Buffer
	ws, err := patch.Write(ctx, &p, sd, sd.Size(), sr, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("patch: %d bytes of data, %d records\n", ws.Trailer.DataBytes, ws.Trailer.Records)

	// Back on the target's side: apply it, twice.
	for range 2 {
		st, err := patch.Apply(ctx, bytes.NewReader(p.Bytes()), dst, nil)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("applied: wrote %d bytes, already applied %v\n", st.Written, st.AlreadyApplied)
	}
	got, _ := os.ReadFile(dstPath)
	fmt.Println("identical:", bytes.Equal(got, src))
	// Output:
	// patch: 65541 bytes of data, 3 records
	// applied: wrote 65541 bytes, already applied false
	// applied: wrote 0 bytes, already applied true
	// identical: true
}
