package pageblob

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/deltasync/deltasync/internal/azurite"
	"github.com/deltasync/deltasync/transfer"
)

// Azurite answers Put Page From URL with 501, so a sync between two page
// blobs is tested here against memAzure: a small page blob service on
// loopback, in memory, that answers in Azure's format and implements what
// a sync sends (properties, lease, sequence number, page ranges, ranged
// reads, Put Page, Clear Pages and Put Page From URL, which copies from
// another blob of the same service, as Azure does).

type memBlob struct {
	data  []byte
	alloc []bool // per 512-byte page
	seq   int64
	lease string
}

type memAzure struct {
	t   *testing.T
	srv *httptest.Server

	mu    sync.Mutex
	blobs map[string]*memBlob // by path, /ACCOUNT/CONTAINER/BLOB
	// copies are the Put Page From URL requests answered, their headers.
	copies []http.Header
	// copyStatus, when not 0, is the answer to every Put Page From URL.
	copyStatus int
}

func newMemAzure(t *testing.T) *memAzure {
	m := &memAzure{t: t, blobs: map[string]*memBlob{}}
	m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.srv.Close)
	return m
}

// put stores a blob of len(data) bytes; its all-zero pages are not
// allocated.
func (m *memAzure) put(name string, data []byte) string {
	b := &memBlob{data: append([]byte(nil), data...), alloc: make([]bool, len(data)/PageSize)}
	for i := range b.alloc {
		b.alloc[i] = !allZero(data[i*PageSize : (i+1)*PageSize])
	}
	m.mu.Lock()
	m.blobs["/memaccount/disks/"+name] = b
	m.mu.Unlock()
	return m.srv.URL + "/memaccount/disks/" + name
}

func (m *memAzure) content(name string) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.blobs["/memaccount/disks/"+name].data...)
}

func (m *memAzure) copyHeaders() []http.Header {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]http.Header(nil), m.copies...)
}

func memFail(w http.ResponseWriter, status int, code string) {
	w.Header().Set("x-ms-error-code", code)
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="utf-8"?><Error><Code>%s</Code><Message>memAzure</Message></Error>`, code)
}

func memRange(h string) (int64, int64, bool) {
	s, e, ok := strings.Cut(strings.TrimPrefix(h, "bytes="), "-")
	if !ok {
		return 0, 0, false
	}
	a, err1 := strconv.ParseInt(s, 10, 64)
	b, err2 := strconv.ParseInt(e, 10, 64)
	return a, b, err1 == nil && err2 == nil && b >= a
}

func (m *memAzure) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	m.mu.Lock()
	defer m.mu.Unlock()
	q := r.URL.Query()
	h := w.Header()
	h.Set("x-ms-version", "2021-12-02")
	h.Set("x-ms-request-id", "00000000-0000-0000-0000-000000000000")
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	b, ok := m.blobs[r.URL.Path]
	if !ok {
		memFail(w, 404, "BlobNotFound")
		return
	}
	size := int64(len(b.data))
	h.Set("ETag", fmt.Sprintf(`"0x%X"`, b.seq))
	h.Set("Last-Modified", "Thu, 26 Nov 2026 05:14:12 GMT")
	writeCond := func() bool {
		if v := r.Header.Get("x-ms-if-sequence-number-eq"); v != "" && v != strconv.FormatInt(b.seq, 10) {
			memFail(w, 412, "SequenceNumberConditionNotMet")
			return false
		}
		if b.lease != "" && r.Header.Get("x-ms-lease-id") != b.lease {
			memFail(w, 412, "LeaseIdMissing")
			return false
		}
		return true
	}
	pageRange := func() (int64, int64, bool) {
		s, e, ok := memRange(r.Header.Get("x-ms-range"))
		if !ok || s%PageSize != 0 || (e+1)%PageSize != 0 || e >= size || e-s+1 > MaxPut && r.Header.Get("x-ms-page-write") != "clear" {
			memFail(w, 416, "InvalidPageRange")
			return 0, 0, false
		}
		return s, e + 1, true
	}
	switch {
	case r.Method == http.MethodHead:
		h.Set("x-ms-blob-type", "PageBlob")
		h.Set("x-ms-blob-sequence-number", strconv.FormatInt(b.seq, 10))
		h.Set("Content-Length", strconv.FormatInt(size, 10))
		w.WriteHeader(200)
	case r.Method == http.MethodPut && q.Get("comp") == "lease":
		switch r.Header.Get("x-ms-lease-action") {
		case "acquire":
			if b.lease != "" && b.lease != r.Header.Get("x-ms-proposed-lease-id") {
				memFail(w, 409, "LeaseAlreadyPresent")
				return
			}
			b.lease = r.Header.Get("x-ms-proposed-lease-id")
			h.Set("x-ms-lease-id", b.lease)
			w.WriteHeader(201)
		case "renew":
			h.Set("x-ms-lease-id", b.lease)
			w.WriteHeader(200)
		case "release":
			b.lease = ""
			w.WriteHeader(200)
		default:
			memFail(w, 400, "InvalidHeaderValue")
		}
	case r.Method == http.MethodPut && q.Get("comp") == "properties" && r.Header.Get("x-ms-sequence-number-action") == "update":
		if !writeCond() {
			return
		}
		b.seq, _ = strconv.ParseInt(r.Header.Get("x-ms-blob-sequence-number"), 10, 64)
		h.Set("x-ms-blob-sequence-number", strconv.FormatInt(b.seq, 10))
		w.WriteHeader(200)
	case r.Method == http.MethodPut && q.Get("comp") == "metadata": // the incomplete mark (witness.go)
		if !writeCond() {
			return
		}
		w.WriteHeader(200)
	case r.Method == http.MethodPut && q.Get("comp") == "page":
		if !writeCond() {
			return
		}
		s, e, ok := pageRange()
		if !ok {
			return
		}
		switch {
		case r.Header.Get("x-ms-page-write") == "clear":
			clear(b.data[s:e])
			for i := s / PageSize; i < e/PageSize; i++ {
				b.alloc[i] = false
			}
		case r.Header.Get("x-ms-copy-source") != "":
			m.copies = append(m.copies, r.Header.Clone())
			if m.copyStatus != 0 {
				memFail(w, m.copyStatus, "CannotVerifyCopySource")
				return
			}
			su, err := url.Parse(r.Header.Get("x-ms-copy-source"))
			ss, se, ok := memRange(r.Header.Get("x-ms-source-range"))
			sb := m.blobs[su.Path]
			if err != nil || !ok || sb == nil || se-ss != e-1-s || se >= int64(len(sb.data)) {
				memFail(w, 400, "CannotVerifyCopySource")
				return
			}
			copy(b.data[s:e], sb.data[ss:se+1])
			for i := s / PageSize; i < e/PageSize; i++ {
				b.alloc[i] = true
			}
		default:
			if int64(len(body)) != e-s {
				memFail(w, 400, "InvalidHeaderValue")
				return
			}
			copy(b.data[s:e], body)
			for i := s / PageSize; i < e/PageSize; i++ {
				b.alloc[i] = true
			}
		}
		h.Set("x-ms-blob-sequence-number", strconv.FormatInt(b.seq, 10))
		w.WriteHeader(201)
	case r.Method == http.MethodGet && q.Get("comp") == "pagelist":
		s, e, ok := memRange(r.Header.Get("x-ms-range"))
		if !ok {
			s, e = 0, size-1
		}
		e = min(e, size-1)
		var x strings.Builder
		x.WriteString(`<?xml version="1.0" encoding="utf-8"?><PageList>`)
		for i := s / PageSize; i*PageSize <= e; {
			if !b.alloc[i] {
				i++
				continue
			}
			j := i
			for j*PageSize <= e && b.alloc[j] {
				j++
			}
			fmt.Fprintf(&x, "<PageRange><Start>%d</Start><End>%d</End></PageRange>", i*PageSize, j*PageSize-1)
			i = j
		}
		x.WriteString(`</PageList>`)
		h.Set("Content-Type", "application/xml")
		h.Set("x-ms-blob-content-length", strconv.FormatInt(size, 10))
		w.WriteHeader(200)
		io.WriteString(w, x.String())
	case r.Method == http.MethodGet && q.Get("comp") == "":
		s, e, ok := memRange(r.Header.Get("x-ms-range"))
		if !ok {
			s, e, ok = memRange(r.Header.Get("Range"))
		}
		if !ok {
			s, e = 0, size-1
		}
		if s >= size {
			memFail(w, 416, "InvalidRange")
			return
		}
		e = min(e, size-1)
		h.Set("x-ms-blob-type", "PageBlob")
		h.Set("Content-Length", strconv.FormatInt(e-s+1, 10))
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", s, e, size))
		w.WriteHeader(206)
		w.Write(b.data[s : e+1])
	default:
		m.t.Errorf("memAzure: unexpected %s %s", r.Method, r.URL.Path)
		memFail(w, 400, "UnsupportedHttpVerb")
	}
}

// fakeDisks makes a source and a target that differ in scattered ranges,
// with zeros (unallocated pages) in both.
func fakeDisks(size int) (src, dst []byte) {
	r := rand.New(rand.NewPCG(1, 2))
	src, dst = make([]byte, size), make([]byte, size)
	fill := func(p []byte) {
		for i := range p {
			p[i] = byte(r.Uint32()) | 1
		}
	}
	for off := 0; off < size; off += 256 << 10 {
		switch r.IntN(4) {
		case 0: // zeros in both
		case 1: // equal data
			fill(src[off : off+256<<10])
			copy(dst[off:], src[off:off+256<<10])
		case 2: // differ
			fill(src[off : off+256<<10])
			fill(dst[off : off+256<<10])
		case 3: // zeros over data
			fill(dst[off : off+256<<10])
		}
	}
	// A run of more than 4 MiB that differs: copied in pieces.
	fill(src[size-6<<20 : size-1<<20])
	return src, dst
}

type tokenCred struct{}

func (tokenCred) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: "mem-token", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// A sync between two page blobs copies every differing range server-side
// with Put Page From URL: no Put Page carries data. The source is made
// readable by URL from each kind of credential: its own SAS, a read SAS
// minted from its account key, or its Azure AD token.
func TestBlobSyncCopiesServerSide(t *testing.T) {
	const size = 16 << 20
	for _, cred := range []string{"sas", "key", "token"} {
		t.Run(cred, func(t *testing.T) {
			m := newMemAzure(t)
			srcData, dstData := fakeDisks(size)
			srcURL := m.put("src.vhd", srcData)
			dstURL := m.put("dst.vhd", dstData)
			ctx := context.Background()
			so := &Options{Getenv: noEnv, Retry: fastRetry()}
			switch cred {
			case "sas":
				srcURL += "?" + fakeSAS
			case "key":
				so.AccountKey = azurite.Key
			case "token":
				so.Credential = tokenCred{}
			}
			src, err := Open(ctx, srcURL, so)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			o, rec := fakeOptions(t)
			dst, err := OpenTarget(ctx, dstURL+"?"+fakeSAS, o)
			if err != nil {
				t.Fatal(err)
			}
			defer dst.Close()
			st, err := transfer.Sync(ctx, src, dst, &transfer.Options{NoJournal: true, Verify: true})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(m.content("dst.vhd"), srcData) {
				t.Fatal("target differs from the source after the sync")
			}
			if n := rec.Count("put-page"); n != 0 {
				t.Errorf("%d Put Page requests with data; a blob-to-blob sync must send none", n)
			}
			copies := rec.Count("put-page-from-url")
			var copied int64
			for _, r := range rec.Requests() {
				if r.Op == "put-page-from-url" {
					copied += r.End - r.Start + 1
					if r.Length > 0 {
						t.Errorf("Put Page From URL with a body of %d bytes", r.Length)
					}
				}
			}
			if copies == 0 || copied != st.Written {
				t.Fatalf("%d Put Page From URL of %d bytes; the run wrote %d", copies, copied, st.Written)
			}
			t.Logf("%s: %d Put Page From URL, %d bytes copied server-side, %d cleared, %d bytes read from the target", cred, copies, copied, st.Zeroed, st.TargetRead)
			for _, hd := range m.copyHeaders() {
				cs := hd.Get("x-ms-copy-source")
				if !strings.Contains(cs, "/memaccount/disks/src.vhd") {
					t.Fatalf("copy source %q", Redact(cs))
				}
				u, _ := url.Parse(cs)
				switch cred {
				case "sas":
					if u.Query().Get("sig") == "" {
						t.Fatalf("copy source without the source's SAS: %q", Redact(cs))
					}
				case "key":
					if v := u.Query(); v.Get("sig") == "" || v.Get("sp") != "r" || v.Get("sr") != "b" {
						t.Fatalf("copy source without a minted read SAS: %q", Redact(cs))
					}
				case "token":
					if u.RawQuery != "" || hd.Get("x-ms-copy-source-authorization") != "Bearer mem-token" {
						t.Fatalf("copy source %q, authorization %q", Redact(cs), hd.Get("x-ms-copy-source-authorization"))
					}
				}
				if hd.Get("x-ms-lease-id") == "" || hd.Get("x-ms-if-sequence-number-eq") == "" {
					t.Fatal("Put Page From URL without the lease or the sequence number")
				}
			}
		})
	}
}

// When the service cannot copy from the source, the first copy declines
// and the run reads and writes instead.
func TestBlobCopyDeclines(t *testing.T) {
	const size = 8 << 20
	m := newMemAzure(t)
	m.copyStatus = http.StatusForbidden // CannotVerifyCopySource: Azure cannot read the source
	srcData, dstData := fakeDisks(size)
	ctx := context.Background()
	src, err := Open(ctx, m.put("src.vhd", srcData)+"?"+fakeSAS, &Options{Getenv: noEnv, Retry: fastRetry()})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	o, rec := fakeOptions(t)
	dst, err := OpenTarget(ctx, m.put("dst.vhd", dstData)+"?"+fakeSAS, o)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if _, err := transfer.Sync(ctx, src, dst, &transfer.Options{NoJournal: true, Concurrency: 4}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.content("dst.vhd"), srcData) {
		t.Fatal("target differs from the source")
	}
	if n := rec.Count("put-page-from-url"); n < 1 || n > 4 {
		t.Errorf("%d Put Page From URL tried; want 1 to 4 (one per writer at most)", n)
	}
	if rec.Count("put-page") == 0 {
		t.Error("no Put Page after the copy declined")
	}
	// Not a page blob, or a source the service cannot reach: declined
	// without a request.
	if ok, err := dst.CopyRange(ctx, bytes.NewReader(srcData), 0, 4096); ok || err != nil {
		t.Errorf("CopyRange from a bytes.Reader: %v, %v", ok, err)
	}
	m2 := newMemAzure(t)
	other, err := Open(ctx, m2.put("x.vhd", srcData)+"?"+fakeSAS, &Options{Getenv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	fresh, err := OpenTarget(ctx, m.put("fresh.vhd", dstData)+"?"+fakeSAS, o)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	before := len(rec.Requests())
	if ok, err := fresh.CopyRange(ctx, other, 0, 4096); ok || err != nil {
		t.Errorf("CopyRange from an emulator on another port: %v, %v", ok, err)
	}
	if len(rec.Requests()) != before {
		t.Error("declined copies sent requests")
	}
}

// Against Azurite (501 for Put Page From URL) a blob-to-blob sync falls
// back to reading and writing, and ends identical.
func TestBlobSyncAzuriteFallsBack(t *testing.T) {
	const size = 8 << 20
	srcData, dstData := fakeDisks(size)
	ctx := context.Background()
	src, _ := newTarget(t, size)
	if _, err := src.WriteAt(srcData, 0); err != nil {
		t.Fatal(err)
	}
	dst, rec := newTarget(t, size)
	if _, err := dst.WriteAt(dstData, 0); err != nil {
		t.Fatal(err)
	}
	rec.Reset()
	st, err := transfer.Sync(ctx, src, dst, &transfer.Options{NoJournal: true, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Verified {
		t.Fatal("not verified")
	}
	if n := rec.Count("put-page-from-url"); n < 1 {
		t.Error("no Put Page From URL tried")
	}
	if rec.Count("put-page") == 0 {
		t.Error("no Put Page after Azurite's 501")
	}
	if got := readAll(t, dst, size); !bytes.Equal(got, srcData) {
		t.Fatal("target differs")
	}
}
