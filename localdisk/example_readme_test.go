//go:build linux

package localdisk_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/transfer"
)

// syncImage is the README's Go snippet ("The Go API"), word for word:
// TestREADMESnippet keeps the two the same.
func syncImage(ctx context.Context, srcPath, dstPath, journals string) (transfer.Stats, error) {
	src, err := localdisk.OpenSource(srcPath, localdisk.SourceOptions{})
	if err != nil {
		return transfer.Stats{}, err
	}
	defer src.Close()
	// A page blob target instead: pageblob.OpenTarget(ctx, "https://acct.blob.core.windows.net/disks/os.vhd?sv=...", &pageblob.Options{})
	dst, err := localdisk.OpenTarget(dstPath, localdisk.TargetOptions{Create: true})
	if err != nil {
		return transfer.Stats{}, err
	}
	defer dst.Close()
	// journals: where an interrupted run's journal is kept ("": transfer.DefaultStateDir()).
	st, err := transfer.Sync(ctx, src, dst, &transfer.Options{Verify: true, Journal: transfer.DirStore{Dir: journals}})
	if err != nil {
		return st, fmt.Errorf("sync %s to %s: %w", srcPath, dstPath, err)
	}
	return st, nil
}

// The README's snippet, run: a new image file made identical to a
// source of 1 MiB holding 192 KiB of data, then proven equal.
func Example_sync() {
	dir, err := os.MkdirTemp("", "readme-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	img := make([]byte, 1<<20)
	copy(img, bytes.Repeat([]byte("data"), 48<<10)) // 192 KiB of data, then zeros
	srcPath := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(srcPath, img, 0o644); err != nil {
		log.Fatal(err)
	}

	st, err := syncImage(context.Background(), srcPath, filepath.Join(dir, "copy.img"), filepath.Join(dir, "journals"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("written:", st.Written, "verified:", st.Verified)

	// A missing source is an error, not a nil disk.
	_, err = syncImage(context.Background(), filepath.Join(dir, "missing.img"), filepath.Join(dir, "other.img"), filepath.Join(dir, "journals"))
	fmt.Println("missing source:", err != nil && strings.Contains(err.Error(), "no such file"))
	// Output:
	// written: 196608 verified: true
	// missing source: true
}

// TestREADMESnippet: the README's Go snippet is syncImage.
func TestREADMESnippet(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), "## The Go API")
	_, block, ok2 := strings.Cut(after, "```go\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("README.md has no Go snippet under \"## The Go API\"")
	}
	self, err := os.ReadFile("example_readme_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := strings.Cut(string(self), "\nfunc syncImage(")
	body, _, _ = strings.Cut(body, "\n}\n")
	body = "func syncImage(" + body + "\n}"
	norm := func(s string) []string {
		var out []string
		for _, l := range strings.Split(s, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				out = append(out, l)
			}
		}
		return out
	}
	got, want := norm(block), norm(body)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("README.md's snippet:\n%s\n\nsyncImage in example_readme_test.go:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
