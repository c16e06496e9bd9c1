package pageblob

// Acceptance tests of the engine (package transfer) with page blob
// targets on a real Azurite (on disk, --location, started by TestMain):
// seeding, syncing, unreliable networks and resuming, with every request
// counted by a pageblobtest.Recorder under the client, and every result
// checked by an independent download (plain HTTP GET) of the blob.
//
// Azurite writes at about 55 MB/s: the images are at most 256 MiB so
// that the file finishes in well under three minutes.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/internal/azurite"
	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/pageblob/pageblobtest"
	"github.com/deltasync/deltasync/transfer"
)

const accBlock = 64 << 10 // the engine's default comparison block

// accImage writes an image of size bytes at path: regions of random
// data and of zeros, alternating at random, each a random multiple of
// 64 KiB from 64 KiB to 4 MiB long, about zeroFrac of it zeros. It
// returns the bytes of its non-zero 512-byte pages.
func accImage(t *testing.T, path string, size int64, zeroFrac float64, seed uint64) int64 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(seed, 1))
	data := rand.NewChaCha8([32]byte{byte(seed), 1})
	buf := make([]byte, 4<<20)
	var nonzero int64
	for off := int64(0); off < size; {
		n := min(int64(1+r.IntN(64))*accBlock, size-off)
		p := buf[:n]
		if r.Float64() < zeroFrac {
			clear(p)
		} else {
			data.Read(p)
		}
		nonzero += nonzeroPages(p)
		if _, err := f.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		off += n
	}
	return nonzero
}

// nonzeroPages counts the bytes of the 512-byte pages of p that hold a
// byte other than zero.
func nonzeroPages(p []byte) int64 {
	var n int64
	for i := 0; i < len(p); i += PageSize {
		if !allZero(p[i:min(i+PageSize, len(p))]) {
			n += int64(min(PageSize, len(p)-i))
		}
	}
	return n
}

// accChange overwrites frac of the image's 64 KiB blocks, chosen at
// random, with random data, and returns the changed ranges, sorted.
func accChange(t *testing.T, path string, size int64, frac float64, r *rand.Rand) []disk.Range {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	blocks := size / accBlock
	n := max(1, int(float64(blocks)*frac))
	picked := map[int64]bool{}
	for len(picked) < n {
		picked[r.Int64N(blocks)] = true
	}
	data := rand.NewChaCha8([32]byte{byte(r.Uint32()), 2})
	p := make([]byte, accBlock)
	var out []disk.Range
	for b := range picked {
		data.Read(p)
		if _, err := f.WriteAt(p, b*accBlock); err != nil {
			t.Fatal(err)
		}
		out = append(out, disk.Range{Off: b * accBlock, Len: accBlock})
	}
	slices.SortFunc(out, func(a, b disk.Range) int { return int(a.Off - b.Off) })
	return out
}

// maxPuts is the number of Put Pages the changed ranges need at most:
// adjacent ranges coalesced, each extent split at 4 MiB.
func maxPuts(changed []disk.Range) int {
	n := 0
	for _, x := range disk.Normalize(slices.Clone(changed)) {
		n += int((x.Len + MaxPut - 1) / MaxPut)
	}
	return n
}

func sumRanges(rs []disk.Range) int64 {
	var n int64
	for _, r := range rs {
		n += r.Len
	}
	return n
}

// traffic is what a Recorder saw of one blob: bytes uploaded by Put Page
// and downloaded by ranged Get Blob (answered with success), and the
// ranges read.
type traffic struct {
	puts, gets       int
	uploaded, downed int64
	read             []disk.Range
}

func trafficOf(rec *pageblobtest.Recorder, blob string) traffic {
	var tr traffic
	for _, r := range rec.Requests() {
		if !strings.HasSuffix(r.Path, "/"+blob) || r.Status >= 300 || r.Status == 0 {
			continue
		}
		switch r.Op {
		case "put-page":
			tr.puts++
			tr.uploaded += r.Length
		case "get":
			if r.Query.Get("snapshot") != "" || r.Start < 0 {
				continue
			}
			tr.gets++
			tr.downed += r.End - r.Start + 1
			tr.read = append(tr.read, disk.Range{Off: r.Start, Len: r.End - r.Start + 1})
		}
	}
	return tr
}

// downloadMatches downloads the blob with a plain HTTP GET (an account
// SAS from the public development key; no code of this package) and
// compares it with the file, streaming.
func downloadMatches(t *testing.T, blobURL, path string) {
	t.Helper()
	q, err := azurite.AccountSAS()
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, blobURL+"?"+q, nil)
	req.Header.Set("x-ms-version", "2021-12-02")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", blobURL, resp.Status)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	if resp.ContentLength != fi.Size() {
		t.Fatalf("blob is %d bytes, the image %d", resp.ContentLength, fi.Size())
	}
	a, b := make([]byte, 4<<20), make([]byte, 4<<20)
	for off := int64(0); ; {
		na, ea := io.ReadFull(resp.Body, a)
		nb, eb := io.ReadFull(f, b)
		if na != nb || !bytes.Equal(a[:na], b[:nb]) {
			t.Fatalf("the downloaded blob differs from the image in [%d, %d)", off, off+int64(max(na, nb)))
		}
		off += int64(na)
		if ea != nil || eb != nil {
			if (ea == io.EOF || ea == io.ErrUnexpectedEOF) && (eb == io.EOF || eb == io.ErrUnexpectedEOF) {
				return
			}
			t.Fatalf("downloading: %v; reading the image: %v", ea, eb)
		}
	}
}

// accRun opens the image as a source and the blob as a target (created
// with the image's size when createSize is set), runs Seed or Sync, and
// closes both.
func accRun(ctx context.Context, t *testing.T, seed bool, img, blobURL string, o *Options, to *transfer.Options) (transfer.Stats, error) {
	t.Helper()
	src, err := localdisk.OpenSource(img, localdisk.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := OpenTarget(ctx, blobURL, o)
	if err != nil {
		return transfer.Stats{}, err
	}
	run := transfer.Sync
	if seed {
		run = transfer.Seed
	}
	st, err := run(ctx, src, dst, to)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	return st, err
}

// (a) Seeding a 256 MiB image, half zeros, into a new blob uploads its
// non-zero pages and nothing else, and reads nothing of the target; (b)
// a sync after 1% of its 64 KiB blocks changed uploads the changed
// bytes, in no more Put Pages than the changed extents need, and (e)
// reads only the target's allocated ranges.
func TestAzuriteSeedAndSync(t *testing.T) {
	const size = 256 << 20
	ctx := context.Background()
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	nonzero := accImage(t, img, size, 0.5, 7)
	name := blobName(t)
	blobURL := az.BlobURL(testContainer, name)
	journals := transfer.DirStore{Dir: filepath.Join(dir, "journals")}

	// (a) Seed.
	o, rec := testOptions(t)
	o.CreateSize = size
	t0 := time.Now()
	st, err := accRun(ctx, t, true, img, blobURL, o, &transfer.Options{Journal: journals})
	if err != nil {
		t.Fatal(err)
	}
	seedTime := time.Since(t0)
	tr := trafficOf(rec, name)
	t.Logf("seed: %d MiB image, %d bytes non-zero; uploaded %d bytes in %d Put Pages (%+.3f%%), downloaded %d bytes in %d Gets, %v",
		size>>20, nonzero, tr.uploaded, tr.puts, 100*float64(tr.uploaded-nonzero)/float64(nonzero), tr.downed, tr.gets, seedTime.Round(time.Millisecond))
	if d := tr.uploaded - nonzero; d < 0 || float64(d) > 0.01*float64(nonzero) {
		t.Errorf("seed uploaded %d bytes for %d non-zero: not within 1%%", tr.uploaded, nonzero)
	}
	if st.Written != tr.uploaded {
		t.Errorf("the engine says it wrote %d bytes, the transport saw %d", st.Written, tr.uploaded)
	}
	// (e) A new blob is proven empty: it is never read.
	if !st.ProvenEmpty || tr.gets != 0 || st.TargetRead != 0 {
		t.Errorf("seed read the new target: proven empty %v, %d Gets, %d bytes", st.ProvenEmpty, tr.gets, st.TargetRead)
	}
	downloadMatches(t, blobURL, img)

	// (b) Sync after a 1% change.
	r := rand.New(rand.NewPCG(8, 9))
	changed := accChange(t, img, size, 0.01, r)
	changedBytes := sumRanges(changed)
	probe, err := Open(ctx, blobURL, &Options{Getenv: noEnv, RangeCacheSegments: -1})
	if err != nil {
		t.Fatal(err)
	}
	allocated, err := probe.AllocatedRanges(ctx, 0, size)
	probe.Close()
	if err != nil {
		t.Fatal(err)
	}
	o, rec = testOptions(t)
	t0 = time.Now()
	st, err = accRun(ctx, t, false, img, blobURL, o, &transfer.Options{Journal: journals})
	if err != nil {
		t.Fatal(err)
	}
	tr = trafficOf(rec, name)
	limit := maxPuts(changed)
	t.Logf("sync: %d bytes changed in %d blocks (%d extents coalesced); uploaded %d bytes in %d Put Pages (at most %d allowed); downloaded %d bytes in %d Gets (target allocated: %d bytes), %v",
		changedBytes, len(changed), len(disk.Normalize(slices.Clone(changed))), tr.uploaded, tr.puts, limit, tr.downed, tr.gets, sumRanges(allocated), time.Since(t0).Round(time.Millisecond))
	if d := tr.uploaded - changedBytes; d < 0 || float64(d) > 0.02*float64(changedBytes) {
		t.Errorf("sync uploaded %d bytes for %d changed: not within 2%%", tr.uploaded, changedBytes)
	}
	if tr.puts > limit {
		t.Errorf("%d Put Pages for changes that need at most %d", tr.puts, limit)
	}
	if st.TargetRead != tr.downed {
		t.Errorf("the engine says it read %d bytes of the target, the transport saw %d", st.TargetRead, tr.downed)
	}
	// (e) Only allocated ranges were read.
	if tr.downed > sumRanges(allocated) {
		t.Errorf("sync downloaded %d bytes; only %d are allocated", tr.downed, sumRanges(allocated))
	}
	for _, x := range tr.read {
		if got := sumRanges(intersect(allocated, x)); got != x.Len {
			t.Errorf("sync read [%d, %d), of which only %d bytes are allocated", x.Off, x.End(), got)
			break
		}
	}
	downloadMatches(t, blobURL, img)
}

// intersect returns the parts of sorted rs inside x.
func intersect(rs []disk.Range, x disk.Range) []disk.Range {
	var out []disk.Range
	for _, r := range rs {
		if c := clip(r, x.Off, x.End()); c.Len > 0 {
			out = append(out, c)
		}
	}
	return out
}

// (c) Through a proxy that resets connections (before forwarding, and
// after the request was applied), answers 500 and 503 with Retry-After,
// and delays answers, for 5% of the requests, ten syncs in a row, each
// after a random 1% change, all end identical.
func TestAzuriteFaultyNetwork(t *testing.T) {
	const size = 64 << 20
	ctx := context.Background()
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	accImage(t, img, size, 0.5, 11)
	seed := uint64(time.Now().UnixNano())
	t.Logf("fault seed %d", seed)
	proxy := pageblobtest.NewFaultProxy(t, strings.SplitN(az.Endpoint, "/", 4)[2], 0.05, seed)
	name := blobName(t)
	viaProxy := proxy.URL + "/" + azurite.Account + "/" + testContainer + "/" + name
	direct := az.BlobURL(testContainer, name)
	journals := transfer.DirStore{Dir: filepath.Join(dir, "journals")}
	opts := func() *Options {
		o, _ := testOptions(t)
		// Retry-After: 1 must be under MaxRetryDelay, or azcore gives up.
		o.Retry = policy.RetryOptions{MaxRetries: 4, RetryDelay: 50 * time.Millisecond, MaxRetryDelay: 2 * time.Second}
		return o
	}
	o := opts()
	o.CreateSize = size
	if _, err := accRun(ctx, t, true, img, viaProxy, o, &transfer.Options{Journal: journals}); err != nil {
		t.Fatalf("seed through the proxy: %v (%s)", err, proxy.Report())
	}
	downloadMatches(t, direct, img)
	r := rand.New(rand.NewPCG(seed, 4))
	ok := 0
	for i := range 10 {
		accChange(t, img, size, 0.01, r)
		st, err := accRun(ctx, t, false, img, viaProxy, opts(), &transfer.Options{Journal: journals})
		if err != nil {
			t.Errorf("sync %d: %v", i+1, err)
			continue
		}
		downloadMatches(t, direct, img)
		ok++
		t.Logf("sync %d: wrote %d bytes, read %d bytes of the target", i+1, st.Written, st.TargetRead)
	}
	t.Logf("%d of 10 syncs identical; %s", ok, proxy.Report())
	if ok != 10 {
		t.Fatalf("%d of 10 syncs ended identical", ok)
	}
	for k := pageblobtest.FaultKind(0); k < pageblobtest.FaultKinds; k++ {
		if proxy.Count(k) == 0 {
			t.Logf("note: no %s fault was drawn in this run", k)
		}
	}
}

// countingStore counts the journal saves of a run.
type countingStore struct {
	transfer.JournalStore
	saves atomic.Int64
}

func (s *countingStore) Save(ctx context.Context, key string, data []byte) error {
	err := s.JournalStore.Save(ctx, key, data)
	if err == nil {
		s.saves.Add(1)
	}
	return err
}

// (d) A sync interrupted at a random write (its context cancelled, as
// by Ctrl-C) resumes from its journal when run again, and ends identical.
func TestAzuriteResumeAfterKill(t *testing.T) {
	const size = 64 << 20
	ctx := context.Background()
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	accImage(t, img, size, 0.3, 21)
	name := blobName(t)
	blobURL := az.BlobURL(testContainer, name)
	store := &countingStore{JournalStore: transfer.DirStore{Dir: filepath.Join(dir, "journals")}}
	to := &transfer.Options{Journal: store, JournalBytes: 2 << 20}
	o, _ := testOptions(t)
	o.CreateSize = size
	if _, err := accRun(ctx, t, true, img, blobURL, o, to); err != nil {
		t.Fatal(err)
	}
	// Change a quarter of the blocks: a sync of a few hundred writes.
	seed := uint64(time.Now().UnixNano())
	r := rand.New(rand.NewPCG(seed, 5))
	changed := accChange(t, img, size, 0.25, r)
	writes := len(disk.Normalize(slices.Clone(changed)))
	killAt := writes/4 + r.IntN(writes/2)
	t.Logf("seed %d: %d changed extents; cancelling at Put Page %d (after a journal save)", seed, writes, killAt)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	o, rec := testOptions(t)
	var puts atomic.Int64
	rec.Intercept = func(req *http.Request) *http.Response {
		if req.Method == http.MethodPut && req.URL.Query().Get("comp") == "page" && req.Header.Get("x-ms-page-write") == "update" {
			if puts.Add(1) >= int64(killAt) && store.saves.Load() > 0 {
				cancel()
			}
		}
		return nil
	}
	store.saves.Store(0)
	st, err := accRun(runCtx, t, false, img, blobURL, o, to)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted sync: %v (wrote %d bytes), want context.Canceled", err, st.Written)
	}
	t.Logf("interrupted after %d Put Pages, %d bytes written, %d journal saves", puts.Load(), st.Written, store.saves.Load())

	o, _ = testOptions(t)
	st2, err := accRun(ctx, t, false, img, blobURL, o, to)
	if err != nil {
		t.Fatal(err)
	}
	if !st2.Resumed || st2.ResumedFrom <= 0 {
		t.Fatalf("the rerun did not resume: resumed %v from %d (%q)", st2.Resumed, st2.ResumedFrom, st2.JournalDiscardedReason)
	}
	t.Logf("rerun resumed from %d (%.0f%%), wrote %d bytes, compared %d", st2.ResumedFrom, 100*float64(st2.ResumedFrom)/size, st2.Written, st2.Compared)
	downloadMatches(t, blobURL, img)
}
