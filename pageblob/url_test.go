package pageblob

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/internal/azurite"
)

func TestParseURL(t *testing.T) {
	cases := []struct {
		in                       string
		kind                     HostKind
		account, container, blob string
		snapshot                 string
		sas                      bool
		str, identity            string
	}{
		{
			in: "https://acct.blob.core.windows.net/disks/vm1.vhd", kind: Storage,
			account: "acct", container: "disks", blob: "vm1.vhd",
			str: "https://acct.blob.core.windows.net/disks/vm1.vhd", identity: "pageblob://acct.blob.core.windows.net/disks/vm1.vhd",
		},
		{
			in: "https://acct.blob.core.windows.net/disks/dir/vm%201.vhd?snapshot=2026-01-02T03:04:05.0000000Z&sv=2021-12-02&sig=SECRET", kind: Storage,
			account: "acct", container: "disks", blob: "dir/vm 1.vhd", snapshot: "2026-01-02T03:04:05.0000000Z", sas: true,
			str:      "https://acct.blob.core.windows.net/disks/dir/vm%201.vhd?snapshot=2026-01-02T03%3A04%3A05.0000000Z",
			identity: "pageblob://acct.blob.core.windows.net/disks/dir/vm%201.vhd@2026-01-02T03:04:05.0000000Z",
		},
		{
			in: "https://md-impexp-t0abc.z22.blob.storage.azure.net/xyzw/abcd?sv=2018-03-28&sr=b&si=x&sig=SECRET", kind: ManagedDisk,
			account: "md-impexp-t0abc", container: "xyzw", blob: "abcd", sas: true,
			str: "https://md-impexp-t0abc.z22.blob.storage.azure.net/xyzw/abcd", identity: "pageblob://md-impexp-t0abc.z22.blob.storage.azure.net/xyzw/abcd",
		},
		{
			in: "http://127.0.0.1:10000/devstoreaccount1/c/b", kind: Emulator,
			account: "devstoreaccount1", container: "c", blob: "b",
			str: "http://127.0.0.1:10000/devstoreaccount1/c/b", identity: "pageblob://127.0.0.1:10000/devstoreaccount1/c/b",
		},
		{
			in: "https://acct.blob.core.chinacloudapi.cn/c/b", kind: Storage, account: "acct", container: "c", blob: "b",
			str: "https://acct.blob.core.chinacloudapi.cn/c/b", identity: "pageblob://acct.blob.core.chinacloudapi.cn/c/b",
		},
	}
	for _, c := range cases {
		u, err := ParseURL(c.in)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", c.in, err)
			continue
		}
		if u.Kind != c.kind || u.Account != c.account || u.Container != c.container || u.Blob != c.blob || u.Snapshot != c.snapshot || u.HasSAS() != c.sas {
			t.Errorf("ParseURL(%q) = %+v", c.in, u)
		}
		if u.String() != c.str {
			t.Errorf("String() = %q, want %q", u.String(), c.str)
		}
		if u.Identity() != c.identity {
			t.Errorf("Identity() = %q, want %q", u.Identity(), c.identity)
		}
		if strings.Contains(u.String()+u.Identity(), "SECRET") {
			t.Errorf("secret shown by %q", c.in)
		}
	}
	for _, bad := range []string{
		"http://acct.blob.core.windows.net/c/b",     // plain http off loopback
		"https://acct.blob.core.windows.net/c",      // no blob
		"https://acct.blob.core.windows.net/c/",     // empty blob
		"http://127.0.0.1:10000/devstoreaccount1/c", // emulator without blob
		"ftp://acct.blob.core.windows.net/c/b",
		"https://user:pw@acct.blob.core.windows.net/c/b",
		"https://acct.blob.core.windows.net/c/b?versionid=1&sig=SECRET",
		"://nope?sig=SECRET",
	} {
		_, err := ParseURL(bad)
		if !errors.Is(err, ErrBadURL) {
			t.Errorf("ParseURL(%q) = %v, want ErrBadURL", bad, err)
		}
		if err != nil && strings.Contains(err.Error(), "SECRET") {
			t.Errorf("secret in %q", err)
		}
	}
}

func TestRedact(t *testing.T) {
	cases := map[string]string{
		"https://a.blob.core.windows.net/c/b?sv=2021&se=2099&sp=r&sig=abc%2Bdef":  "https://a.blob.core.windows.net/c/b?se=REDACTED&sig=REDACTED&sp=REDACTED&sv=REDACTED",
		"https://a.blob.core.windows.net/c/b?snapshot=2026-01-01T00:00:00Z&sig=x": "https://a.blob.core.windows.net/c/b?sig=REDACTED&snapshot=2026-01-01T00%3A00%3A00Z",
		"https://a.blob.core.windows.net/c/b":                                     "https://a.blob.core.windows.net/c/b",
		"https://a.blob.core.windows.net/c/b?comp=page&skoid=oid&sig=x":           "https://a.blob.core.windows.net/c/b?comp=page&sig=REDACTED&skoid=REDACTED",
		"%zz/c/b?sig=SECRET&x=1":                                                  "%zz/c/b?REDACTED",
		"https://a.blob.core.windows.net/c/b?unknownfield=maybe-secret":           "https://a.blob.core.windows.net/c/b?unknownfield=REDACTED",
	}
	for in, want := range cases {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
	text := `Put "https://a/c/b?sv=1&sig=SECRET&se=2": dial; AccountKey=KEYSECRET; Authorization: SharedKey acct:SIGSECRET`
	if s := scrub(text); strings.Contains(s, "SECRET") {
		t.Errorf("scrub left a secret: %q", s)
	}
}

// No error ever shows a SAS signature or an account key: not Azure's
// refusals, not transport errors (net/http prints URLs with their query),
// not credential errors.
func TestErrorsHideSecrets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	secrets := []string{fakeSecret, "c2VjcmV0LXNpZ25hdHVyZS1kby1ub3Qtc2hvdw", azurite.Key, "KEYSECRET", "SIGSECRET"}
	var errs []error
	add := func(what string, err error) {
		if err == nil {
			t.Errorf("%s: no error", what)
			return
		}
		errs = append(errs, err)
	}
	f := newFakeAzure(t)
	_, err := Open(ctx, f.srv.URL+"/fakeaccount/disks/forbidden.vhd?"+fakeSAS, &Options{Getenv: noEnv, Retry: fastRetry()})
	if !errors.Is(err, ErrAuth) {
		t.Errorf("403: %v, want ErrAuth", err)
	}
	add("403", err)
	// Nothing listens on port 1: a transport error with the URL in it.
	_, err = Open(ctx, "http://127.0.0.1:1/fakeaccount/disks/vm1.vhd?"+fakeSAS, &Options{Getenv: noEnv, Retry: fastRetry()})
	add("transport", err)
	// A wrong key (valid base64) against Azurite, and a key that is not
	// base64 at all.
	wrongKey := "S0VZU0VDUkVULWtleXNlY3JldC1rZXlzZWNyZXQ="
	secrets = append(secrets, wrongKey)
	_, err = Open(ctx, az.BlobURL(testContainer, "x"), &Options{Getenv: noEnv, AccountKey: wrongKey, Retry: fastRetry()})
	add("wrong key", err)
	_, err = Open(ctx, az.BlobURL(testContainer, "x"), &Options{Getenv: noEnv, AccountKey: "KEYSECRET!!", Retry: fastRetry()})
	add("bad key", err)
	_, err = Open(ctx, "c/b", &Options{Getenv: noEnv, ConnectionString: "AccountName=a;AccountKey=KEYSECRET;Garbage"})
	add("bad connection string", err)
	// A refresher that fails with a message quoting a SAS.
	_, err = Open(ctx, "https://acct.blob.core.windows.net/c/b", &Options{Getenv: noEnv, RefreshSAS: func(context.Context) (string, error) {
		return "", errors.New("vault said no to https://acct.blob.core.windows.net/c/b?sig=" + fakeSecret)
	}})
	add("refresher", err)
	for _, err := range errs {
		msg := err.Error()
		for _, s := range secrets {
			if strings.Contains(msg, s) {
				t.Errorf("error shows a secret: %q", msg)
			}
		}
		t.Logf("%s", msg)
	}
}

// TestIdentityOneBlobTwoURLs: the host's case, a default port and a SAS
// do not make another disk of one blob.
func TestIdentityOneBlobTwoURLs(t *testing.T) {
	a, err := ParseURL("https://acct.blob.core.windows.net/c/disk.vhd")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		"https://ACCT.Blob.Core.Windows.NET/c/disk.vhd",
		"https://acct.blob.core.windows.net:443/c/disk.vhd",
		"https://acct.blob.core.windows.net/c/disk.vhd?sv=2022-11-02&sr=b&sp=r&sig=abc",
	} {
		b, err := ParseURL(s)
		if err != nil {
			t.Fatal(err)
		}
		if a.Identity() != b.Identity() {
			t.Errorf("%s: identity %q, want %q", b, b.Identity(), a.Identity())
		}
	}
}
