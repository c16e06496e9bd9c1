package blob

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/replicate"

	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/pageblob"
)

// Azurite answers a page-range diff with a plain listing, so the union of
// both sides' diffs is tested against answers in Azure's own format
// (testdata/*-diff.xml: PageRange and ClearRange entries interleaved),
// and against Azure's 409 PreviousSnapshotNotFound.

const (
	recSize = 4 << 20
	recSAS  = "sv=2021-12-02&sr=b&sp=racwdl&se=2099-01-01T00%3A00%3A00Z&sig=c2VjcmV0"
	gonePt  = "2026-01-01T00:00:00.0000000Z"
)

func fakeAzure(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		h := w.Header()
		h.Set("x-ms-version", "2021-12-02")
		h.Set("ETag", `"0x8DC0A1B2C3D4E5F"`)
		h.Set("Last-Modified", "Thu, 26 Nov 2026 05:14:12 GMT")
		switch {
		case r.Method == http.MethodHead:
			h.Set("x-ms-blob-type", "PageBlob")
			h.Set("x-ms-blob-sequence-number", "0")
			h.Set("Content-Length", strconv.Itoa(recSize))
			w.WriteHeader(200)
		case r.Method == http.MethodGet && q.Get("comp") == "pagelist" && q.Get("prevsnapshot") == gonePt:
			h.Set("x-ms-error-code", "PreviousSnapshotNotFound")
			h.Set("Content-Type", "application/xml")
			w.WriteHeader(409)
			fmt.Fprint(w, `<?xml version="1.0" encoding="utf-8"?><Error><Code>PreviousSnapshotNotFound</Code><Message>The previous snapshot is not found.</Message></Error>`)
		case r.Method == http.MethodGet && q.Get("comp") == "pagelist" && q.Get("prevsnapshot") != "":
			name := strings.TrimSuffix(filepath.Base(r.URL.Path), ".vhd")
			body, err := os.ReadFile(filepath.Join("testdata", name+"-diff.xml"))
			if err != nil {
				t.Errorf("fake: %v", err)
			}
			h.Set("Content-Type", "application/xml")
			h.Set("x-ms-blob-content-length", strconv.Itoa(recSize))
			w.WriteHeader(200)
			w.Write(body)
		default:
			t.Errorf("fake: unexpected %s %s", r.Method, r.URL)
			w.WriteHeader(400)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestUnionOfDiffsRecorded(t *testing.T) {
	srv := fakeAzure(t)
	ctx := context.Background()
	open := func(name, snap string) *pageblob.Blob {
		u := srv.URL + "/fakeaccount/disks/" + name + ".vhd?"
		if snap != "" {
			u += "snapshot=" + snap + "&"
		}
		b, err := pageblob.Open(ctx, u+recSAS, &pageblob.Options{Getenv: noEnv})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
	const now = "2026-11-26T05:14:12.0560000Z"
	sec := open("secondary", "")
	view := &View{Blob: open("secondary", now), parent: sec, id: now}
	prim := Target{Blob: open("primary", "")}
	cp := &replicate.CommonPoint{SourceID: "2026-11-25T05:00:00.0000000Z", TargetID: "2026-11-25T04:59:59.0000000Z"}

	// The union Reprotect sends: both sides' changes since the common
	// point, each read from a recorded Get Page Ranges Diff answer.
	a, err := view.ChangedSince(ctx, cp.SourceID)
	if err != nil {
		t.Fatal(err)
	}
	b, err := prim.ChangedSince(ctx, cp.TargetID)
	if err != nil {
		t.Fatal(err)
	}
	hints := replicate.UnionRanges(a, b)
	want := []disk.Range{
		{Off: 0, Len: 8192},              // secondary wrote 0-4095, primary cleared 2048-8191
		{Off: 65536, Len: 69632},         // secondary cleared 64 KiB, primary wrote the next 4 KiB
		{Off: 1 << 20, Len: 4096},        // secondary wrote
		{Off: 2 << 20, Len: 4096},        // primary wrote
		{Off: 3 << 20, Len: 512},         // secondary cleared
		{Off: recSize - 4096, Len: 4096}, // primary cleared
	}
	if !slices.Equal(hints, want) {
		t.Fatalf("union = %v\nwant %v", hints, want)
	}

	// The common point is gone on one side: 409 PreviousSnapshotNotFound,
	// which Reprotect takes as "compare both disks whole"
	// (replicate.TestCommonHintsNoBase).
	_, err = view.ChangedSince(ctx, gonePt)
	if !errors.Is(err, replicate.ErrNoBase) || !errors.Is(err, pageblob.ErrPreviousSnapshotNotFound) || !errors.Is(err, pageblob.ErrNotFound) {
		t.Fatalf("diff against a deleted snapshot: %v", err)
	}
	if _, err := prim.ChangedSince(ctx, gonePt); !errors.Is(err, replicate.ErrNoBase) {
		t.Fatalf("the target's diff against a deleted snapshot: %v", err)
	}
}
