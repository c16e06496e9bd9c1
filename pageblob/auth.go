package pageblob

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/pageblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
)

// emulatorKey is the documented, public key of the emulators' development
// account devstoreaccount1. It grants nothing on Azure.
const (
	emulatorAccount = "devstoreaccount1"
	emulatorKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
	// rawAPIVersion is the x-ms-version of the requests this package
	// builds itself (lease, list): old enough for every emulator, new
	// enough for Azure AD tokens.
	rawAPIVersion = "2021-12-02"
	storageScope  = "https://storage.azure.com/.default"
)

type authKind uint8

const (
	authSAS authKind = iota + 1
	authKey
	authToken
)

// auth is how the requests of one Blob (and its snapshots) are authorised.
type auth struct {
	kind  authKind
	key   *blob.SharedKeyCredential
	token azcore.TokenCredential
	sas   *sasSource
	cred  Credential // what it is, for Blob.Credential
}

// connString is a parsed storage connection string.
type connString struct {
	account, key, sas, endpoint string
}

func parseConnectionString(s string) (connString, error) {
	kv := map[string]string{}
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return connString{}, fmt.Errorf("%w: connection string has a field without '='", ErrNoCredential)
		}
		kv[strings.ToLower(k)] = v
	}
	c := connString{account: kv["accountname"], key: kv["accountkey"], sas: strings.TrimPrefix(kv["sharedaccesssignature"], "?")}
	if strings.EqualFold(kv["usedevelopmentstorage"], "true") {
		c.account, c.key = emulatorAccount, emulatorKey
		c.endpoint = "http://127.0.0.1:10000/" + emulatorAccount
	}
	if ep := kv["blobendpoint"]; ep != "" {
		c.endpoint = strings.TrimSuffix(ep, "/")
	} else if c.endpoint == "" {
		if c.account == "" {
			return connString{}, fmt.Errorf("%w: connection string has neither AccountName nor BlobEndpoint", ErrNoCredential)
		}
		proto := kv["defaultendpointsprotocol"]
		if proto == "" {
			proto = "https"
		}
		suffix := kv["endpointsuffix"]
		if suffix == "" {
			suffix = "core.windows.net"
		}
		c.endpoint = proto + "://" + c.account + ".blob." + suffix
	}
	if c.account == "" {
		if loc, err := ParseURL(c.endpoint + "/c/b"); err == nil {
			c.account = loc.Account
		}
	}
	if c.key == "" && c.sas == "" {
		return connString{}, fmt.Errorf("%w: connection string has neither AccountKey nor SharedAccessSignature", ErrNoCredential)
	}
	return c, nil
}

// CredentialKind names the kind of credential that authorises a Blob's
// requests.
type CredentialKind string

const (
	// CredentialSAS: a shared access signature, from the URL or from
	// Options.RefreshSAS.
	CredentialSAS CredentialKind = "sas"
	// CredentialSharedKey: an account key, from Options.AccountKey or
	// AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY.
	CredentialSharedKey CredentialKind = "shared-key"
	// CredentialConnectionString: the key or SAS of a connection string
	// (Options.ConnectionString or AZURE_STORAGE_CONNECTION_STRING) for
	// the URL's account.
	CredentialConnectionString CredentialKind = "connection-string"
	// CredentialAzureAD: an Azure AD token, from Options.Credential or
	// azidentity.DefaultAzureCredential.
	CredentialAzureAD CredentialKind = "azure-ad"
	// CredentialEmulator: the emulators' public development key, for
	// devstoreaccount1 on a loopback emulator.
	CredentialEmulator CredentialKind = "emulator"
)

// Credential says which credential authorises a Blob's requests and
// where it was found. It never holds the secret.
type Credential struct {
	Kind CredentialKind
	// From says where the credential came from: "the URL",
	// "Options.RefreshSAS", "Options.Credential", "Options.AccountKey",
	// "Options.ConnectionString", "AZURE_STORAGE_CONNECTION_STRING",
	// "AZURE_STORAGE_KEY", "the development key" or
	// "DefaultAzureCredential".
	From string
}

func (c Credential) String() string { return string(c.Kind) + " (" + c.From + ")" }

// Credential returns the kind of credential that authorises this Blob's
// requests, and where it was found (never the secret).
func (b *Blob) Credential() Credential { return b.cl.auth.cred }

// howToAuthenticate ends the errors that find no credential.
const howToAuthenticate = "authenticate with a SAS in the URL, AZURE_STORAGE_CONNECTION_STRING, " +
	"AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY, or an Azure AD sign-in (az login, a managed identity, " +
	"or AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET)"

// env is what a location and its credential are resolved from, besides
// the location itself.
type env struct {
	cs                 *connString
	csFrom             string // where the connection string came from
	envAccount, envKey string
}

func readEnv(o *Options) (env, error) {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	e := env{csFrom: "Options.ConnectionString"}
	connStr := o.ConnectionString
	if connStr == "" {
		connStr, e.csFrom = getenv("AZURE_STORAGE_CONNECTION_STRING"), "AZURE_STORAGE_CONNECTION_STRING"
	}
	if connStr != "" {
		c, err := parseConnectionString(connStr)
		if err != nil {
			return env{}, fmt.Errorf("%w (%s)", err, e.csFrom)
		}
		e.cs = &c
	}
	e.envAccount, e.envKey = getenv("AZURE_STORAGE_ACCOUNT"), getenv("AZURE_STORAGE_KEY")
	return e, nil
}

// locate turns a location (a URL, or CONTAINER/BLOB with a connection
// string or AZURE_STORAGE_ACCOUNT) into a BlobURL.
func (e env) locate(location string) (BlobURL, error) {
	raw := location
	if !strings.Contains(location, "://") {
		name := strings.TrimPrefix(location, "/")
		switch {
		case e.cs != nil:
			raw = e.cs.endpoint + "/" + name
		case e.envAccount != "":
			raw = "https://" + e.envAccount + ".blob.core.windows.net/" + name
		default:
			return BlobURL{}, fmt.Errorf("%w %q: a location without a scheme needs a connection string or AZURE_STORAGE_ACCOUNT", ErrBadURL, Redact(location))
		}
	}
	return ParseURL(raw)
}

// Locate resolves a location as Open does (a URL, or CONTAINER/BLOB with
// Options.ConnectionString, AZURE_STORAGE_CONNECTION_STRING or
// AZURE_STORAGE_ACCOUNT), without sending anything or choosing a
// credential.
func Locate(location string, o *Options) (BlobURL, error) {
	if o == nil {
		o = &Options{}
	}
	e, err := readEnv(o)
	if err != nil {
		return BlobURL{}, err
	}
	return e.locate(location)
}

// resolve turns a location into a BlobURL and an authorisation.
//
// The credential is the first of: the URL's SAS; Options.RefreshSAS;
// Options.Credential; Options.AccountKey; the connection string
// (Options.ConnectionString or AZURE_STORAGE_CONNECTION_STRING) if it is
// for the URL's account; AZURE_STORAGE_KEY if AZURE_STORAGE_ACCOUNT names
// the URL's account; the public development key for devstoreaccount1 on
// a loopback emulator. A connection string or account key for another
// account is never used: when one is set and none of these applies, the
// URL has no credential (ErrNoCredential), so that two sides in two
// accounts each get their own. Otherwise it is
// azidentity.DefaultAzureCredential.
func resolve(ctx context.Context, location string, o *Options) (BlobURL, *auth, error) {
	e, err := readEnv(o)
	if err != nil {
		return BlobURL{}, nil, err
	}
	loc, err := e.locate(location)
	if err != nil {
		return BlobURL{}, nil, err
	}
	cs, envAccount, envKey := e.cs, e.envAccount, e.envKey
	switch {
	case loc.HasSAS():
		s, err := newSASSource(loc, loc.sas, o.RefreshSAS)
		if err != nil {
			return BlobURL{}, nil, err
		}
		loc.sas = nil
		return loc, &auth{kind: authSAS, sas: s, cred: Credential{CredentialSAS, "the URL"}}, nil
	case o.RefreshSAS != nil:
		s, err := newSASSource(loc, nil, o.RefreshSAS)
		if err != nil {
			return BlobURL{}, nil, err
		}
		if err := s.refreshStale(ctx, nil); err != nil {
			return BlobURL{}, nil, err
		}
		return loc, &auth{kind: authSAS, sas: s, cred: Credential{CredentialSAS, "Options.RefreshSAS"}}, nil
	case o.Credential != nil:
		return loc, &auth{kind: authToken, token: o.Credential, cred: Credential{CredentialAzureAD, "Options.Credential"}}, nil
	case o.AccountKey != "":
		return keyAuth(loc, loc.Account, o.AccountKey, Credential{CredentialSharedKey, "Options.AccountKey"})
	case cs != nil && strings.EqualFold(cs.account, loc.Account):
		from := Credential{CredentialConnectionString, e.csFrom}
		if cs.key != "" {
			return keyAuth(loc, cs.account, cs.key, from)
		}
		q, err := parseQuery(cs.sas)
		if err != nil || q.Get("sig") == "" {
			return BlobURL{}, nil, fmt.Errorf("%w: the SharedAccessSignature of %s does not parse", ErrNoCredential, e.csFrom)
		}
		s, err := newSASSource(loc, q, o.RefreshSAS)
		if err != nil {
			return BlobURL{}, nil, err
		}
		return loc, &auth{kind: authSAS, sas: s, cred: from}, nil
	case envAccount != "" && envKey != "" && strings.EqualFold(envAccount, loc.Account):
		return keyAuth(loc, envAccount, envKey, Credential{CredentialSharedKey, "AZURE_STORAGE_KEY"})
	case loc.Kind == Emulator && loc.Account == emulatorAccount:
		return keyAuth(loc, emulatorAccount, emulatorKey, Credential{CredentialEmulator, "the development key"})
	case cs != nil:
		return BlobURL{}, nil, fmt.Errorf("%w for %s: %s is for account %q, not %q, and is never used for another account; "+
			"give this URL a credential of its own (a SAS in the URL, or AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY of %s)",
			ErrNoCredential, loc, e.csFrom, cs.account, loc.Account, loc.Account)
	case envAccount != "" && envKey != "":
		return BlobURL{}, nil, fmt.Errorf("%w for %s: AZURE_STORAGE_KEY is the key of account %q (AZURE_STORAGE_ACCOUNT), not of %q, "+
			"and is never used for another account; give this URL a credential of its own (a SAS in the URL, or a connection string of %s)",
			ErrNoCredential, loc, envAccount, loc.Account, loc.Account)
	}
	cred, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		return BlobURL{}, nil, fmt.Errorf("%w for %s: no SAS, key or connection string, and DefaultAzureCredential failed (%s); %s",
			ErrNoCredential, loc, firstLine(scrub(err.Error())), howToAuthenticate)
	}
	return loc, &auth{kind: authToken, token: defaultCredential{cred}, cred: Credential{CredentialAzureAD, "DefaultAzureCredential"}}, nil
}

// defaultCredential is DefaultAzureCredential whose failure is one line
// that says how to authenticate, instead of azidentity's report of every
// credential it tried (still reachable with errors.As).
type defaultCredential struct{ c azcore.TokenCredential }

func (d defaultCredential) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	tok, err := d.c.GetToken(ctx, o)
	if err != nil && ctx.Err() == nil {
		return tok, &signInError{err}
	}
	return tok, err
}

// signInError is a failed DefaultAzureCredential. It matches
// ErrNoCredential, and the retry policy does not retry it.
type signInError struct{ err error }

func (e *signInError) Error() string {
	tried := attemptedCredentials(e.err.Error())
	if tried != "" {
		tried = " (it tried " + tried + ")"
	}
	return "no credential: no SAS, key or connection string, and the Azure AD sign-in through DefaultAzureCredential failed" + tried + "; " + howToAuthenticate
}

func (e *signInError) Unwrap() []error { return []error{ErrNoCredential, e.err} }
func (e *signInError) NonRetriable()   {}

// attemptedCredentials returns the names of the credentials azidentity's
// DefaultAzureCredential error lists (lines "\tNameCredential: ..." or
// "\tNameCredential authentication failed"), comma-separated.
func attemptedCredentials(msg string) string {
	var names []string
	for _, line := range strings.Split(msg, "\n") {
		if !strings.HasPrefix(line, "\t") || strings.HasPrefix(line, "\t\t") {
			continue
		}
		f := strings.FieldsFunc(line, func(r rune) bool { return r == ':' || r == ' ' || r == '\t' })
		if len(f) > 0 && strings.HasSuffix(f[0], "Credential") {
			names = append(names, f[0])
		}
	}
	return strings.Join(names, ", ")
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return strings.TrimSpace(s)
}

func keyAuth(loc BlobURL, account, key string, from Credential) (BlobURL, *auth, error) {
	cred, err := blob.NewSharedKeyCredential(account, key)
	if err != nil {
		// The SDK's message does not contain the key, but say only where
		// it came from.
		return BlobURL{}, nil, fmt.Errorf("%w: the account key of %s is not valid base64", ErrNoCredential, from.From)
	}
	return loc, &auth{kind: authKey, key: cred, cred: from}, nil
}

// sasSource holds the current SAS of a blob and refreshes it.
type sasSource struct {
	lock      chan struct{} // a mutex that honours contexts
	q         url.Values
	expiry    time.Time
	refreshFn func(ctx context.Context) (string, error) // nil: never refreshed
	loc       BlobURL
}

func newSASSource(loc BlobURL, q url.Values, refresh func(context.Context) (string, error)) (*sasSource, error) {
	s := &sasSource{lock: make(chan struct{}, 1), refreshFn: refresh, loc: loc}
	s.set(q)
	return s, nil
}

// set installs a SAS and reads its expiry (se=).
func (s *sasSource) set(q url.Values) {
	s.q = q
	s.expiry = time.Time{}
	if se := q.Get("se"); se != "" {
		for _, layout := range []string{time.RFC3339, "2006-01-02T15:04Z", "2006-01-02"} {
			if t, err := time.Parse(layout, se); err == nil {
				s.expiry = t
				break
			}
		}
	}
}

func (s *sasSource) acquire(ctx context.Context) error {
	select {
	case s.lock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *sasSource) release() { <-s.lock }

// current returns the SAS to use now, refreshing it first when it expires
// within five minutes.
func (s *sasSource) current(ctx context.Context) (url.Values, error) {
	if err := s.acquire(ctx); err != nil {
		return nil, err
	}
	defer s.release()
	if s.refreshFn != nil && !s.expiry.IsZero() && time.Until(s.expiry) < 5*time.Minute {
		if err := s.refreshLocked(ctx); err != nil && time.Now().After(s.expiry) {
			return nil, err
		}
	}
	return s.q, nil
}

// refreshStale replaces the SAS unless it already changed since used was read.
func (s *sasSource) refreshStale(ctx context.Context, used url.Values) error {
	if err := s.acquire(ctx); err != nil {
		return err
	}
	defer s.release()
	if used != nil && !sameValues(used, s.q) {
		return nil // another request refreshed it meanwhile
	}
	return s.refreshLocked(ctx)
}

func (s *sasSource) refreshLocked(ctx context.Context) error {
	raw, err := s.refreshFn(ctx)
	if err != nil {
		return fmt.Errorf("%w: refreshing the SAS of %s: %v", ErrAuth, s.loc, scrub(err.Error()))
	}
	loc, err := ParseURL(raw)
	if err != nil {
		return fmt.Errorf("%w: the refreshed SAS URL: %v", ErrAuth, err)
	}
	if loc.Account != s.loc.Account || loc.Container != s.loc.Container || loc.Blob != s.loc.Blob || !loc.HasSAS() {
		return fmt.Errorf("%w: the refreshed URL %s is not a SAS URL of %s", ErrAuth, loc, s.loc)
	}
	s.set(loc.sas)
	return nil
}

func sameValues(a, b url.Values) bool {
	return a.Encode() == b.Encode()
}

// sasPolicy adds the current SAS to each try of a request, and on a 403
// (Azure says AuthenticationFailed for an expired or wrong signature,
// Azurite AuthorizationFailure) refreshes it, when a refresher is set
// and nobody refreshed it meanwhile, and sends the request once more.
type sasPolicy struct{ s *sasSource }

func (p sasPolicy) Do(req *policy.Request) (*http.Response, error) {
	ctx := req.Raw().Context()
	q, err := p.s.current(ctx)
	if err != nil {
		return nil, err
	}
	applySAS(req.Raw(), q)
	resp, err := req.Next()
	if err != nil || resp.StatusCode != http.StatusForbidden || p.s.refreshFn == nil {
		return resp, err
	}
	if rerr := p.s.refreshStale(ctx, q); rerr != nil {
		return resp, nil // the 403 stands
	}
	q2, err := p.s.current(ctx)
	if err != nil || sameValues(q, q2) {
		return resp, nil
	}
	runtime.Drain(resp)
	if err := req.RewindBody(); err != nil {
		return nil, err
	}
	applySAS(req.Raw(), q2)
	return req.Next()
}

func applySAS(r *http.Request, q url.Values) {
	vals := r.URL.Query()
	for k := range vals {
		if sasParams[strings.ToLower(k)] {
			vals.Del(k)
		}
	}
	for k, v := range q {
		vals[k] = v
	}
	r.URL.RawQuery = vals.Encode()
}

// keySASPolicy authorises this package's own requests (lease, list) with
// a shared key by minting a short account SAS from it, so that no
// hand-written request signing is needed.
type keySASPolicy struct {
	cred *blob.SharedKeyCredential
	mu   sync.Mutex
	q    url.Values
	exp  time.Time
}

func (p *keySASPolicy) Do(req *policy.Request) (*http.Response, error) {
	p.mu.Lock()
	if p.q == nil || time.Until(p.exp) < 30*time.Minute {
		exp := time.Now().UTC().Add(time.Hour)
		qp, err := sas.AccountSignatureValues{
			Protocol:      sas.ProtocolHTTPSandHTTP,
			ExpiryTime:    exp,
			Permissions:   (&sas.AccountPermissions{Read: true, Write: true, Delete: true, List: true, Add: true, Create: true}).String(),
			ResourceTypes: (&sas.AccountResourceTypes{Container: true, Object: true}).String(),
		}.SignWithSharedKey(p.cred)
		if err != nil {
			p.mu.Unlock()
			return nil, fmt.Errorf("pageblob: signing a request with the account key: %w", err)
		}
		q, _ := url.ParseQuery(qp.Encode())
		p.q, p.exp = q, exp
	}
	q := p.q
	p.mu.Unlock()
	applySAS(req.Raw(), q)
	return req.Next()
}

// clients holds what a Blob and its snapshots share: authorisation, SDK
// options, the pipeline of raw requests, and the request limiter.
type clients struct {
	auth    *auth
	opts    Options
	copts   pageblob.ClientOptions
	raw     runtime.Pipeline
	limiter *Limiter
	minted  mintedSAS // read SAS minted from a shared key, for copies
}

func newClients(loc BlobURL, a *auth, o Options) *clients {
	c := &clients{auth: a, opts: o, limiter: o.Limiter}
	if c.limiter == nil {
		c.limiter = NewLimiter(o.Concurrency)
	}
	// unreachablePolicy first: it sees the transport's errors under
	// every other policy of a try.
	perRetry := []policy.Policy{unreachablePolicy{}}
	if a.kind == authSAS {
		perRetry = append(perRetry, sasPolicy{a.sas})
	}
	perRetry = append(perRetry, &throttlePolicy{limiter: c.limiter, notify: o.Throttle})
	c.copts = pageblob.ClientOptions{ClientOptions: azcore.ClientOptions{
		Retry:                           o.Retry,
		Transport:                       o.Transport,
		PerRetryPolicies:                perRetry,
		Telemetry:                       policy.TelemetryOptions{ApplicationID: "deltasync"},
		InsecureAllowCredentialWithHTTP: loc.Kind == Emulator,
	}}
	var rawAuth []policy.Policy
	switch a.kind {
	case authKey:
		rawAuth = append(rawAuth, &keySASPolicy{cred: a.key})
	case authToken:
		rawAuth = append(rawAuth, runtime.NewBearerTokenPolicy(a.token, []string{storageScope},
			&policy.BearerTokenOptions{InsecureAllowCredentialWithHTTP: loc.Kind == Emulator}))
	}
	c.raw = runtime.NewPipeline("deltasync-pageblob", "v0.1.0", runtime.PipelineOptions{PerRetry: rawAuth}, &c.copts.ClientOptions)
	return c
}

// pageBlob returns an SDK client for loc (base blob or snapshot).
func (c *clients) pageBlob(loc BlobURL) (*pageblob.Client, error) {
	u := loc.url(false)
	switch c.auth.kind {
	case authSAS:
		return pageblob.NewClientWithNoCredential(u, &c.copts)
	case authKey:
		return pageblob.NewClientWithSharedKeyCredential(u, c.auth.key, &c.copts)
	default:
		return pageblob.NewClient(u, c.auth.token, &c.copts)
	}
}

// do sends a request built by this package (lease, list) through the raw
// pipeline and returns the response if its status is one of ok.
func (c *clients) do(ctx context.Context, method, u string, hdr map[string]string, ok ...int) (*http.Response, error) {
	req, err := runtime.NewRequest(ctx, method, u)
	if err != nil {
		return nil, err
	}
	req.Raw().Header.Set("x-ms-version", rawAPIVersion)
	for k, v := range hdr {
		req.Raw().Header.Set(k, v)
	}
	resp, err := c.raw.Do(req)
	if err != nil {
		return nil, err
	}
	if !runtime.HasStatusCode(resp, ok...) {
		return nil, runtime.NewResponseError(resp)
	}
	return resp, nil
}
