package pageblob_test

import (
	"fmt"

	"github.com/deltasync/deltasync/pageblob"
)

func ExampleParseURL() {
	u, err := pageblob.ParseURL("https://acct.blob.core.windows.net/disks/vm1.vhd?snapshot=2026-01-02T03:04:05.0000000Z&sv=2021-12-02&sp=r&sig=c2VjcmV0")
	if err != nil {
		panic(err)
	}
	fmt.Println(u.Kind, u.Account, u.Container, u.Blob, u.HasSAS())
	fmt.Println(u.Identity())
	fmt.Println(pageblob.Redact("https://acct.blob.core.windows.net/disks/vm1.vhd?sp=r&sig=c2VjcmV0"))
	// Output:
	// storage acct disks vm1.vhd true
	// pageblob://acct.blob.core.windows.net/disks/vm1.vhd@2026-01-02T03:04:05.0000000Z
	// https://acct.blob.core.windows.net/disks/vm1.vhd?sig=REDACTED&sp=REDACTED
}

func ExampleNewVHDFooter() {
	// A disk of 30 GiB + 1 MiB: no CHS geometry addresses it exactly, so
	// readers must take the size from the footer (creator "win ").
	f, err := pageblob.NewVHDFooter(30<<30 + 1<<20)
	if err != nil {
		panic(err)
	}
	b := f.Bytes()
	g := f.Geometry
	fmt.Printf("%s %q %d\n", b[:8], f.CreatorApp, f.Size)
	fmt.Println(g.Cylinders, g.Heads, g.SectorsPerTrack, int64(g.Cylinders)*int64(g.Heads)*int64(g.SectorsPerTrack)*512)
	// Output:
	// conectix "win " 32213303296
	// 62417 16 63 32213164032
}
