package pageblob

import (
	"bytes"
	"context"
	"net/url"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"

	"github.com/deltasync/deltasync/disk"
)

// Tests against real Azure run only when DELTASYNC_AZURE_CONTAINER_URL
// holds a SAS URL of a container (permissions racwdl), for example
//
//	https://ACCOUNT.blob.core.windows.net/deltasync-test?sv=...&sr=c&sp=racwdl&sig=...
//
// They check what Azurite cannot: the real Get Page Ranges Diff with its
// interleaved PageRange and ClearRange entries, paging with markers, Put
// Page From URL, and that Azure accepts every request the library sends.
func liveContainer(t *testing.T) *url.URL {
	t.Helper()
	raw := os.Getenv("DELTASYNC_AZURE_CONTAINER_URL")
	if raw == "" {
		t.Skip("DELTASYNC_AZURE_CONTAINER_URL is not set: this test against real Azure did not run")
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("DELTASYNC_AZURE_CONTAINER_URL: %v", Redact(raw))
	}
	return u
}

func liveBlobURL(c *url.URL, name string) string {
	u := *c
	u.Path = u.Path + "/" + name
	return u.String()
}

func liveTarget(t *testing.T, c *url.URL, size int64, o *Options) (*Blob, string) {
	t.Helper()
	u := liveBlobURL(c, blobName(t))
	o.CreateSize = size
	o.Getenv = noEnv
	b, err := OpenTarget(context.Background(), u, o)
	if err != nil {
		t.Fatalf("OpenTarget: %v", err)
	}
	t.Cleanup(func() {
		b.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := b.pb.Delete(ctx, &blob.DeleteOptions{DeleteSnapshots: to.Ptr(blob.DeleteSnapshotsOptionTypeInclude)})
		if err != nil {
			t.Logf("deleting %s: %v", b.URL(), newError("delete", b.URL(), 0, 0, err))
		}
	})
	return b, u
}

func TestLiveDiffPagingAndLimits(t *testing.T) {
	c := liveContainer(t)
	o, rec := fakeOptions(t) // the recorder checks Azure's rules here too
	o.ListSegment = 16 << 20
	o.ListMaxResults = 3
	const size = 64 << 20
	b, _ := liveTarget(t, c, size, o)
	ctx := context.Background()
	// 24 separate pages: paging with 3 results per answer, 16 MiB segments.
	var want []disk.Range
	for i := int64(0); i < 24; i++ {
		off := i * (size / 24) / 512 * 512
		if _, err := b.WriteAt(randBytes(512), off); err != nil {
			t.Fatal(err)
		}
		want = append(want, disk.Range{Off: off, Len: 512})
	}
	got, err := b.AllocatedRanges(ctx, 0, size)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("AllocatedRanges = %v\nwant %v", got, want)
	}
	snap, err := b.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Write some, clear some: the diff has both kinds, interleaved.
	var changed []disk.Range
	for i, r := range want {
		switch i % 3 {
		case 0:
			if err := b.ZeroRange(ctx, r.Off, 512); err != nil {
				t.Fatal(err)
			}
			changed = append(changed, r)
		case 1:
			if _, err := b.WriteAt(randBytes(512), r.Off); err != nil {
				t.Fatal(err)
			}
			changed = append(changed, r)
		}
	}
	diff, err := b.Diff(ctx, snap, 0, size)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(diff, changed) {
		t.Fatalf("Diff = %v\nwant %v", diff, changed)
	}
	if rec.Count("page-ranges-diff") < 2 {
		t.Errorf("%d diff requests: paging not exercised", rec.Count("page-ranges-diff"))
	}
	// A full 4 MiB write at the very end is accepted; the recorder saw
	// nothing Azure refuses (checked at cleanup).
	if _, err := b.WriteAt(randBytes(MaxPut), size-MaxPut); err != nil {
		t.Fatal(err)
	}
}

func TestLiveCopyRangeFromURL(t *testing.T) {
	c := liveContainer(t)
	o, _ := fakeOptions(t)
	src, srcURL := liveTarget(t, c, 8<<20, o)
	data := randBytes(6 << 20)
	if _, err := src.WriteAt(data, 1<<20); err != nil {
		t.Fatal(err)
	}
	o2, _ := fakeOptions(t)
	dst, _ := liveTarget(t, c, 8<<20, o2)
	if err := dst.CopyRangeFromURL(context.Background(), srcURL, 1<<20, 6<<20); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 6<<20)
	if _, err := dst.ReadAt(got, 1<<20); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("copied range differs")
	}
}
