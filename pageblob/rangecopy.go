package pageblob

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
)

// Minted read SAS of a source: valid from a quarter of an hour back (clock
// skew between this machine and Azure) for mintedSASLife, and replaced
// when less than mintedSASMargin is left (longer than any single Put Page
// From URL can take, retries included).
const (
	mintedSASLife   = 2 * time.Hour
	mintedSASMargin = 30 * time.Minute
	mintedSASSkew   = 15 * time.Minute
)

// CopyRange copies [off, off+n) of src into the same range of this blob
// with Put Page From URL (at most 4 MiB per request): Azure reads the
// source itself, so the bytes never pass through this process. It
// implements disk.RangeCopier: a sync between two page blobs sends
// no data of its own.
//
// src must be a *Blob readable by URL: one opened with a SAS (its
// current SAS, refreshed through Options.RefreshSAS, is sent), with a
// shared key (a read-only service SAS for the blob or snapshot is minted
// from it, valid for two hours and renewed), or with an Azure AD
// credential (its token goes in x-ms-copy-source-authorization). For
// anything else (another type, a range past the source's end, a source
// on an emulator on another host that Azure could not reach) CopyRange
// returns false, having sent nothing, and the caller reads and writes.
//
// When the service refuses a copy for a reason that reading and writing
// avoid, CopyRange returns false and declines every later call, so that
// a run falls back to reading and writing; CopyStats says why. That is
// any answer of the service to the copy (Azurite answers 501 under a
// shared key and 500 under a SAS; Azure answers CannotVerifyCopySource
// when it cannot read the source, for example behind a firewall, or 403
// when the source's SAS does not let it read), except those a write would
// meet too: the lease or sequence number condition (ErrConcurrentWriter),
// throttling (ErrThrottled). Those, a cancelled context and network
// failures are returned as errors. While no copy has succeeded, a 500 is
// not retried (a service that cannot copy answers it at once, and
// reading and writing is correct anyway).
//
// Like WriteAt, every request carries the lease ID and the run's
// sequence number; off and n must be multiples of 512 inside the disk.
// It may be called concurrently on disjoint ranges.
func (b *Blob) CopyRange(ctx context.Context, src any, off, n int64) (bool, error) {
	s, ok := src.(*Blob)
	if !ok || s == nil || b.noCopy.Load() {
		return false, nil
	}
	if !b.canCopyFrom(s) {
		b.declineCopies("the source is on another emulator host, which the target's service cannot reach")
		return false, nil
	}
	if off < 0 || n <= 0 || off+n > s.Size() {
		return false, nil
	}
	if err := b.writable("copy", off, n); err != nil {
		return false, err
	}
	srcURL, authz, err := s.copySource(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return false, b.wrap("copy", off, n, ctx.Err())
		}
		// No way to make the source readable by URL (a token that
		// cannot be had, say): read and write instead.
		b.declineCopies("the source has no URL the service could read it by: " + scrub(err.Error()))
		return false, nil
	}
	// What comes before the first change (the lease, the prior snapshot)
	// is done here, under the usual retry policy; the copies' own
	// requests go under probeRetry until one succeeds.
	if err := b.beforeChange(ctx); err != nil {
		return false, err
	}
	cctx := ctx
	if !b.copied.Load() {
		cctx = policy.WithRetryOptions(ctx, probeRetry(b.cl.opts.Retry))
	}
	err = b.copyFromURL(cctx, srcURL, authz, off, n)
	if err != nil {
		if why, ok := copyRefused(ctx, err); ok {
			b.declineCopies(why)
			return false, nil
		}
		return true, err
	}
	b.copied.Store(true)
	b.copyStats.copied.Add(n)
	return true, nil
}

// CopyStats says what CopyRange did on this Blob.
type CopyStats struct {
	// Copied is the bytes copied server-side (Put Page From URL).
	Copied int64
	// Fallback says why CopyRange declined to copy from a page blob
	// source, so that the run read the source and wrote instead, for
	// example "Put Page From URL refused: HTTP 500"; "" when it never
	// declined.
	Fallback string
}

// CopyStats returns the bytes CopyRange copied and why it declined, if it
// did.
func (b *Blob) CopyStats() CopyStats {
	b.copyStats.mu.Lock()
	defer b.copyStats.mu.Unlock()
	return CopyStats{Copied: b.copyStats.copied.Load(), Fallback: b.copyStats.fallback}
}

type copyStats struct {
	copied   atomic.Int64
	mu       sync.Mutex
	fallback string
}

// declineCopies makes CopyRange decline from now on, recording why (the
// first reason only).
func (b *Blob) declineCopies(why string) {
	b.copyStats.mu.Lock()
	if b.copyStats.fallback == "" {
		b.copyStats.fallback = why
	}
	b.copyStats.mu.Unlock()
	b.noCopy.Store(true)
}

// canCopyFrom tells whether the service behind b could read s by URL.
// An emulator on loopback is reachable only by itself (and Azurite
// answers 501 even then); Azure cannot reach a loopback address.
func (b *Blob) canCopyFrom(s *Blob) bool {
	if s.loc.Kind == Emulator || b.loc.Kind == Emulator {
		return s.loc.Kind == b.loc.Kind && s.loc.Host == b.loc.Host
	}
	return true
}

// copyRefused tells a failed copy that reading and writing may avoid, and
// says why: an answer of the service to Put Page From URL, whatever its
// status, unless a write would meet it too (the target's lease or
// sequence number condition, throttling). No answer at all (the network,
// a cancelled context), or the failure of something done before the copy
// (the prior snapshot), is not such a refusal.
func copyRefused(ctx context.Context, err error) (string, bool) {
	var re *azcore.ResponseError
	var pe *Error
	switch {
	case ctx.Err() != nil, errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "", false
	case errors.Is(err, ErrConcurrentWriter), errors.Is(err, ErrThrottled), errors.Is(err, ErrClosed):
		return "", false
	case !errors.As(err, &pe) || pe.Op != "copy" || !errors.As(err, &re):
		// Not the copy's own answer (taking the prior snapshot before the
		// first change failed, say): a write would meet it too.
		return "", false
	}
	why := fmt.Sprintf("Put Page From URL refused: HTTP %d", re.StatusCode)
	if re.ErrorCode != "" {
		why += " " + re.ErrorCode
	}
	return why, true
}

// probeRetry is the retry policy of copies until one succeeds: r without
// retrying 500, which Azurite answers at once to every Put Page From URL
// under a SAS (the default policy would retry it for about 6 s).
func probeRetry(r policy.RetryOptions) policy.RetryOptions {
	codes := r.StatusCodes
	if codes == nil {
		codes = []int{http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusBadGateway,
			http.StatusServiceUnavailable, http.StatusGatewayTimeout}
	}
	r.StatusCodes = slices.DeleteFunc(slices.Clone(codes), func(c int) bool { return c == http.StatusInternalServerError })
	if len(r.StatusCodes) == 0 {
		r.StatusCodes = []int{} // not nil: nil would mean azcore's defaults
	}
	return r
}

// copySource returns the URL under which the service can read this blob
// (or snapshot), and the value of x-ms-copy-source-authorization ("" when
// the URL carries a SAS). The URL holds a secret: it goes only into the
// request's x-ms-copy-source header, never into an error.
func (b *Blob) copySource(ctx context.Context) (srcURL, authz string, err error) {
	switch a := b.cl.auth; a.kind {
	case authSAS:
		q, err := a.sas.current(ctx)
		if err != nil {
			return "", "", err
		}
		loc := b.loc
		loc.sas = q
		return loc.url(true), "", nil
	case authKey:
		return b.cl.minted.get(b.loc, a.key)
	case authToken:
		tok, err := a.token.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{storageScope}})
		if err != nil {
			return "", "", fmt.Errorf("%w: getting a token for the copy source: %v", ErrNoCredential, scrub(err.Error()))
		}
		return b.loc.url(false), "Bearer " + tok.Token, nil
	}
	return "", "", fmt.Errorf("%w: the source has no credential a copy can use", ErrNoCredential)
}

// mintedSAS keeps the read SAS minted from a shared key for each blob or
// snapshot a Blob and its snapshots are copied from.
type mintedSAS struct {
	mu   sync.Mutex
	urls map[string]mintedURL // by BlobURL.Identity
}

type mintedURL struct {
	url    string
	expiry time.Time
}

func (m *mintedSAS) get(loc BlobURL, key *sas.SharedKeyCredential) (string, string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id := loc.Identity()
	if u, ok := m.urls[id]; ok && time.Until(u.expiry) > mintedSASMargin {
		return u.url, "", nil
	}
	now := time.Now().UTC()
	v := sas.BlobSignatureValues{
		Protocol:      sas.ProtocolHTTPS,
		StartTime:     now.Add(-mintedSASSkew),
		ExpiryTime:    now.Add(mintedSASLife),
		Permissions:   (&sas.BlobPermissions{Read: true}).String(),
		ContainerName: loc.Container,
		BlobName:      loc.Blob,
	}
	if loc.Kind == Emulator {
		v.Protocol = sas.ProtocolHTTPSandHTTP
	}
	if loc.Snapshot != "" {
		t, err := time.Parse(time.RFC3339Nano, loc.Snapshot)
		if err != nil {
			return "", "", fmt.Errorf("%w: snapshot id %q is not a time", ErrBadURL, loc.Snapshot)
		}
		v.SnapshotTime = t
	}
	qp, err := v.SignWithSharedKey(key)
	if err != nil {
		return "", "", fmt.Errorf("%w: minting a read SAS for the copy source: %v", ErrNoCredential, err)
	}
	q, err := url.ParseQuery(qp.Encode())
	if err != nil {
		return "", "", fmt.Errorf("%w: minting a read SAS for the copy source: %v", ErrNoCredential, err)
	}
	l := loc
	l.sas = q
	u := l.url(true)
	if m.urls == nil {
		m.urls = map[string]mintedURL{}
	}
	m.urls[id] = mintedURL{url: u, expiry: v.ExpiryTime}
	return u, "", nil
}
