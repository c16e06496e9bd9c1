package pageblob

import (
	"context"
	"fmt"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// Azure's limits for page blobs, enforced before any request is sent.
const (
	// PageSize is the alignment of every offset and length written.
	PageSize = 512
	// MaxPut is the largest Put Page (and Put Page From URL) Azure takes.
	MaxPut = 4 << 20
	// MaxBlobSize is the largest page blob, 8 TiB.
	MaxBlobSize = 8 << 40
	// DefaultListSegment is how much of a blob one Get Page Ranges
	// request covers (markers are still followed inside a segment).
	DefaultListSegment = 1 << 30
)

// Options configure Open, OpenTarget and OpenSnapshot. The zero value (or
// nil) means every default. An Options value is copied at open: later
// changes do not affect an open Blob.
type Options struct {
	// AccountKey is the storage account's shared key (secret). Used when
	// the URL carries no SAS and Credential is nil.
	AccountKey string
	// Credential is an Azure AD token credential (for example from
	// azidentity). Used when the URL carries no SAS.
	Credential azcore.TokenCredential
	// ConnectionString is a storage connection string (secret): its key
	// or SAS authorises requests, and its endpoint resolves a location
	// given as CONTAINER/BLOB instead of a URL. Default: the environment
	// variable AZURE_STORAGE_CONNECTION_STRING.
	ConnectionString string
	// RefreshSAS returns a fresh SAS URL of the same blob, for runs that
	// outlive a SAS. It is called before the current SAS expires (its se=
	// field, less five minutes) and once after Azure refuses a request
	// with 403 (AuthenticationFailed). It may be called from several
	// goroutines, never concurrently. Default: none (an expired SAS fails
	// with ErrAuth).
	RefreshSAS func(ctx context.Context) (string, error)
	// Getenv looks up environment variables. Default os.Getenv.
	Getenv func(string) string

	// CreateSize makes OpenTarget create the blob with this size (bytes
	// of disk, a multiple of 512; of 1 MiB with VHD) when it does not
	// exist. Default 0: a missing blob is ErrNotFound.
	CreateSize int64
	// KeepPrior keeps the prior state of a target that existed before
	// OpenTarget (not one it created): just before the Blob's first
	// change (a write, clear, copy, resize or VHD footer) a snapshot
	// with metadata deltasync=prior is taken, and PriorSnapshot returns
	// its id. A Blob that changes nothing takes none. This is what a
	// reprotect onto the original disk needs (Azure Site Recovery keeps
	// the original as an -ASRReplica copy). Ignored for managed disk
	// uploads, which have no snapshots. Default false.
	KeepPrior bool
	// LeaseDuration is the lease a target takes: 15 s to 60 s, renewed
	// by a goroutine every third of it; or negative for an infinite lease
	// (never renewed; a crashed run leaves the blob leased until someone
	// breaks the lease). Default 60 s, renewed every 20 s.
	LeaseDuration time.Duration
	// StateDir is where a target records the lease it holds (in a
	// subdirectory leases, mode 0700; a file per blob, mode 0600, removed
	// when the lease is released), so that a later run on this machine
	// takes over the lease of a run that died before it could release it
	// and before its journal named it, instead of failing with
	// ErrLeaseHeld until the lease expires. Default: $XDG_STATE_HOME/
	// deltasync, or ~/.local/state/deltasync. Keep it with the journals.
	StateDir string
	// BreakLease lets a target break a lease that another holder has on
	// the blob (break period 0) and take its own, instead of failing with
	// ErrLeaseHeld. The holder's writes fail from then on. This is for a
	// lease known to be stale (a crashed tool's infinite lease): if the
	// holder is alive (another sync, a VM or service using the disk), its
	// work is cut short midway, and what it wrote and this run writes mix
	// on one disk; a rerun of deltasync does not need it for its own
	// interrupted run's lease, which Check takes over. Default false.
	BreakLease bool
	// SequenceNumber is the value a target sets as the blob's sequence
	// number for the run and requires on every write. Default 0: derived
	// from the time of the run (milliseconds since 1970, or the blob's
	// current number plus one if that is larger), so that a rerun's
	// number differs from its interrupted run's and refuses that run's
	// writes still on their way. A fixed value gives up that protection.
	SequenceNumber int64
	// VHD says the blob holds a fixed VHD: the disk, then a 512-byte
	// footer. Size reports the disk without the footer, writes past the
	// disk are refused, and a target gets a valid footer written at open
	// when the footer's place holds zeros or a footer of another size
	// (anything else is refused with ErrNotVHD, not overwritten), and
	// rewritten on Resize. Always on for managed disks (md- hosts).
	VHD bool
	// ManagedDisk treats the blob as a managed disk upload target even if
	// its host is not an md- host (for tests against an emulator): VHD
	// layout, Azure's managed disk size rules, no Create, no lease, no
	// sequence number, no resize and no snapshots.
	ManagedDisk bool

	// Concurrency caps the requests this Blob (and its snapshots) has in
	// flight. An AIMD limiter halves the cap when Azure throttles and
	// raises it by one after a cap's worth of successes. Default 16.
	Concurrency int
	// Limiter, when set, is used instead of a limiter of the Blob's own,
	// to share one budget among several blobs (of one storage account).
	Limiter *Limiter
	// Throttle, when set, is called (from the goroutine of the request)
	// each time Azure answers ServerBusy, 429 or an operation timeout,
	// before the SDK's retry policy waits and retries. An engine uses it
	// to lower its own concurrency. It must be quick and safe for
	// concurrent use. Default: none.
	Throttle func(ThrottleEvent)
	// Retry configures azcore's retry policy, the only retry layer: its
	// zero value is azcore's default (3 retries, exponential back-off
	// from 800 ms to 60 s, Retry-After honoured). TryTimeout defaults to
	// 2 minutes here (azcore's default is none), so that a stalled
	// connection cannot hang a run; it bounds each try including the
	// reading of its body (a broken download body is resumed by the SDK's
	// retry reader, which re-requests only the missing bytes).
	Retry policy.RetryOptions
	// Transport sends the HTTP requests. Default azcore's HTTP client.
	// Tests set a recording transport (see package pageblobtest).
	Transport policy.Transporter

	// ListSegment is how much of the blob one Get Page Ranges (or Diff)
	// request covers, a multiple of 512. Very fragmented blobs time out
	// when listed whole. Default 1 GiB.
	ListSegment int64
	// ListMaxResults caps the ranges per response page (maxresults).
	// Default 0: Azure's own cap (10,000).
	ListMaxResults int32
	// RangeCacheSegments is how many listed segments AllocatedRanges
	// keeps, so that a comparison asking chunk by chunk sends one request
	// per segment, not one per chunk. The cache follows this Blob's own
	// writes and clears. Default 8; negative disables the cache.
	RangeCacheSegments int
}

func (o *Options) withDefaults() (Options, error) {
	var c Options
	if o != nil {
		c = *o
	}
	if c.Concurrency == 0 {
		c.Concurrency = 16
	}
	if c.Concurrency < 0 {
		return c, fmt.Errorf("pageblob: Options.Concurrency %d is negative", c.Concurrency)
	}
	switch {
	case c.LeaseDuration == 0:
		c.LeaseDuration = 60 * time.Second
	case c.LeaseDuration > 0 && (c.LeaseDuration < 15*time.Second || c.LeaseDuration > 60*time.Second):
		return c, fmt.Errorf("pageblob: Options.LeaseDuration %v: Azure takes 15 s to 60 s, or infinite (negative)", c.LeaseDuration)
	}
	if c.SequenceNumber < 0 {
		return c, fmt.Errorf("pageblob: Options.SequenceNumber %d is negative", c.SequenceNumber)
	}
	if c.ListSegment == 0 {
		c.ListSegment = DefaultListSegment
	}
	if c.ListSegment < 0 || c.ListSegment%PageSize != 0 {
		return c, fmt.Errorf("pageblob: Options.ListSegment %d is not a positive multiple of 512", c.ListSegment)
	}
	if c.RangeCacheSegments == 0 {
		c.RangeCacheSegments = 8
	}
	if c.Retry.TryTimeout == 0 {
		c.Retry.TryTimeout = 2 * time.Minute
	}
	if c.CreateSize < 0 {
		return c, fmt.Errorf("pageblob: Options.CreateSize %d is negative", c.CreateSize)
	}
	return c, nil
}
