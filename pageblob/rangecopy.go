package pageblob

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
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
// implements transfer.RangeCopier: a sync between two page blobs sends
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
// When the very first copy of this Blob fails because the service cannot
// copy from the source (Azurite answers 501; Azure answers
// CannotVerifyCopySource when it cannot read the source, for example
// behind a firewall), CopyRange returns false and declines every later
// call, so that a run falls back to reading and writing. Errors after
// that are returned.
//
// Like WriteAt, every request carries the lease ID and the run's
// sequence number; off and n must be multiples of 512 inside the disk.
// It may be called concurrently on disjoint ranges.
func (b *Blob) CopyRange(ctx context.Context, src any, off, n int64) (bool, error) {
	s, ok := src.(*Blob)
	if !ok || s == nil || b.noCopy.Load() || !b.canCopyFrom(s) {
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
		b.noCopy.Store(true)
		return false, nil
	}
	err = b.copyFromURL(ctx, srcURL, authz, off, n)
	if err != nil && !b.copied.Load() && cannotCopy(err) {
		b.noCopy.Store(true)
		return false, nil
	}
	if err != nil {
		return true, err
	}
	b.copied.Store(true)
	return true, nil
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

// cannotCopy tells an error that says the service cannot copy from this
// source at all, not that one request failed.
func cannotCopy(err error) bool {
	return errors.Is(err, ErrNotSupported) ||
		bloberror.HasCode(err, bloberror.CannotVerifyCopySource, bloberror.AuthorizationSourceIPMismatch,
			bloberror.AuthorizationProtocolMismatch, bloberror.AuthorizationPermissionMismatch)
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
