package main

import (
	"bytes"
	"context"
	"fmt"
	"hash/crc64"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/pageblob"

	"github.com/deltasync/deltasync/internal/azurite"
)

// The azurite case measures deltasync with page blob targets on a real
// Azurite. Azurite writes at about 55 MB/s whatever the concurrency (one
// Node process), so a time against it measures Azurite more than
// deltasync: the case reports bytes and requests, and the engine's
// overhead as a ratio to the least any tool must spend writing the same
// bytes to the same Azurite.
//
//   - azurite-seed: deltasync seed --json of a 256 MiB image, half zeros
//     (in 1 MiB holes), into a new blob.
//   - azurite-sync: deltasync sync --json of the same image with 1% of its
//     blocks changed, into the blob just seeded.
//   - azurite-overhead: a 256 MiB image of random data seeded into a new
//     blob by deltasync and, as the floor, by plain concurrent UploadPages
//     calls of 4 MiB (the azblob pageblob client, no engine: bench child
//     uploadpages), with the same concurrency and the same transactional
//     CRC64. The ratio column (ratio_to_floor) is the overhead.
//
// Each repetition starts a fresh Azurite that keeps its data on disk
// (--location in a temporary folder, removed when it stops): in-memory
// Azurite never frees memory. The tools run interleaved, the order of the
// overhead pair alternating between repetitions, and every blob written
// is downloaded with a plain HTTP GET afterwards and compared with its
// image: a wrong blob fails the run. Not in the default case list.

const (
	azuriteSize        = 256 << 20
	azuriteConcurrency = 4 // deltasync's default writer count, given to both
	azuriteContainer   = "bench"
)

func caseAzurite(ctx context.Context, c *config, rep *Report) error {
	base := filepath.Join(c.dir, "azurite-half.img")
	changed := filepath.Join(c.dir, "azurite-changed.img")
	random := filepath.Join(c.dir, "azurite-random.img")
	jdir := filepath.Join(c.dir, "azurite-journals")
	defer os.Remove(base)
	defer os.Remove(changed)
	defer os.Remove(random)
	defer os.RemoveAll(jdir)
	fmt.Printf("# making %s images for Azurite: half zeros, the same with 1%% of %s blocks changed, random\n", human(azuriteSize), human(c.block))
	if err := makeImage(base, azuriteSize, 0.5, 5); err != nil {
		return err
	}
	nonzero, err := dataBytes(base)
	if err != nil {
		return err
	}
	nch, err := changeBlocks(base, changed, c.block, 0.01, 0, false, 6)
	if err != nil {
		return err
	}
	if err := makeImage(random, azuriteSize, 0, 7); err != nil {
		return err
	}
	if err := warm(base, changed, random); err != nil {
		return err
	}

	seedRes := Result{Spec: spec{Case: "azurite-seed", Size: azuriteSize, Block: c.block, ZeroFrac: 0.5, Cache: "warm", Changed: nonzero}, Runs: map[string][]Measure{}}
	syncRes := Result{Spec: spec{Case: "azurite-sync", Size: azuriteSize, Block: c.block, Change: 0.01, Pattern: "scattered", Cache: "warm", Changed: int64(nch) * c.block}, Runs: map[string][]Measure{}}
	overRes := Result{Spec: spec{Case: "azurite-overhead", Size: azuriteSize, Block: c.block, Cache: "warm", Changed: azuriteSize}, Runs: map[string][]Measure{}}
	ds := func(args ...string) []string {
		return append([]string{c.deltasync, args[0], "--json", "-journal-dir", jdir, "--block-size", strconv.FormatInt(c.block, 10)}, args[1:]...)
	}
	for r := 0; r < c.runs; r++ {
		srv, err := azurite.Start(ctx, azurite.Options{})
		if err != nil {
			return err
		}
		err = azuriteRepetition(ctx, srv, r, ds, base, changed, random, &seedRes, &syncRes, &overRes)
		srv.Stop()
		if err != nil {
			return fmt.Errorf("repetition %d: %w", r+1, err)
		}
	}
	for _, res := range []*Result{&seedRes, &syncRes, &overRes} {
		res.summarise()
		rep.Results = append(rep.Results, *res)
		res.print(os.Stdout)
	}
	for _, s := range overRes.Summary {
		if s.Tool == "deltasync" {
			fmt.Printf("  engine overhead against plain UploadPages (median of %d interleaved runs): %.3fx\n", s.Runs, s.Ratio)
		}
	}
	return nil
}

func azuriteRepetition(ctx context.Context, srv *azurite.Server, r int, ds func(...string) []string,
	base, changed, random string, seedRes, syncRes, overRes *Result) error {
	if err := srv.CreateContainer(ctx, azuriteContainer); err != nil {
		return err
	}
	run := func(res *Result, tool string, ext bool, image, url string, argv []string) error {
		m, err := runChild(ctx, ext, argv...)
		if err != nil {
			return fmt.Errorf("%s: %w", tool, err)
		}
		if err := blobIdentical(url, image); err != nil {
			return fmt.Errorf("%s left a WRONG BLOB: %w", tool, err)
		}
		m.Verified = true
		res.Runs[tool] = append(res.Runs[tool], m)
		return nil
	}
	seeded := srv.BlobURL(azuriteContainer, "seeded.img")
	if err := run(seedRes, "deltasync", true, base, seeded, ds("seed", base, seeded)); err != nil {
		return err
	}
	if err := run(syncRes, "deltasync", true, changed, seeded, ds("sync", changed, seeded)); err != nil {
		return err
	}
	conc := strconv.Itoa(azuriteConcurrency)
	pair := []func() error{
		func() error {
			u := srv.BlobURL(azuriteContainer, "engine.img")
			return run(overRes, "deltasync", true, random, u,
				ds("seed", "-concurrency", conc, "-snapshot=false", "-keep-prior=false", random, u))
		},
		func() error {
			u := srv.BlobURL(azuriteContainer, "floor.img")
			return run(overRes, "floor", false, random, u, []string{"uploadpages", random, u, conc})
		},
	}
	if r%2 == 1 {
		pair[0], pair[1] = pair[1], pair[0]
	}
	for _, f := range pair {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

// blobIdentical downloads a blob of Azurite with a plain HTTP GET (an
// account SAS from the public development key) and compares it with path.
func blobIdentical(url, path string) error {
	q, err := azurite.AccountSAS()
	if err != nil {
		return err
	}
	req, err := http.NewRequest(http.MethodGet, url+"?"+q, nil)
	if err != nil {
		return err
	}
	req.Header.Set("x-ms-version", "2021-12-02")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	ba, bb := make([]byte, 8<<20), make([]byte, 8<<20)
	for off := int64(0); ; {
		na, ea := io.ReadFull(resp.Body, ba)
		nb, eb := io.ReadFull(f, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return fmt.Errorf("%s and %s differ in [%d,%d)", url, path, off, off+int64(max(na, nb)))
		}
		off += int64(na)
		if ea != nil || eb != nil {
			if (ea == io.EOF || ea == io.ErrUnexpectedEOF) && (eb == io.EOF || eb == io.ErrUnexpectedEOF) {
				return nil
			}
			return fmt.Errorf("reading: %v / %v", ea, eb)
		}
	}
}

// childUploadPages is the floor of the overhead measurement: it creates a
// page blob of the file's size on Azurite and writes the file's 4 MiB
// pieces that are not all zeros with plain UploadPages calls, CONCURRENCY
// at a time, each with its transactional CRC64 computed here as deltasync
// does. No engine: no comparison, no journal, no lease.
//
//	bench child uploadpages FILE URL CONCURRENCY
func childUploadPages(ctx context.Context, args []string) (map[string]any, error) {
	if len(args) != 3 {
		return nil, fmt.Errorf("uploadpages FILE URL CONCURRENCY")
	}
	conc, err := strconv.Atoi(args[2])
	if err != nil || conc < 1 {
		return nil, fmt.Errorf("bad concurrency %q", args[2])
	}
	f, err := os.Open(args[0])
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	cred, err := blob.NewSharedKeyCredential(azurite.Account, azurite.Key)
	if err != nil {
		return nil, err
	}
	pb, err := pageblob.NewClientWithSharedKeyCredential(args[1], cred, nil)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if _, err := pb.Create(ctx, size, nil); err != nil {
		return nil, err
	}
	table := crc64.MakeTable(0x9A6C9329AC4BC9B5) // Azure Storage's CRC64
	var next, written, requests atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, conc)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4<<20)
			for {
				off := next.Add(int64(len(buf))) - int64(len(buf))
				if off >= size {
					return
				}
				p := buf[:min(int64(len(buf)), size-off)]
				if _, err := f.ReadAt(p, off); err != nil && err != io.EOF {
					errs <- err
					return
				}
				if allZeroBytes(p) {
					continue
				}
				_, err := pb.UploadPages(ctx, streaming.NopCloser(bytes.NewReader(p)), blob.HTTPRange{Offset: off, Count: int64(len(p))},
					&pageblob.UploadPagesOptions{TransactionalValidation: blob.TransferValidationTypeCRC64(crc64.Checksum(p, table))})
				if err != nil {
					errs <- fmt.Errorf("UploadPages at %d: %w", off, err)
					return
				}
				written.Add(int64(len(p)))
				requests.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	return map[string]any{"bytes_written": written.Load(), "requests": requests.Load(), "seconds": time.Since(start).Seconds()}, nil
}

func allZeroBytes(p []byte) bool {
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}
