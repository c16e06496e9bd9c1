package pageblob

// Tests of copies refused for any reason that reading and writing avoid:
// they fall back, and say why.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/deltasync/deltasync/internal/azurite"
	"github.com/deltasync/deltasync/transfer"
)

// Azurite answers Put Page From URL with 500 when the request carries a
// SAS (501 under a shared key): a blob-to-blob sync with SAS URLs falls
// back to reading and writing, without retrying the 500, and says why.
func TestBlobSyncAzuriteSASFallsBack(t *testing.T) {
	const size = 8 << 20
	srcData, dstData := fakeDisks(size)
	ctx := context.Background()
	s, _ := newTarget(t, size)
	if _, err := s.WriteAt(srcData, 0); err != nil {
		t.Fatal(err)
	}
	d, _ := newTarget(t, size)
	if _, err := d.WriteAt(dstData, 0); err != nil {
		t.Fatal(err)
	}
	sname, dname := s.loc.Blob, d.loc.Blob
	s.Close()
	d.Close()
	sq, _ := azurite.BlobSAS(testContainer, sname, "r", time.Hour)
	dq, _ := azurite.BlobSAS(testContainer, dname, "racwd", time.Hour)
	src, err := Open(ctx, az.BlobURL(testContainer, sname)+"?"+sq, &Options{Getenv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	// The retry policy's defaults: a retried 500 would cost about 6 s.
	o, rec := testOptions(t)
	o.Retry = policy.RetryOptions{}
	dst, err := OpenTarget(ctx, az.BlobURL(testContainer, dname)+"?"+dq, o)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	start := time.Now()
	st, err := transfer.Sync(ctx, src, dst, &transfer.Options{NoJournal: true, Verify: true, Concurrency: 4})
	took := time.Since(start)
	if err != nil {
		t.Fatalf("sync with SAS URLs on Azurite: %v", err)
	}
	if !st.Verified {
		t.Fatal("not verified")
	}
	if got := readAll(t, dst, size); !bytes.Equal(got, srcData) {
		t.Fatal("target differs")
	}
	tried := 0
	for _, r := range rec.Requests() {
		if r.Op == "put-page-from-url" {
			tried++
			if r.Status != http.StatusInternalServerError {
				t.Errorf("Azurite answered Put Page From URL under a SAS with %d (this test expects its 500)", r.Status)
			}
		}
	}
	if tried < 1 || tried > 4 {
		t.Errorf("%d Put Page From URL tried, want 1 to 4 (one per writer, the 500 not retried)", tried)
	}
	cs := dst.CopyStats()
	if cs.Copied != 0 || !strings.Contains(cs.Fallback, "500") {
		t.Errorf("CopyStats %+v, want nothing copied and a fallback that says 500", cs)
	}
	t.Logf("sync in %v; fallback: %s", took, cs.Fallback)
}

// Whatever the service answers a copy with, a copy is declined (and the
// run reads and writes) unless a write would meet the same refusal: the
// lease, the sequence number, throttling. After copies succeeded, a
// refusal still falls back (a 500 retried first).
func TestCopyRefusals(t *testing.T) {
	const size = 1 << 20
	ctx := context.Background()
	src, _ := newTarget(t, size)
	if _, err := src.WriteAt(randBytes(size), 0); err != nil {
		t.Fatal(err)
	}
	answer := func(status int, code string) func(*http.Request) *http.Response {
		return func(req *http.Request) *http.Response {
			if req.Header.Get("x-ms-copy-source") == "" {
				return nil
			}
			h := http.Header{}
			h.Set("Content-Type", "application/xml")
			if code != "" {
				h.Set("x-ms-error-code", code)
			}
			if status == http.StatusCreated {
				return &http.Response{StatusCode: status, Status: "201 Created", Header: h, Request: req, Body: io.NopCloser(strings.NewReader(""))}
			}
			body := fmt.Sprintf("<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>%s</Code><Message>test</Message></Error>", code)
			return &http.Response{StatusCode: status, Status: fmt.Sprintf("%d test", status), Header: h, Request: req, Body: io.NopCloser(strings.NewReader(body))}
		}
	}
	cases := []struct {
		status   int
		code     string
		fallback bool
		err      error
	}{
		{500, "", true, nil},
		{500, "InternalError", true, nil},
		{501, "APINotImplemented", true, nil},
		{400, "CannotVerifyCopySource", true, nil},
		{403, "AuthorizationPermissionMismatch", true, nil},
		{403, "CannotVerifyCopySource", true, nil},
		{404, "CannotVerifyCopySource", true, nil},
		{409, "SomethingAzureAddsLater", true, nil},
		{412, "SequenceNumberConditionNotMet", false, ErrConcurrentWriter},
		{412, "LeaseIdMismatchWithBlobOperation", false, ErrLeaseLost},
		{503, "ServerBusy", false, ErrThrottled},
	}
	for _, c := range cases {
		name := fmt.Sprintf("%d %s", c.status, c.code)
		dst, rec := newTarget(t, size)
		rec.Intercept = answer(c.status, c.code)
		rec.Reset()
		ok, err := dst.CopyRange(ctx, src, 0, 64<<10)
		cs := dst.CopyStats()
		switch {
		case c.fallback && (ok || err != nil || !strings.Contains(cs.Fallback, fmt.Sprint(c.status))):
			t.Errorf("%s: CopyRange = %v, %v, fallback %q; want a fallback that says %d", name, ok, err, cs.Fallback, c.status)
		case !c.fallback && (!errors.Is(err, c.err) || cs.Fallback != ""):
			t.Errorf("%s: CopyRange = %v, %v, fallback %q; want %v and no fallback", name, ok, err, cs.Fallback, c.err)
		}
		if c.fallback {
			if n := rec.Count("put-page-from-url"); n != 1 {
				t.Errorf("%s: %d tries before any copy succeeded, want 1", name, n)
			}
			if ok, err := dst.CopyRange(ctx, src, 0, 64<<10); ok || err != nil {
				t.Errorf("%s: a later CopyRange = %v, %v; want declined", name, ok, err)
			}
			if n := rec.Count("put-page-from-url"); n != 1 {
				t.Errorf("%s: a declined CopyRange sent a request", name)
			}
		}
		dst.Close()
	}
	// After a copy succeeded, a 500 is retried as usual, then falls back.
	dst, rec := newTarget(t, size)
	rec.Intercept = answer(http.StatusCreated, "")
	if ok, err := dst.CopyRange(ctx, src, 0, 64<<10); !ok || err != nil {
		t.Fatalf("copy answered 201: %v, %v", ok, err)
	}
	rec.Intercept = answer(500, "InternalError")
	rec.Reset()
	if ok, err := dst.CopyRange(ctx, src, 64<<10, 64<<10); ok || err != nil {
		t.Errorf("500 after a success: %v, %v; want a fallback", ok, err)
	}
	if n := rec.Count("put-page-from-url"); n != 4 {
		t.Errorf("500 after a success: %d tries, want 4 (retried)", n)
	}
	if cs := dst.CopyStats(); cs.Copied != 64<<10 || !strings.Contains(cs.Fallback, "500 InternalError") {
		t.Errorf("CopyStats %+v", cs)
	}
	dst.Close()
	// A source CopyRange cannot copy from says so.
	m := newMemAzure(t)
	other, err := Open(ctx, m.put("x.vhd", make([]byte, size))+"?"+fakeSAS, &Options{Getenv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	dst, _ = newTarget(t, size)
	if ok, err := dst.CopyRange(ctx, other, 0, 4096); ok || err != nil || !strings.Contains(dst.CopyStats().Fallback, "emulator") {
		t.Errorf("CopyRange from another emulator: %v, %v, %+v", ok, err, dst.CopyStats())
	}
}
