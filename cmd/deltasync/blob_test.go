//go:build linux

package main

// End-to-end tests of page blob URLs as SRC and DST, and of the snapshots
// command, on a private Azurite (internal/azurite; on disk, --location).
// The binary is the one e2e_test.go's TestMain builds.

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/internal/azurite"
)

const blobContainer = "cli"

// blobCLI runs the binary with a private state directory and no Azure
// credentials in its environment.
func blobCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "AZURE_") {
			env = append(env, e)
		}
	}
	cmd.Env = append(env, "XDG_STATE_HOME="+t.TempDir())
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(se.String(), "panic:") {
		t.Fatalf("deltasync %s panicked:\n%s", strings.Join(args, " "), se.String())
	}
	return so.String(), se.String(), code
}

// blobRun runs a command that must succeed and prints one JSON object.
func blobRun(t *testing.T, args ...string) (result, string) {
	t.Helper()
	so, se, code := blobCLI(t, args...)
	if code != 0 {
		t.Fatalf("deltasync %s: exit %d\n%s", strings.Join(args, " "), code, se)
	}
	var r result
	if err := json.Unmarshal([]byte(so), &r); err != nil {
		t.Fatalf("deltasync %s: output %q: %v", strings.Join(args, " "), so, err)
	}
	return r, se
}

// blobImage is an image of 64 KiB regions, data or zeros at random; it
// returns the bytes of data.
func blobImage(r *rand.Rand, size int) ([]byte, int64) {
	b := make([]byte, size)
	var data int64
	for off := 0; off < size; off += 64 << 10 {
		if r.IntN(2) == 0 {
			continue
		}
		for i := off; i < off+64<<10; i++ {
			b[i] = byte(r.Uint32()) | 1
		}
		data += 64 << 10
	}
	return b, data
}

// blobGet downloads a blob with a plain HTTP GET and an account SAS.
func blobGet(t *testing.T, u string) ([]byte, int) {
	t.Helper()
	q, err := azurite.AccountSAS()
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, u+"?"+q, nil)
	req.Header.Set("x-ms-version", "2021-12-02")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b, resp.StatusCode
}

func blobIs(t *testing.T, what, u string, want []byte) {
	t.Helper()
	got, status := blobGet(t, u)
	if status != http.StatusOK || !bytes.Equal(got, want) {
		t.Fatalf("%s: the blob (HTTP %d, %d bytes) differs from the image (%d bytes)", what, status, len(got), len(want))
	}
}

func startAzurite(t *testing.T) *azurite.Server {
	t.Helper()
	s := azurite.ForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.CreateContainer(ctx, blobContainer); err != nil {
		t.Fatal(err)
	}
	return s
}

// Seed a new blob, sync it after a change, and list its snapshots: the
// prior state is kept before the sync's first write, every successful
// run cuts a recovery point, and both are reported in --json.
func TestBlobSeedSyncSnapshots(t *testing.T) {
	s := startAzurite(t)
	dir := t.TempDir()
	jdir := filepath.Join(dir, "journals")
	r := rand.New(rand.NewPCG(1, 2))
	const size = 8 << 20
	img, data := blobImage(r, size)
	path := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	u := s.BlobURL(blobContainer, "disk.img")

	res, _ := blobRun(t, "seed", "--json", "-journal-dir", jdir, path, u)
	if res.BytesWritten != data || res.TargetRead != 0 {
		t.Errorf("seed wrote %d bytes (want %d) and read %d of the target (want 0)", res.BytesWritten, data, res.TargetRead)
	}
	if res.RecoveryPoint == "" || res.PriorSnapshot != "" {
		t.Errorf("seed of a new blob: recovery point %q, prior snapshot %q", res.RecoveryPoint, res.PriorSnapshot)
	}
	blobIs(t, "after seed", u, img)
	rp1 := res.RecoveryPoint
	seeded := bytes.Clone(img)

	// Change 3 blocks and sync.
	for _, b := range []int{3, 50, 101} {
		for i := b << 16; i < (b+1)<<16; i++ {
			img[i] = byte(r.Uint32())
		}
	}
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	res, stderr := blobRun(t, "sync", "--json", "-journal-dir", jdir, path, u)
	if res.BytesWritten != 3<<16 {
		t.Errorf("sync wrote %d bytes, want %d", res.BytesWritten, 3<<16)
	}
	if res.PriorSnapshot == "" || res.RecoveryPoint == "" {
		t.Fatalf("sync of an existing blob: prior snapshot %q, recovery point %q", res.PriorSnapshot, res.RecoveryPoint)
	}
	if !strings.Contains(stderr, res.PriorSnapshot) || !strings.Contains(stderr, res.RecoveryPoint) {
		t.Errorf("the snapshots are not printed: %q", stderr)
	}
	blobIs(t, "after sync", u, img)
	prior, rp2 := res.PriorSnapshot, res.RecoveryPoint
	// The prior state is the seeded image, readable as a source.
	back := filepath.Join(dir, "prior.img")
	blobRun(t, "seed", "--json", "-journal-dir", jdir, u+"?snapshot="+url.QueryEscape(prior), back)
	if got, _ := os.ReadFile(back); !bytes.Equal(got, seeded) {
		t.Error("the prior snapshot does not hold the state before the sync")
	}

	// Nothing to do: no prior snapshot (nothing written); no recovery
	// point with -snapshot=false.
	res, _ = blobRun(t, "sync", "--json", "-journal-dir", jdir, "-snapshot=false", path, u)
	if res.BytesWritten != 0 || res.PriorSnapshot != "" || res.RecoveryPoint != "" {
		t.Errorf("idle sync: wrote %d, prior %q, recovery point %q", res.BytesWritten, res.PriorSnapshot, res.RecoveryPoint)
	}

	so, se, code := blobCLI(t, "snapshots", "--json", u)
	if code != 0 {
		t.Fatalf("snapshots: exit %d: %s", code, se)
	}
	var list struct {
		Blob      string         `json:"blob"`
		Snapshots []snapshotJSON `json:"snapshots"`
	}
	if err := json.Unmarshal([]byte(so), &list); err != nil {
		t.Fatalf("snapshots --json: %q: %v", so, err)
	}
	var kinds, ids []string
	for _, x := range list.Snapshots {
		kinds = append(kinds, x.Kind)
		ids = append(ids, x.ID)
		if x.Size != size || x.Time.IsZero() {
			t.Errorf("snapshot %+v", x)
		}
	}
	if strings.Join(kinds, ",") != "recovery-point,prior,recovery-point" || strings.Join(ids, ",") != rp1+","+prior+","+rp2 {
		t.Errorf("snapshots %v of kinds %v", ids, kinds)
	}
	so, _, code = blobCLI(t, "snapshots", u)
	if code != 0 || !strings.Contains(so, "recovery-point") || !strings.Contains(so, rp1) {
		t.Errorf("snapshots: exit %d:\n%s", code, so)
	}
}

// A blob as the source (into a file and into another blob, which on
// Azurite falls back from Put Page From URL to reading and writing),
// SAS URLs that are never printed, and the errors of bad input.
func TestBlobSourcesSASAndErrors(t *testing.T) {
	s := startAzurite(t)
	dir := t.TempDir()
	jdir := filepath.Join(dir, "journals")
	r := rand.New(rand.NewPCG(3, 4))
	img, _ := blobImage(r, 4<<20)
	path := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	// A SAS for the target: racwd on this blob only.
	q, err := azurite.BlobSAS(blobContainer, "sas.img", "racwd", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sasURL := s.BlobURL(blobContainer, "sas.img") + "?" + q
	sig := ""
	for _, kv := range strings.Split(q, "&") {
		if v, ok := strings.CutPrefix(kv, "sig="); ok {
			sig = v
		}
	}
	res, se := blobRun(t, "seed", "--json", "-journal-dir", jdir, path, sasURL)
	out, _ := json.Marshal(res)
	if sig == "" || strings.Contains(string(out), sig) || strings.Contains(se, sig) {
		t.Fatalf("the SAS signature was printed: %s %s", out, se)
	}
	if !strings.Contains(res.Target, "sig=REDACTED") {
		t.Errorf("target shown as %q", res.Target)
	}
	blobIs(t, "seeded with a SAS", s.BlobURL(blobContainer, "sas.img"), img)
	// A SAS for one blob cannot list its snapshots: the error says why.
	so, se, code := blobCLI(t, "snapshots", sasURL)
	if code != 2 || !strings.Contains(se, "list permission") || strings.Contains(so+se, sig) {
		t.Errorf("snapshots with a blob SAS: exit %d: %s%s", code, so, se)
	}

	// Blob to file, and blob to blob.
	back := filepath.Join(dir, "back.img")
	blobRun(t, "seed", "--json", "-journal-dir", jdir, sasURL, back)
	if got, _ := os.ReadFile(back); !bytes.Equal(got, img) {
		t.Error("blob to file: differs")
	}
	other := s.BlobURL(blobContainer, "copy.img")
	blobRun(t, "seed", "--json", "-journal-dir", jdir, sasURL, other)
	blobIs(t, "blob to blob", other, img)

	// A source that is not whole 512-byte pages is refused before
	// anything is created.
	odd := filepath.Join(dir, "odd.img")
	if err := os.WriteFile(odd, img[:4<<20-100], 0o644); err != nil {
		t.Fatal(err)
	}
	oddURL := s.BlobURL(blobContainer, "odd.img")
	_, se, code = blobCLI(t, "seed", "-journal-dir", jdir, odd, oddURL)
	if code != 2 || !strings.Contains(se, "not a multiple of 512") {
		t.Errorf("odd-sized source: exit %d: %s", code, se)
	}
	if _, status := blobGet(t, oddURL); status != http.StatusNotFound {
		t.Errorf("the refused seed left a blob (HTTP %d)", status)
	}
	// sync wants a blob that exists.
	_, se, code = blobCLI(t, "sync", "-journal-dir", jdir, path, s.BlobURL(blobContainer, "missing.img"))
	if code != 2 || !strings.Contains(se, "deltasync seed") {
		t.Errorf("sync to a missing blob: exit %d: %s", code, se)
	}
	// Plain http is for loopback emulators only.
	_, se, code = blobCLI(t, "seed", path, "http://example.com/c/b")
	if code != 2 || !strings.Contains(se, "loopback") {
		t.Errorf("http URL: exit %d: %s", code, se)
	}

	// -vhd: the blob holds the disk then a fixed VHD footer.
	vhdURL := s.BlobURL(blobContainer, "disk.vhd")
	res, _ = blobRun(t, "seed", "--json", "-vhd", "-journal-dir", jdir, path, vhdURL)
	got, _ := blobGet(t, vhdURL)
	if len(got) != len(img)+512 || !bytes.Equal(got[:len(img)], img) || string(got[len(img):len(img)+8]) != "conectix" {
		t.Fatalf("-vhd: blob of %d bytes, footer %q", len(got), got[len(img):min(len(got), len(img)+8)])
	}
	// A VHD disk must be whole MiB.
	if err := os.WriteFile(odd, img[:3<<20+512], 0o644); err != nil {
		t.Fatal(err)
	}
	_, se, code = blobCLI(t, "seed", "-vhd", "-journal-dir", jdir, odd, s.BlobURL(blobContainer, "odd.vhd"))
	if code != 2 || !strings.Contains(se, "MiB") {
		t.Errorf("-vhd of 3 MiB + 512: exit %d: %s", code, se)
	}
}

// listSnapshotsRaw lists a blob's snapshots with Azure's own List Blobs
// call (include=snapshots,metadata), not through deltasync: each
// snapshot's id and its deltasync kind metadata, if any.
func listSnapshotsRaw(t *testing.T, s *azurite.Server, container, name string) map[string]string {
	t.Helper()
	q, err := azurite.AccountSAS()
	if err != nil {
		t.Fatal(err)
	}
	u := s.BlobURL(container, "")
	u = strings.TrimSuffix(u, "/") + "?restype=container&comp=list&include=snapshots,metadata&prefix=" + url.QueryEscape(name) + "&" + q
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("x-ms-version", "2021-12-02")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Blobs []struct {
			Name     string `xml:"Name"`
			Snapshot string `xml:"Snapshot"`
			Metadata struct {
				Any []struct {
					XMLName xml.Name
					Value   string `xml:",chardata"`
				} `xml:",any"`
			} `xml:"Metadata"`
		} `xml:"Blobs>Blob"`
	}
	if err := xml.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("List Blobs: HTTP %d, %v", resp.StatusCode, err)
	}
	snaps := map[string]string{}
	for _, b := range out.Blobs {
		if b.Name != name || b.Snapshot == "" {
			continue
		}
		kind := ""
		for _, m := range b.Metadata.Any {
			if strings.Contains(strings.ToLower(m.XMLName.Local), "deltasync") {
				kind += m.XMLName.Local + "=" + m.Value + " "
			}
		}
		snaps[b.Snapshot] = kind
	}
	return snaps
}

// TestBlobSyncKeepLast: sync -snapshot -keep-last 2 keeps the two newest
// recovery points and the prior states, as Azure's own listing shows;
// -keep-* on a file target is refused before anything is written.
func TestBlobSyncKeepLast(t *testing.T) {
	s := startAzurite(t)
	dir := t.TempDir()
	jdir := filepath.Join(dir, "journals")
	r := rand.New(rand.NewPCG(5, 6))
	img, _ := blobImage(r, 4<<20)
	path := filepath.Join(dir, "disk.img")
	os.WriteFile(path, img, 0o644)
	u := s.BlobURL(blobContainer, "keep.img")
	var points []string
	var deleted []string
	for i := range 4 {
		img[i<<16] ^= 0xff // something to write each time
		os.WriteFile(path, img, 0o644)
		cmd := "sync"
		if i == 0 {
			cmd = "seed"
		}
		res, _ := blobRun(t, cmd, "--json", "-journal-dir", jdir, "-keep-last", "2", path, u)
		points = append(points, res.RecoveryPoint)
		deleted = append(deleted, res.DeletedRecoveryPoints...)
	}
	snaps := listSnapshotsRaw(t, s, blobContainer, "keep.img")
	for i, p := range points {
		_, kept := snaps[p]
		if kept != (i >= 2) {
			t.Errorf("recovery point %d (%s): kept %v, want %v; snapshots %v", i, p, kept, i >= 2, snaps)
		}
	}
	if len(deleted) != 2 || deleted[0] != points[0] || deleted[1] != points[1] {
		t.Errorf("deleted_recovery_points %v, want the two oldest %v", deleted, points[:2])
	}
	var priors int
	for id, kind := range snaps {
		if !slices.Contains(points, id) {
			priors++
			if !strings.Contains(kind, "prior") {
				t.Errorf("snapshot %s (%q) is neither a kept point nor a prior state", id, kind)
			}
		}
	}
	if priors != 3 { // one per sync that wrote to an existing blob
		t.Errorf("%d prior states kept, want 3: %v", priors, snaps)
	}
	blobIs(t, "after the syncs", u, img)

	tgt := filepath.Join(dir, "copy.img")
	_, se, code := blobCLI(t, "seed", "-journal-dir", jdir, "-keep-last", "2", path, tgt)
	if code != 2 || !strings.Contains(se, "-keep-") {
		t.Fatalf("-keep-last on a file target: exit %d: %s", code, se)
	}
	if _, err := os.Stat(tgt); err == nil {
		if b, _ := os.ReadFile(tgt); len(b) > 0 {
			t.Fatal("the refused run wrote the file target")
		}
	}
}
