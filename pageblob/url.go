package pageblob

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
)

// HostKind says what kind of endpoint a BlobURL addresses.
type HostKind uint8

const (
	// Storage is a storage account's blob endpoint,
	// https://ACCOUNT.blob.core.windows.net (or another cloud's suffix, a
	// private endpoint, a custom domain): the account is the host's first
	// label and the path is /CONTAINER/BLOB.
	Storage HostKind = iota
	// ManagedDisk is a managed disk's upload or export endpoint, an md-
	// host such as https://md-xxxx.z1.blob.storage.azure.net/CONTAINER/abcd.
	ManagedDisk
	// Emulator is Azurite (or another emulator) on a loopback address, with
	// the account in the path: http://127.0.0.1:PORT/ACCOUNT/CONTAINER/BLOB.
	Emulator
)

func (k HostKind) String() string {
	switch k {
	case Storage:
		return "storage"
	case ManagedDisk:
		return "managed-disk"
	case Emulator:
		return "emulator"
	}
	return fmt.Sprintf("HostKind(%d)", uint8(k))
}

// BlobURL is a parsed page blob address. Its SAS, if any, is kept but
// never printed: String, Identity and every error show the address
// without it.
type BlobURL struct {
	Scheme    string   // https, or http for an emulator on loopback
	Host      string   // host[:port]
	Account   string   // storage account name
	Container string   // container name
	Blob      string   // blob name, unescaped; it may contain '/'
	Snapshot  string   // snapshot id (a timestamp), "" for the base blob
	Kind      HostKind // what kind of endpoint Host is
	sas       url.Values
}

// HasSAS reports whether the URL carried a shared access signature.
func (b BlobURL) HasSAS() bool { return b.sas.Get("sig") != "" }

// String returns the URL without its SAS (the snapshot is kept).
func (b BlobURL) String() string { return b.url(false) }

// Identity names the blob (or snapshot) stably and without secrets:
// pageblob://HOST/[ACCOUNT/]CONTAINER/BLOB[@SNAPSHOT], no query string.
// Two URLs of one blob have one identity: the host's case, a default port
// and the SAS do not count. (A custom domain in front of an account
// cannot be told from another account without asking it: it counts.)
func (b BlobURL) Identity() string {
	host := strings.ToLower(b.Host)
	if h, p, err := net.SplitHostPort(host); err == nil && ((b.Scheme == "https" && p == "443") || (b.Scheme == "http" && p == "80")) {
		host = h
	}
	u := url.URL{Scheme: "pageblob", Host: host, Path: b.path()}
	s := u.String()
	if b.Snapshot != "" {
		s += "@" + b.Snapshot
	}
	return s
}

// WithSnapshot returns the same address naming a snapshot ("" for the base
// blob).
func (b BlobURL) WithSnapshot(id string) BlobURL {
	b.Snapshot = id
	return b
}

func (b BlobURL) path() string {
	if b.Kind == Emulator {
		return "/" + b.Account + "/" + b.Container + "/" + b.Blob
	}
	return "/" + b.Container + "/" + b.Blob
}

// containerURL returns the container's URL, without SAS.
func (b BlobURL) containerURL() string {
	p := "/" + b.Container
	if b.Kind == Emulator {
		p = "/" + b.Account + p
	}
	u := url.URL{Scheme: b.Scheme, Host: b.Host, Path: p}
	return u.String()
}

// url builds the blob's URL, with the SAS when withSAS is set.
func (b BlobURL) url(withSAS bool) string {
	u := url.URL{Scheme: b.Scheme, Host: b.Host, Path: b.path()}
	q := url.Values{}
	if b.Snapshot != "" {
		q.Set("snapshot", b.Snapshot)
	}
	if withSAS {
		for k, v := range b.sas {
			q[k] = v
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// ParseURL parses a page blob URL:
//
//	https://ACCOUNT.blob.core.windows.net/CONTAINER/BLOB[?snapshot=S][&SAS]
//	https://md-XXXX.zN.blob.storage.azure.net/CONTAINER/BLOB?SAS  (managed disk)
//	http://127.0.0.1:PORT/devstoreaccount1/CONTAINER/BLOB[?SAS]  (Azurite)
//
// Plain http is accepted only for loopback hosts. Errors wrap ErrBadURL
// and show the URL redacted.
func ParseURL(raw string) (BlobURL, error) {
	bad := func(why string) (BlobURL, error) {
		return BlobURL{}, fmt.Errorf("%w %s: %s", ErrBadURL, Redact(raw), why)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return bad("does not parse")
	}
	if u.User != nil {
		return bad("user information is not allowed")
	}
	host := u.Hostname()
	if host == "" {
		return bad("no host (want https://ACCOUNT.blob.core.windows.net/CONTAINER/BLOB)")
	}
	loopback := isLoopback(host)
	switch u.Scheme {
	case "https":
	case "http":
		if !loopback {
			return bad("plain http is allowed only for an emulator on a loopback address")
		}
	default:
		return bad("scheme must be https")
	}
	b := BlobURL{Scheme: u.Scheme, Host: u.Host, Kind: Storage}
	segs := strings.SplitN(strings.TrimPrefix(u.Path, "/"), "/", 3)
	if loopback {
		b.Kind = Emulator
		if len(segs) < 3 {
			return bad("want http://HOST:PORT/ACCOUNT/CONTAINER/BLOB for an emulator")
		}
		b.Account, b.Container, b.Blob = segs[0], segs[1], segs[2]
	} else {
		label, _, _ := strings.Cut(host, ".")
		b.Account = label
		if strings.HasPrefix(label, "md-") && strings.Contains(host, ".blob.storage.azure.net") {
			b.Kind = ManagedDisk
		}
		segs = strings.SplitN(strings.TrimPrefix(u.Path, "/"), "/", 2)
		if len(segs) < 2 {
			return bad("want /CONTAINER/BLOB in the path")
		}
		b.Container, b.Blob = segs[0], segs[1]
	}
	if b.Account == "" || b.Container == "" || b.Blob == "" || strings.HasSuffix(b.Blob, "/") {
		return bad("account, container and blob names must not be empty")
	}
	q, err := parseQuery(u.RawQuery)
	if err != nil {
		return bad(err.Error())
	}
	b.Snapshot = q.Get("snapshot")
	q.Del("snapshot")
	if q.Get("versionid") != "" {
		return bad("blob versions are not supported; use snapshots")
	}
	if len(q) > 0 {
		b.sas = q
	}
	return b, nil
}

// parseQuery parses a URL's query, or a SAS token, strictly: a query
// that does not parse (a bad %-escape, a ';') is an error, never dropped
// silently, and so is a SAS without its signature or with a field given
// twice. Names of SAS fields, snapshot and versionid are case-insensitive
// (SIG= is sig=) and returned in lower case, the form Azure documents.
// The error never quotes the query: it holds secrets.
func parseQuery(raw string) (url.Values, error) {
	parsed, err := url.ParseQuery(raw)
	if err != nil {
		return nil, errors.New("its query (the SAS) does not parse: a bad %-escape, or a ';' between fields")
	}
	q := url.Values{}
	sas := false
	for k, vs := range parsed {
		lk := strings.ToLower(k)
		if sasParams[lk] || lk == "snapshot" || lk == "versionid" {
			sas = sas || sasParams[lk]
			k = lk
		}
		if len(vs) > 1 || q.Has(k) {
			return nil, fmt.Errorf("field %s is given more than once in its query", k)
		}
		q[k] = vs
	}
	if sas && q.Get("sig") == "" {
		return nil, errors.New("its SAS has no signature (sig=): copy the whole SAS URL")
	}
	return q, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// keptParams are query parameters that are not secret and help to read
// an error: everything else in a URL's query is a SAS field and redacted.
var keptParams = map[string]bool{
	"snapshot": true, "prevsnapshot": true, "comp": true, "restype": true,
	"marker": true, "maxresults": true, "include": true, "prefix": true, "timeout": true,
}

// Redact returns raw with the value of every query parameter that may be
// part of a shared access signature (sig, se, sp, sv, skoid, ...)
// replaced by REDACTED. Parameters that name what is addressed
// (snapshot, comp, ...) are kept. A URL that does not parse loses its
// whole query.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if i := strings.IndexAny(raw, "?#"); i >= 0 {
			return raw[:i] + "?REDACTED"
		}
		return scrub(raw)
	}
	u.User = nil
	u.Fragment = ""
	if u.RawQuery == "" {
		return u.String()
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		u.RawQuery = "REDACTED"
		return u.String()
	}
	for k, vs := range q {
		if keptParams[strings.ToLower(k)] {
			continue
		}
		for i := range vs {
			vs[i] = "REDACTED"
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// sasParams are the query parameters of a shared access signature.
var sasParams = map[string]bool{}

func init() {
	for _, k := range strings.Split(sasParamList, "|") {
		sasParams[k] = true
	}
}

const sasParamList = "sig|se|st|sp|sv|sr|spr|sip|ss|srt|si|skoid|sktid|skt|ske|sks|skv|saoid|suoid|sduoid|scid|sdd|ses|rscc|rscd|rsce|rscl|rsct"

var (
	sasParamRe   = regexp.MustCompile(`(?i)\b(` + sasParamList + `)=[^&\s"'<>]*`)
	connSecretRe = regexp.MustCompile(`(?i)\b(AccountKey|SharedAccessSignature)=[^;\s"']*`)
	authHeaderRe = regexp.MustCompile(`(?i)\b(SharedKey(Lite)?|Bearer)\s+[A-Za-z0-9._~+/=:-]+`)
)

// scrub removes anything that looks like a secret from free text: SAS
// fields in URLs, account keys and SAS tokens of connection strings, and
// Authorization header values. Every error message goes through it.
func scrub(s string) string {
	s = sasParamRe.ReplaceAllString(s, "$1=REDACTED")
	s = connSecretRe.ReplaceAllString(s, "$1=REDACTED")
	s = authHeaderRe.ReplaceAllString(s, "$1 REDACTED")
	return s
}
