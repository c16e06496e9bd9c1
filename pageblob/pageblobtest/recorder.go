// Package pageblobtest is test support for code that talks to page blobs:
// a recording HTTP transport that enforces Azure's rules.
//
// Azurite accepts requests Azure refuses (a Put Page over 4 MiB, a write
// past the end of the blob, a blob over 8 TiB): a test that passes against
// Azurite alone proves little. Put a Recorder under the client (it is an
// azcore policy.Transporter: pageblob.Options.Transport) and every request
// is recorded and checked against Azure's rules; a request Azure would
// refuse is answered the way Azure answers it, never sent, and reported
// by Violations and Check.
package pageblobtest

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Azure's page blob limits, as the Recorder enforces them.
const (
	PageSize    = 512
	MaxPut      = 4 << 20
	MaxBlobSize = 8 << 40
)

// Doer sends an HTTP request (an *http.Client, or another transport).
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// Request is one recorded request.
type Request struct {
	Method string
	Host   string
	Path   string     // the URL's escaped path
	Query  url.Values // SAS values replaced by REDACTED
	Op     string     // see Recorder.Do
	Start  int64      // first byte of x-ms-range (or Range), -1 if none
	End    int64      // last byte (inclusive), -1 if none
	Length int64      // request body length
	Header http.Header
	Status int    // response status, 0 on a transport error
	Code   string // x-ms-error-code of the response
	// Refused is why the Recorder answered in Azure's place instead of
	// sending the request ("" if it was sent).
	Refused string
}

// Recorder is an HTTP transport that records requests and enforces
// Azure's page blob rules. Its zero value sends requests with
// http.DefaultClient. It is safe for concurrent use.
type Recorder struct {
	// Next sends the requests that pass. Default http.DefaultClient.
	Next Doer
	// Intercept, when set, sees each request first (its header keys
	// canonicalised, so that Header.Get finds azcore's lower-case x-ms-*
	// headers): it may change it
	// (to corrupt a body, say) and return nil to send it on, or return a
	// response to answer in the server's place (to inject throttling).
	Intercept func(*http.Request) *http.Response

	mu         sync.Mutex
	reqs       []Request
	violations []string
	sizes      map[string]int64 // blob path -> size in bytes
}

// SetSize tells the Recorder the size of a blob it has not seen created,
// resized or read (path as in Request.Path).
func (r *Recorder) SetSize(path string, size int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sizes == nil {
		r.sizes = map[string]int64{}
	}
	r.sizes[path] = size
}

// Requests returns a copy of the requests recorded so far.
func (r *Recorder) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.reqs...)
}

// Count returns how many recorded requests have the operation op.
func (r *Recorder) Count(op string) int {
	n := 0
	for _, q := range r.Requests() {
		if q.Op == op {
			n++
		}
	}
	return n
}

// Violations returns a description of every request Azure would have
// refused.
func (r *Recorder) Violations() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.violations...)
}

// Reset forgets the recorded requests and violations (sizes are kept).
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs, r.violations = nil, nil
}

// Check fails t for every violation recorded.
func (r *Recorder) Check(t testing.TB) {
	t.Helper()
	for _, v := range r.Violations() {
		t.Errorf("a request Azure refuses was sent: %s", v)
	}
}

// classify names a request's operation: put-page, clear-pages,
// put-page-from-url, create, resize, sequence, lease, snapshot,
// page-ranges, page-ranges-diff, get, properties, delete, list, or
// other.
func classify(req *http.Request, h http.Header) string {
	q := req.URL.Query()
	switch req.Method {
	case http.MethodPut:
		switch q.Get("comp") {
		case "page":
			if h.Get("x-ms-page-write") == "clear" {
				return "clear-pages"
			}
			if h.Get("x-ms-copy-source") != "" {
				return "put-page-from-url"
			}
			return "put-page"
		case "properties":
			if h.Get("x-ms-blob-content-length") != "" {
				return "resize"
			}
			if h.Get("x-ms-sequence-number-action") != "" {
				return "sequence"
			}
		case "lease":
			return "lease"
		case "snapshot":
			return "snapshot"
		case "":
			if h.Get("x-ms-blob-type") != "" {
				return "create"
			}
		}
	case http.MethodGet:
		switch {
		case q.Get("comp") == "pagelist":
			if q.Get("prevsnapshot") != "" || h.Get("x-ms-previous-snapshot-url") != "" {
				return "page-ranges-diff"
			}
			return "page-ranges"
		case q.Get("comp") == "list":
			return "list"
		case q.Get("comp") == "":
			return "get"
		}
	case http.MethodHead:
		return "properties"
	case http.MethodDelete:
		return "delete"
	}
	return "other"
}

// parseRange reads "bytes=S-E" from x-ms-range or Range.
func parseRange(h http.Header, names ...string) (int64, int64, bool) {
	for _, name := range names {
		v := h.Get(name)
		if v == "" {
			continue
		}
		s, e, ok := strings.Cut(strings.TrimPrefix(v, "bytes="), "-")
		if !ok {
			return -1, -1, false
		}
		start, err1 := strconv.ParseInt(s, 10, 64)
		end, err2 := strconv.ParseInt(e, 10, 64)
		if err1 != nil || err2 != nil {
			return -1, -1, false
		}
		return start, end, true
	}
	return -1, -1, false
}

func redactQuery(q url.Values) url.Values {
	out := url.Values{}
	for k, vs := range q {
		switch strings.ToLower(k) {
		case "snapshot", "prevsnapshot", "comp", "restype", "marker", "maxresults", "include", "prefix", "timeout":
			out[k] = vs
		default:
			out[k] = []string{"REDACTED"}
		}
	}
	return out
}

// refusal is how Azure answers a request it refuses.
type refusal struct {
	status int
	code   string
	why    string
}

// check applies Azure's rules to a request, given the blob's known size.
func check(op string, rq *Request, req *http.Request, h http.Header, size int64, sizeKnown bool) *refusal {
	aligned := rq.Start >= 0 && rq.Start%PageSize == 0 && (rq.End+1)%PageSize == 0 && rq.End >= rq.Start
	pastEnd := func() *refusal {
		if !sizeKnown {
			return &refusal{400, "InvalidPageRange", fmt.Sprintf("%s [%d, %d] on %s, whose size the recorder never saw", op, rq.Start, rq.End, rq.Path)}
		}
		if rq.End >= size {
			return &refusal{416, "InvalidPageRange", fmt.Sprintf("%s [%d, %d] past the end of %s (%d bytes)", op, rq.Start, rq.End, rq.Path, size)}
		}
		return nil
	}
	checkSize := func(v string) *refusal {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n%PageSize != 0 {
			return &refusal{400, "InvalidHeaderValue", fmt.Sprintf("%s of %s: size %q is not a multiple of 512", op, rq.Path, v)}
		}
		if n > MaxBlobSize {
			return &refusal{400, "InvalidHeaderValue", fmt.Sprintf("%s of %s: size %d is over 8 TiB", op, rq.Path, n)}
		}
		return nil
	}
	switch op {
	case "put-page", "put-page-from-url":
		if !aligned {
			return &refusal{400, "InvalidPageRange", fmt.Sprintf("%s range [%d, %d] not 512-aligned", op, rq.Start, rq.End)}
		}
		n := rq.End - rq.Start + 1
		if n > MaxPut {
			return &refusal{413, "RequestBodyTooLarge", fmt.Sprintf("%s of %d bytes, over 4 MiB", op, n)}
		}
		if op == "put-page" && rq.Length != n {
			return &refusal{400, "InvalidHeaderValue", fmt.Sprintf("put-page body of %d bytes for a range of %d", rq.Length, n)}
		}
		if op == "put-page-from-url" {
			s, e, ok := parseRange(h, "x-ms-source-range")
			if !ok || e-s != rq.End-rq.Start {
				return &refusal{400, "InvalidHeaderValue", fmt.Sprintf("put-page-from-url source range %q does not match [%d, %d]", h.Get("x-ms-source-range"), rq.Start, rq.End)}
			}
		}
		return pastEnd()
	case "clear-pages":
		if !aligned {
			return &refusal{400, "InvalidPageRange", fmt.Sprintf("clear-pages range [%d, %d] not 512-aligned", rq.Start, rq.End)}
		}
		return pastEnd()
	case "create":
		if strings.HasPrefix(req.URL.Hostname(), "md-") {
			return &refusal{400, "InvalidOperation", "create on a managed disk upload URL (the blob exists)"}
		}
		if h.Get("x-ms-blob-type") == "PageBlob" {
			return checkSize(h.Get("x-ms-blob-content-length"))
		}
	case "resize":
		return checkSize(h.Get("x-ms-blob-content-length"))
	}
	return nil
}

// Do records req, checks it against Azure's rules, and sends it on, or
// answers as Azure would when a rule is broken.
func (r *Recorder) Do(req *http.Request) (*http.Response, error) {
	// azcore sets x-ms-* headers with lower-case keys, bypassing
	// canonicalisation: read them through a canonical copy.
	h := http.Header{}
	for k, vs := range req.Header {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	req.Header = h
	op := classify(req, h)
	rq := Request{
		Method: req.Method, Host: req.URL.Host, Path: req.URL.EscapedPath(), Query: redactQuery(req.URL.Query()),
		Op: op, Start: -1, End: -1, Length: req.ContentLength, Header: h.Clone(),
	}
	rq.Header.Del("Authorization")
	if v := rq.Header.Get("x-ms-copy-source"); v != "" {
		rq.Header.Set("x-ms-copy-source", "REDACTED")
	}
	if s, e, ok := parseRange(h, "x-ms-range", "Range"); ok {
		rq.Start, rq.End = s, e
	}
	snapshot := req.URL.Query().Get("snapshot") != ""

	r.mu.Lock()
	size, known := r.sizes[rq.Path]
	r.mu.Unlock()

	var resp *http.Response
	var err error
	if ref := check(op, &rq, req, h, size, known); ref != nil {
		rq.Refused = ref.why
		resp = azureError(req, ref)
	} else if r.Intercept != nil {
		resp = r.Intercept(req)
	}
	if resp == nil {
		next := r.Next
		if next == nil {
			next = http.DefaultClient
		}
		resp, err = next.Do(req)
	}
	if resp != nil {
		rq.Status, rq.Code = resp.StatusCode, resp.Header.Get("x-ms-error-code")
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, rq)
	if rq.Refused != "" {
		r.violations = append(r.violations, rq.Refused)
	}
	if err == nil && resp.StatusCode < 300 && rq.Refused == "" {
		if r.sizes == nil {
			r.sizes = map[string]int64{}
		}
		switch {
		case op == "create" || op == "resize":
			if n, perr := strconv.ParseInt(h.Get("x-ms-blob-content-length"), 10, 64); perr == nil {
				r.sizes[rq.Path] = n
			}
		case op == "properties" && !snapshot:
			if n, perr := strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64); perr == nil {
				r.sizes[rq.Path] = n
			} else if resp.ContentLength >= 0 {
				r.sizes[rq.Path] = resp.ContentLength
			}
		}
	}
	return resp, err
}

func azureError(req *http.Request, ref *refusal) *http.Response {
	body := fmt.Sprintf("<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>%s</Code><Message>%s (refused by pageblobtest.Recorder as Azure would)</Message></Error>", ref.code, xmlEscape(ref.why))
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	h := http.Header{}
	h.Set("x-ms-error-code", ref.code)
	h.Set("Content-Type", "application/xml")
	return &http.Response{
		Status: fmt.Sprintf("%d %s", ref.status, http.StatusText(ref.status)), StatusCode: ref.status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)), Request: req,
	}
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
