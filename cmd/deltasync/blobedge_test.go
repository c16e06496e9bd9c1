//go:build linux

package main

// End-to-end tests of the credential and service edges of page blob
// sides: CONTAINER/BLOB with a connection string, a container created
// for a new target, the credential kind of each side in the summary and
// --json, a SAS that does not parse, a connection string of another
// account, Azurite's 500 for a server-side copy under a SAS, and hosts
// that cannot be reached. No secret is ever printed.

import (
	"bytes"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/internal/azurite"
)

// edgeCLI runs the binary in the directory wd with no Azure variables but
// those of env, and times it.
func edgeCLI(t *testing.T, wd string, env []string, args ...string) (stdout, stderr string, code int, took time.Duration) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = wd
	var e []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AZURE_") {
			e = append(e, kv)
		}
	}
	cmd.Env = append(append(e, "XDG_STATE_HOME="+t.TempDir()), env...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	start := time.Now()
	err := cmd.Run()
	took = time.Since(start)
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(se.String(), "panic:") {
		t.Fatalf("deltasync %s panicked:\n%s", strings.Join(args, " "), se.String())
	}
	return so.String(), se.String(), code, took
}

// sasSig returns the sig= field of a SAS query string as written there.
func sasSig(t *testing.T, q string) string {
	t.Helper()
	for _, kv := range strings.Split(q, "&") {
		if v, ok := strings.CutPrefix(kv, "sig="); ok && v != "" {
			return v
		}
	}
	t.Fatalf("no sig in %q", q)
	return ""
}

func TestBlobCredentialEdges(t *testing.T) {
	s := startAzurite(t)
	dir := t.TempDir()
	jdir := filepath.Join(dir, "journals")
	r := rand.New(rand.NewPCG(5, 6))
	img, _ := blobImage(r, 4<<20)
	path := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	connEnv := []string{"AZURE_STORAGE_CONNECTION_STRING=" + s.ConnectionString()}
	var secrets []string
	var outputs []string
	run := func(env []string, args ...string) (string, string, int, time.Duration) {
		t.Helper()
		so, se, code, took := edgeCLI(t, dir, env, args...)
		outputs = append(outputs, so+se) // not the arguments, which hold the SAS
		return so, se, code, took
	}
	runJSON := func(env []string, args ...string) (result, string) {
		t.Helper()
		so, se, code, _ := run(env, args...)
		if code != 0 {
			t.Fatalf("deltasync %s: exit %d\n%s", strings.Join(args, " "), code, se)
		}
		var res result
		if err := json.Unmarshal([]byte(so), &res); err != nil {
			t.Fatalf("deltasync %s: output %q: %v", strings.Join(args, " "), so, err)
		}
		return res, se
	}
	// The runs' working directory, dir, holds no file named like the
	// container, so that CONTAINER/BLOB is a blob.

	// CONTAINER/BLOB with a connection string, into a container that does
	// not exist: created, as AzCopy does.
	res, se := runJSON(connEnv, "seed", "--json", "-journal-dir", jdir, path, "newcont/disk.img")
	blobIs(t, "CONTAINER/BLOB into a new container", s.BlobURL("newcont", "disk.img"), img)
	if res.TargetCredential != "connection-string" || res.SourceCredential != "" {
		t.Errorf("credentials in --json: source %q, target %q; want none and connection-string", res.SourceCredential, res.TargetCredential)
	}
	if !strings.Contains(se, "target credential connection-string") {
		t.Errorf("the summary does not name the target's credential: %s", se)
	}
	if _, err := os.Stat(filepath.Join(dir, "newcont")); err == nil {
		t.Error("a local directory newcont was made")
	}

	// A blob with a SAS as the source, CONTAINER/BLOB as the target.
	srcName := "src.img"
	blobRun(t, "seed", "--json", "-journal-dir", jdir, path, s.BlobURL(blobContainer, srcName))
	sq, err := azurite.BlobSAS(blobContainer, srcName, "r", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, sasSig(t, sq))
	srcSAS := s.BlobURL(blobContainer, srcName) + "?" + sq
	res, se = runJSON(connEnv, "sync", "--json", "-journal-dir", jdir, srcSAS, "newcont/disk.img")
	if res.SourceCredential != "sas" || res.TargetCredential != "connection-string" {
		t.Errorf("credentials: source %q, target %q; want sas and connection-string", res.SourceCredential, res.TargetCredential)
	}
	if !strings.Contains(se, "source credential sas, target credential connection-string") {
		t.Errorf("summary: %s", se)
	}

	// Blob to blob with a SAS on both: Azurite answers Put Page From URL
	// with 500; the run falls back to reading and writing, and says why.
	dq, _ := azurite.BlobSAS(blobContainer, "copy.img", "racwd", time.Hour)
	secrets = append(secrets, sasSig(t, dq))
	dstSAS := s.BlobURL(blobContainer, "copy.img") + "?" + dq
	res, se = runJSON(nil, "seed", "--json", "-journal-dir", jdir, srcSAS, dstSAS)
	blobIs(t, "blob to blob under SAS", s.BlobURL(blobContainer, "copy.img"), img)
	if !strings.Contains(res.CopyFallback, "500") || !strings.Contains(se, "no server-side copy") {
		t.Errorf("copy fallback %q; stderr %s", res.CopyFallback, se)
	}
	if res.SourceCredential != "sas" || res.TargetCredential != "sas" {
		t.Errorf("credentials: source %q, target %q", res.SourceCredential, res.TargetCredential)
	}

	// Upper-case SAS field names are the same SAS.
	uq, _ := azurite.BlobSAS(blobContainer, "upper.img", "racwd", time.Hour)
	secrets = append(secrets, sasSig(t, uq))
	var up []string
	for _, kv := range strings.Split(uq, "&") {
		k, v, _ := strings.Cut(kv, "=")
		up = append(up, strings.ToUpper(k)+"="+v)
	}
	res, _ = runJSON(connEnv, "seed", "--json", "-journal-dir", jdir, path, s.BlobURL(blobContainer, "upper.img")+"?"+strings.Join(up, "&"))
	if res.TargetCredential != "sas" {
		t.Errorf("SIG=: target credential %q, want sas", res.TargetCredential)
	}
	blobIs(t, "SIG=", s.BlobURL(blobContainer, "upper.img"), img)

	// A SAS that does not parse is an error naming the side, though the
	// connection string would work.
	bq, _ := azurite.BlobSAS(blobContainer, "bad.img", "racwd", time.Hour)
	secrets = append(secrets, sasSig(t, bq))
	badSAS := s.BlobURL(blobContainer, "bad.img") + "?" + strings.Replace(bq, "sig=", "sig=%zz", 1)
	_, se, code, _ := run(connEnv, "seed", "-journal-dir", jdir, path, badSAS)
	if code != 2 || !strings.Contains(se, "target: ") || !strings.Contains(se, "does not parse") {
		t.Errorf("target with a SAS that does not parse: exit %d: %s", code, se)
	}
	if _, status := blobGet(t, s.BlobURL(blobContainer, "bad.img")); status != 404 {
		t.Errorf("the refused seed wrote the blob (HTTP %d)", status)
	}
	_, se, code, _ = run(connEnv, "seed", "-journal-dir", jdir, strings.Replace(srcSAS, "sig=", "SIG=%zz", 1), filepath.Join(dir, "out.img"))
	if code != 2 || !strings.Contains(se, "source: ") || !strings.Contains(se, "does not parse") {
		t.Errorf("source with a SAS that does not parse: exit %d: %s", code, se)
	}

	// A connection string of another account is not used, and nothing
	// else is tried: the side has no credential, and the run says so.
	_, se, code, took := run(connEnv, "seed", "-journal-dir", jdir, path, "https://otheracct.blob.core.windows.net/disks/disk.img")
	if code != 2 || !strings.Contains(se, "target: ") || !strings.Contains(se, "otheracct") || !strings.Contains(se, azurite.Account) || strings.Count(se, "\n") != 1 {
		t.Errorf("target in another account: exit %d after %v: %s", code, took, se)
	}

	// No credential at all, and no Azure AD sign-in (no AZURE_*
	// variables, no az on the PATH, a managed identity endpoint that
	// says there is none): one line that says how to authenticate.
	msi := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"statusCode":400,"message":"No managed identity found"}`)
	}))
	defer msi.Close()
	noSignIn := []string{"PATH=" + t.TempDir(), "IDENTITY_ENDPOINT=" + msi.URL + "/msi/token", "IDENTITY_HEADER=x"}
	_, se, code, _ = run(noSignIn, "seed", "-journal-dir", jdir, path, "https://acct.blob.core.invalid/disks/disk.img")
	if code != 2 || !strings.HasPrefix(se, "deltasync: target: ") || strings.Count(se, "\n") != 1 ||
		!strings.Contains(se, "AZURE_STORAGE_CONNECTION_STRING") || !strings.Contains(se, "az login") {
		t.Errorf("no credential and no sign-in: exit %d: %s", code, se)
	}

	// A container that does not exist, with a SAS that may not create it.
	nq, _ := azurite.BlobSAS("nocont", "x.img", "racwd", time.Hour)
	secrets = append(secrets, sasSig(t, nq))
	_, se, code, _ = run(nil, "seed", "-journal-dir", jdir, path, s.BlobURL("nocont", "x.img")+"?"+nq)
	if code != 2 || !strings.Contains(se, "target: ") || !strings.Contains(se, `container "nocont"`) {
		t.Errorf("missing container under a blob SAS: exit %d: %s", code, se)
	}

	// Hosts that cannot be reached fail at once, naming the side and the
	// host.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	const fake = "sv=2021-12-02&sr=b&sp=racwd&sig=SECRETSIG"
	secrets = append(secrets, "SECRETSIG")
	for _, c := range []struct {
		side, host string
		args       []string
	}{
		{"target", "nosuchhost.invalid", []string{path, "https://nosuchhost.invalid/disks/disk.img?" + fake}},
		{"source", "nosuchhost.invalid", []string{"https://nosuchhost.invalid/disks/disk.img?" + fake, filepath.Join(dir, "out.img")}},
		{"target", closed, []string{path, "http://" + closed + "/devstoreaccount1/disks/disk.img"}},
	} {
		_, se, code, took := run(nil, append([]string{"seed", "-journal-dir", jdir}, c.args...)...)
		t.Logf("%s %s: exit %d after %v: %s", c.side, c.host, code, took, strings.TrimSpace(se))
		if code != 2 || !strings.Contains(se, c.side+": ") || !strings.Contains(se, c.host) {
			t.Errorf("%s unreachable: exit %d: %s", c.side, code, se)
		}
		if took > 2*time.Second {
			t.Errorf("%s %s: failed after %v, want under 2 s", c.side, c.host, took)
		}
	}

	// No secret in anything printed.
	secrets = append(secrets, azurite.Key)
	for _, out := range outputs {
		for _, sec := range secrets {
			if strings.Contains(out, sec) {
				t.Errorf("a secret (%.8s...) was printed:\n%s", sec, out)
			}
		}
	}
}
