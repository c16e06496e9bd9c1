//go:build linux

package main

// Interrupted runs onto page blobs (Azurite): a rerun after SIGKILL takes
// over its own lease and resumes; after a third party broke the lease and
// wrote, it compares everything; a lease of another holder is reported
// and broken only with -break-lease.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deltasync/deltasync/internal/azurite"
)

// blobRequest sends a request to Azurite with an account SAS, as another
// client would, and returns the status.
func blobRequest(t *testing.T, method, u string, hdr map[string]string, body []byte) int {
	t.Helper()
	q, err := azurite.AccountSAS()
	if err != nil {
		t.Fatal(err)
	}
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	req, err := http.NewRequest(method, u+sep+q, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(body))
	req.Header.Set("x-ms-version", "2021-12-02")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// journalLease returns the lease id a journal's witness token holds.
func journalLease(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 12 {
		t.Fatalf("journal %s: %v", path, err)
	}
	n := int(binary.BigEndian.Uint32(b[8:12]))
	var rec struct{ Witness string }
	var tok struct{ Lease string }
	if json.Unmarshal(b[12:12+n], &rec) != nil || json.Unmarshal([]byte(rec.Witness), &tok) != nil || tok.Lease == "" {
		t.Fatalf("journal %s holds no lease in its witness token", path)
	}
	return tok.Lease
}

// killBlobRun starts a run as blobCLI does, waits until its journal's
// watermark reaches at least min bytes, kills it with SIGKILL and returns
// the journal's path, the watermark and what the run printed.
func killBlobRun(t *testing.T, jdir string, min int64, args ...string) (string, int64, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "AZURE_") {
			env = append(env, e)
		}
	}
	cmd.Env = append(env, "XDG_STATE_HOME="+t.TempDir())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if js := journals(t, jdir); len(js) == 1 {
			if w, ok := watermark(js[0]); ok && w >= min {
				break
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	if err := cmd.Wait(); err == nil {
		t.Fatalf("deltasync %s ended before it could be killed: slow it down\n%s", strings.Join(args, " "), out.String())
	}
	js := journals(t, jdir)
	if len(js) != 1 {
		t.Fatalf("want one journal after the kill, have %v\n%s", js, out.String())
	}
	w, ok := watermark(js[0])
	if !ok || w < min {
		t.Fatalf("journal watermark %d (ok %v), want at least %d\n%s", w, ok, min, out.String())
	}
	return js[0], w, out.String()
}

// TestBlobKillResume: sync to a page blob, SIGKILL mid-run, rerun: the
// rerun takes over the killed run's lease (before, it failed for a
// minute with "leased by another writer") and resumes from the journal,
// takes no second prior snapshot, and cuts its recovery point. Then
// SIGKILL again, a third party breaks the lease and writes a page below
// the watermark: the rerun does not resume, compares everything, and the
// blob, downloaded, has the source's SHA-256. The lease id is never
// printed.
func TestBlobKillResume(t *testing.T) {
	s := startAzurite(t)
	dir := t.TempDir()
	jdir := filepath.Join(dir, "journals")
	r := rand.New(rand.NewPCG(7, 8))
	const size = 16 << 20
	img, _ := blobImage(r, size)
	path := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	u := s.BlobURL(blobContainer, "resume.img")
	blobRun(t, "seed", "--json", "-journal-dir", jdir, path, u)
	rewrite := func() {
		for off := 0; off < size; off += 64 << 10 {
			if r.IntN(4) != 0 {
				for i := off; i < off+64<<10; i++ {
					img[i] = byte(r.Uint32()) | 1
				}
			}
		}
		if err := os.WriteFile(path, img, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	slow := []string{"sync", "--json", "-journal-dir", jdir, "-journal-bytes", "1M", "-bwlimit", "3M", path, u}
	again := []string{"sync", "--json", "-journal-dir", jdir, "-journal-bytes", "1M", path, u}
	secretShown := func(lease string, outs ...string) {
		for _, o := range outs {
			if strings.Contains(o, lease) {
				t.Fatalf("the lease id was printed:\n%s", o)
			}
		}
	}

	// Killed, nothing else happens: resumed.
	rewrite()
	j, w, killedOut := killBlobRun(t, jdir, 2<<20, slow...)
	lease := journalLease(t, j)
	so, se, code := blobCLI(t, again...)
	if code != 0 {
		t.Fatalf("rerun after SIGKILL: exit %d\n%s", code, se)
	}
	var res result
	if err := json.Unmarshal([]byte(so), &res); err != nil {
		t.Fatalf("rerun output %q: %v", so, err)
	}
	if !res.Resumed || res.ResumedFrom != w || res.BytesCompared != size-w {
		t.Errorf("rerun after SIGKILL: resumed %v from %d (journal at %d), compared %d of %d (discarded: %q)",
			res.Resumed, res.ResumedFrom, w, res.BytesCompared, size, res.JournalDiscardedReason)
	}
	if res.PriorSnapshot != "" || res.RecoveryPoint == "" {
		t.Errorf("resumed run: prior snapshot %q (want none: the killed run kept it), recovery point %q", res.PriorSnapshot, res.RecoveryPoint)
	}
	blobIs(t, "after the resumed run", u, img)
	secretShown(lease, killedOut, so, se)

	// Killed, then a third party breaks the lease and writes a page
	// below the watermark: not resumed, everything compared.
	rewrite()
	j, w, killedOut = killBlobRun(t, jdir, 2<<20, slow...)
	lease = journalLease(t, j)
	if st := blobRequest(t, http.MethodPut, u+"?comp=lease", map[string]string{"x-ms-lease-action": "break", "x-ms-lease-break-period": "0"}, nil); st != http.StatusAccepted {
		t.Fatalf("break lease: HTTP %d", st)
	}
	page := bytes.Repeat([]byte{0xEE}, 512)
	if st := blobRequest(t, http.MethodPut, u+"?comp=page", map[string]string{"x-ms-page-write": "update", "x-ms-range": "bytes=4096-4607"}, page); st != http.StatusCreated {
		t.Fatalf("third party's Put Page: HTTP %d", st)
	}
	so, se, code = blobCLI(t, again...)
	if code != 0 {
		t.Fatalf("rerun after a third party wrote: exit %d\n%s", code, se)
	}
	res = result{}
	if err := json.Unmarshal([]byte(so), &res); err != nil {
		t.Fatalf("rerun output %q: %v", so, err)
	}
	if res.Resumed || res.JournalDiscardedReason == "" || res.BytesCompared != size {
		t.Errorf("rerun after a third party broke the lease and wrote (journal at %d): resumed %v, compared %d of %d, reason %q",
			w, res.Resumed, res.BytesCompared, size, res.JournalDiscardedReason)
	}
	if res.PriorSnapshot != "" {
		t.Errorf("a run onto a blob left incomplete took a prior snapshot %s", res.PriorSnapshot)
	}
	got, status := blobGet(t, u)
	if status != http.StatusOK || sha256.Sum256(got) != sha256.Sum256(img) {
		t.Fatalf("after the rerun the blob (HTTP %d, %d bytes) does not have the source's SHA-256", status, len(got))
	}
	secretShown(lease, killedOut, so, se)
}

// TestBlobBreakLease: a blob another holder leased (an infinite lease,
// as a crashed tool leaves) is refused with the lease's state and
// duration and the flag that breaks it; -break-lease breaks it.
func TestBlobBreakLease(t *testing.T) {
	s := startAzurite(t)
	dir := t.TempDir()
	jdir := filepath.Join(dir, "journals")
	img, _ := blobImage(rand.New(rand.NewPCG(9, 10)), 2<<20)
	path := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	u := s.BlobURL(blobContainer, "leased.img")
	blobRun(t, "seed", "--json", "-journal-dir", jdir, path, u)
	img[0] ^= 0xFF
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	if st := blobRequest(t, http.MethodPut, u+"?comp=lease", map[string]string{"x-ms-lease-action": "acquire", "x-ms-lease-duration": "-1",
		"x-ms-proposed-lease-id": "5b2ba5a0-5a1e-4b7e-9d55-3e2f1a0c7d11"}, nil); st != http.StatusCreated {
		t.Fatalf("acquire: HTTP %d", st)
	}
	_, se, code := blobCLI(t, "sync", "-journal-dir", jdir, path, u)
	if code == 0 || !strings.Contains(se, "lease state leased, duration infinite") || !strings.Contains(se, "-break-lease") {
		t.Fatalf("sync onto a blob another holds: exit %d\n%s", code, se)
	}
	blobRun(t, "sync", "--json", "-journal-dir", jdir, "-break-lease", path, u)
	blobIs(t, "after -break-lease", u, img)
}

// TestBlobKillBeforeJournal: a run killed after it took its lease but
// before any journal named it (the first save comes after 2 s or
// -journal-bytes) leaves the lease active for up to a minute; the rerun
// takes it over from the lease record beside the journals instead of
// failing with "leased by another writer", and ends equal to the source.
func TestBlobKillBeforeJournal(t *testing.T) {
	s := startAzurite(t)
	dir := t.TempDir()
	jdir := filepath.Join(dir, "journals")
	r := rand.New(rand.NewPCG(5, 6))
	const size = 8 << 20
	img, _ := blobImage(r, size)
	path := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	u := s.BlobURL(blobContainer, "early.img")
	blobRun(t, "seed", "--json", "-journal-dir", jdir, path, u)
	for i := range img {
		img[i] ^= 0x5A
	}
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "sync", "--json", "-journal-dir", jdir, "-bwlimit", "1M", path, u)
	cmd.Env = append(os.Environ(), "XDG_STATE_HOME="+t.TempDir())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m, _ := filepath.Glob(filepath.Join(jdir, "leases", "lease-*.json")); len(m) == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	if err := cmd.Wait(); err == nil {
		t.Fatalf("the run ended before it could be killed\n%s", out.String())
	}
	if js := journals(t, jdir); len(js) != 0 {
		t.Fatalf("the run was killed too late: journals %v", js)
	}
	so, se, code := blobCLI(t, "sync", "--json", "-journal-dir", jdir, path, u)
	if code != 0 {
		t.Fatalf("rerun after a kill before the first journal save: exit %d\n%s", code, se)
	}
	var res result
	if err := json.Unmarshal([]byte(so), &res); err != nil || res.BytesCompared != size {
		t.Fatalf("rerun: %q (%v)", so, err)
	}
	blobIs(t, "after the rerun", u, img)
	if m, _ := filepath.Glob(filepath.Join(jdir, "leases", "lease-*.json")); len(m) != 0 {
		t.Errorf("lease records left after a run released its lease: %v", m)
	}
}
