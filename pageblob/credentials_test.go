package pageblob

// Tests of the credential edges: strict SAS parsing, the credential kind
// each way of authorising yields, no credential for another account, a
// failed DefaultAzureCredential in one line.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/internal/azurite"
)

// noSecrets fails the test if text shows any of the secrets.
func noSecrets(t *testing.T, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range append(secrets, azurite.Key, fakeSecret, "SECRETSIG") {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s shows a secret (%.12s...): %s", what, s, text)
		}
	}
}

// sigOf returns the sig= value of a SAS query string, as it is written
// there (%-escaped).
func sigOf(t *testing.T, q string) string {
	t.Helper()
	for _, kv := range strings.Split(q, "&") {
		if v, ok := strings.CutPrefix(kv, "sig="); ok && v != "" {
			if _, err := url.QueryUnescape(v); err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no sig in %q", q)
	return ""
}

// upperNames rewrites the field names of a query string in upper case
// (SIG=, SV=, ...), keeping the values exactly as they are.
func upperNames(q string) string {
	parts := strings.Split(q, "&")
	for i, p := range parts {
		k, v, _ := strings.Cut(p, "=")
		parts[i] = strings.ToUpper(k) + "=" + v
	}
	return strings.Join(parts, "&")
}

// A SAS that does not parse is an error, never dropped in favour of the
// connection string (or key, or sign-in) that the environment offers;
// SAS field names are case-insensitive.
func TestSASStrict(t *testing.T) {
	a, _ := newTarget(t, 1<<20)
	name := a.loc.Blob
	data := randBytes(512)
	if _, err := a.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sasq, err := azurite.BlobSAS(testContainer, name, "r", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sig := sigOf(t, sasq)
	base := az.BlobURL(testContainer, name)
	// The environment offers a working credential for this account: a run
	// that dropped the SAS would succeed with it.
	env := map[string]string{"AZURE_STORAGE_CONNECTION_STRING": az.ConnectionString()}
	withEnv := func() *Options {
		return &Options{Getenv: func(k string) string { return env[k] }, Retry: fastRetry()}
	}
	bad := map[string]string{
		"bad %-escape in sig":   strings.Replace(sasq, "sig=", "sig=%zz", 1),
		"bad %-escape in se":    strings.Replace(sasq, "se=", "se=%G1", 1),
		"semicolon":             sasq + ";x=1",
		"sig given twice":       sasq + "&sig=" + sig,
		"sig and SIG":           sasq + "&SIG=" + sig,
		"SAS fields and no sig": strings.Replace(sasq, "sig=", "nosig=", 1),
		"empty sig":             strings.Replace(sasq, "sig="+sig, "sig=", 1),
	}
	for what, q := range bad {
		for _, open := range []func(context.Context, string, *Options) (*Blob, error){Open, OpenTarget} {
			b, err := open(ctx, base+"?"+q, withEnv())
			if err == nil {
				t.Errorf("%s: opened with credential %v; want an error", what, b.Credential())
				b.Close()
				continue
			}
			if !errors.Is(err, ErrBadURL) {
				t.Errorf("%s: %v, want ErrBadURL", what, err)
			}
			noSecrets(t, what, err.Error(), sig)
		}
	}
	// Upper-case field names (SIG=, SV=, SE=, ...) are the same SAS.
	up := upperNames(sasq)
	if !strings.Contains(up, "SIG=") {
		t.Fatalf("upperNames(%q) = %q", sasq, up)
	}
	u, err := ParseURL(base + "?" + up)
	if err != nil || !u.HasSAS() {
		t.Fatalf("ParseURL with SIG=: %v, HasSAS %v", err, u.HasSAS())
	}
	o, rec := testOptions(t)
	o.Getenv = func(k string) string { return env[k] }
	b, err := Open(ctx, base+"?"+up, o)
	if err != nil {
		t.Fatalf("Open with upper-case SAS field names: %v", err)
	}
	defer b.Close()
	if c := b.Credential(); c.Kind != CredentialSAS || c.From != "the URL" {
		t.Errorf("credential %v, want sas from the URL", c)
	}
	p := make([]byte, 512)
	if _, err := b.ReadAt(p, 0); err != nil || !bytes.Equal(p, data) {
		t.Fatalf("ReadAt with upper-case SAS: %v", err)
	}
	for _, r := range rec.Requests() {
		if r.Query.Get("sig") == "" {
			t.Errorf("%s %s sent without the URL's SAS (lower-case sig=): %v", r.Method, r.Path, r.Query)
		}
	}
	// A connection string's SAS with upper-case names works too; one
	// that does not parse is an error.
	acct, _ := azurite.AccountSAS()
	cs := "BlobEndpoint=" + az.Endpoint + ";SharedAccessSignature=" + upperNames(acct)
	b2, err := Open(ctx, testContainer+"/"+name, &Options{Getenv: noEnv, ConnectionString: cs, Retry: fastRetry()})
	if err != nil {
		t.Fatalf("connection string with an upper-case SAS: %v", err)
	}
	if c := b2.Credential(); c.Kind != CredentialConnectionString {
		t.Errorf("credential %v, want connection-string", c)
	}
	b2.Close()
	_, err = Open(ctx, testContainer+"/"+name, &Options{Getenv: noEnv, ConnectionString: "BlobEndpoint=" + az.Endpoint + ";SharedAccessSignature=sv=1&sig=%zz"})
	if !errors.Is(err, ErrNoCredential) {
		t.Errorf("connection string with a SAS that does not parse: %v", err)
	}
}

// Each way of authorising reports its kind, and where it came from.
func TestCredentialKinds(t *testing.T) {
	a, _ := newTarget(t, 1<<20)
	name := a.loc.Blob
	base := az.BlobURL(testContainer, name)
	sasq, _ := azurite.BlobSAS(testContainer, name, "r", time.Hour)
	ctx := context.Background()
	envOf := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	cases := []struct {
		what, loc string
		o         Options
		want      Credential
	}{
		{"URL SAS", base + "?" + sasq, Options{}, Credential{CredentialSAS, "the URL"}},
		{"RefreshSAS", base, Options{RefreshSAS: func(context.Context) (string, error) { return base + "?" + sasq, nil }}, Credential{CredentialSAS, "Options.RefreshSAS"}},
		{"Options.AccountKey", base, Options{AccountKey: azurite.Key}, Credential{CredentialSharedKey, "Options.AccountKey"}},
		{"AZURE_STORAGE_KEY", base, Options{Getenv: envOf("AZURE_STORAGE_ACCOUNT", azurite.Account, "AZURE_STORAGE_KEY", azurite.Key)}, Credential{CredentialSharedKey, "AZURE_STORAGE_KEY"}},
		{"Options.ConnectionString", testContainer + "/" + name, Options{ConnectionString: az.ConnectionString()}, Credential{CredentialConnectionString, "Options.ConnectionString"}},
		{"AZURE_STORAGE_CONNECTION_STRING", testContainer + "/" + name, Options{Getenv: envOf("AZURE_STORAGE_CONNECTION_STRING", az.ConnectionString())}, Credential{CredentialConnectionString, "AZURE_STORAGE_CONNECTION_STRING"}},
		{"development key", base, Options{}, Credential{CredentialEmulator, "the development key"}},
	}
	for _, c := range cases {
		o := c.o
		if o.Getenv == nil {
			o.Getenv = noEnv
		}
		o.Retry = fastRetry()
		b, err := Open(ctx, c.loc, &o)
		if err != nil {
			t.Errorf("%s: %v", c.what, err)
			continue
		}
		if got := b.Credential(); got != c.want {
			t.Errorf("%s: credential %v, want %v", c.what, got, c.want)
		}
		noSecrets(t, c.what, b.Credential().String(), sigOf(t, sasq))
		b.Close()
	}
	// Azure AD: resolved without sending anything.
	_, au, err := resolve(ctx, "https://acct.blob.core.windows.net/c/b", &Options{Getenv: noEnv, Credential: tokenCred{}})
	if err != nil || au.cred != (Credential{CredentialAzureAD, "Options.Credential"}) {
		t.Errorf("Options.Credential: %v, %v", au, err)
	}
	_, au, err = resolve(ctx, "https://acct.blob.core.windows.net/c/b", &Options{Getenv: noEnv})
	if err != nil || au.cred != (Credential{CredentialAzureAD, "DefaultAzureCredential"}) {
		t.Errorf("no credential at all: %v, %v", au, err)
	}
}

// A connection string or account key of another account is never used
// for a URL, and never makes the URL fall through to another way of
// signing in: the URL has no credential, and the error says what to do.
func TestOtherAccountHasNoCredential(t *testing.T) {
	ctx := context.Background()
	const key = "S0VZU0VDUkVULWtleXNlY3JldC1rZXlzZWNyZXQ="
	cs := "DefaultEndpointsProtocol=https;AccountName=otheracct;AccountKey=" + key + ";EndpointSuffix=core.windows.net"
	cases := []struct {
		what string
		env  map[string]string
		o    Options
	}{
		{"AZURE_STORAGE_CONNECTION_STRING", map[string]string{"AZURE_STORAGE_CONNECTION_STRING": cs}, Options{}},
		{"Options.ConnectionString", nil, Options{ConnectionString: cs}},
		{"AZURE_STORAGE_KEY", map[string]string{"AZURE_STORAGE_ACCOUNT": "otheracct", "AZURE_STORAGE_KEY": key}, Options{}},
	}
	for _, c := range cases {
		o := c.o
		o.Getenv = func(k string) string { return c.env[k] }
		start := time.Now()
		_, au, err := resolve(ctx, "https://myacct.blob.core.windows.net/disks/vm.vhd", &o)
		if err == nil {
			t.Errorf("%s: for another account, resolved to %v; want ErrNoCredential", c.what, au.cred)
			continue
		}
		if !errors.Is(err, ErrNoCredential) {
			t.Errorf("%s: %v, want ErrNoCredential", c.what, err)
		}
		msg := err.Error()
		for _, w := range []string{"otheracct", "myacct", "SAS"} {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: %q does not say %q", c.what, msg, w)
			}
		}
		noSecrets(t, c.what, msg, key)
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s: took %v", c.what, d)
		}
	}
	// The matching account still works, and a SAS on the URL is used
	// whatever the environment says.
	env := map[string]string{"AZURE_STORAGE_CONNECTION_STRING": cs}
	_, au, err := resolve(ctx, "https://otheracct.blob.core.windows.net/disks/vm.vhd", &Options{Getenv: func(k string) string { return env[k] }})
	if err != nil || au.cred.Kind != CredentialConnectionString {
		t.Errorf("the connection string's own account: %v, %v", au, err)
	}
	_, au, err = resolve(ctx, "https://myacct.blob.core.windows.net/disks/vm.vhd?"+fakeSAS, &Options{Getenv: func(k string) string { return env[k] }})
	if err != nil || au.cred.Kind != CredentialSAS {
		t.Errorf("a SAS on the URL: %v, %v", au, err)
	}
}

// A DefaultAzureCredential that finds no sign-in fails with one line that
// lists the ways to authenticate (azidentity's own report is a dozen
// lines). The environment is made to have no sign-in at all: no
// AZURE_* variables, no az or azd on the PATH, a managed identity
// endpoint that answers that there is none.
func TestDefaultCredentialFailure(t *testing.T) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "AZURE_") || strings.HasPrefix(k, "MSI_") || strings.HasPrefix(k, "IDENTITY_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	t.Setenv("PATH", t.TempDir())
	// A managed identity endpoint (App Service's variables) that answers
	// at once that there is no identity, so that the test does not wait
	// for the instance metadata service of a machine that is not in Azure.
	msi := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"statusCode":400,"message":"No managed identity found"}`)
	}))
	defer msi.Close()
	t.Setenv("IDENTITY_ENDPOINT", msi.URL+"/msi/token")
	t.Setenv("IDENTITY_HEADER", "x")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	_, err := Open(ctx, "https://acct.blob.core.invalid/disks/vm.vhd", &Options{Getenv: noEnv})
	took := time.Since(start)
	if err == nil {
		t.Fatal("opened without any credential")
	}
	msg := err.Error()
	t.Logf("%v: %s", took, msg)
	if !errors.Is(err, ErrNoCredential) {
		t.Errorf("%v, want ErrNoCredential", err)
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("the error is %d lines, want one:\n%s", strings.Count(msg, "\n")+1, msg)
	}
	for _, w := range []string{"SAS", "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_KEY", "az login"} {
		if !strings.Contains(msg, w) {
			t.Errorf("the error does not mention %s: %s", w, msg)
		}
	}
	if took > 5*time.Second {
		t.Errorf("took %v", took)
	}
}
