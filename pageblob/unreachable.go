package pageblob

import (
	"errors"
	"net"
	"net/http"
	"syscall"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// ErrUnreachable: the blob's host cannot be reached at all: its name does
// not resolve, nothing listens on its port, or there is no route to it.
// Such a failure is not retried: it fails the request at once, naming the
// host (the other network failures, a reset or a timeout, are retried).
var ErrUnreachable = errors.New("pageblob: host unreachable")

// unreachableError is a transport failure that retrying would not cure.
// Its text names the host and the reason, never the URL (which may hold
// a SAS).
type unreachableError struct {
	host, why string
	err       error
}

func (e *unreachableError) Error() string { return "cannot reach " + e.host + ": " + e.why }

// Unwrap returns ErrUnreachable and the transport's error.
func (e *unreachableError) Unwrap() []error { return []error{ErrUnreachable, e.err} }

// NonRetriable tells azcore's retry policy not to retry.
func (e *unreachableError) NonRetriable() {}

// unreachablePolicy sits under the retry policy and turns the transport
// errors of an unreachable host into unreachableError, so that an
// unresolvable name or a closed port fails in milliseconds instead of
// after the retry policy's back-off (about 10 s with the defaults).
type unreachablePolicy struct{}

func (unreachablePolicy) Do(req *policy.Request) (*http.Response, error) {
	resp, err := req.Next()
	if err == nil {
		return resp, nil
	}
	if why, ok := unreachableReason(err); ok {
		return resp, &unreachableError{host: req.Raw().URL.Host, why: why, err: err}
	}
	return resp, err
}

// unreachableReason tells a transport error that says the host cannot be
// reached at all: a name that does not exist (a DNS answer, not a DNS
// timeout, which may pass), a refused connection, no route.
func unreachableReason(err error) (string, bool) {
	var dns *net.DNSError
	if errors.As(err, &dns) {
		switch {
		case dns.IsNotFound:
			return "its name does not resolve (DNS: no such host)", true
		case dns.IsTimeout || dns.IsTemporary:
			return "", false
		}
		return "its name does not resolve (DNS: " + dns.Err + ")", true
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused (nothing listens on that port)", true
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "no route to host", true
	case errors.Is(err, syscall.ENETUNREACH):
		return "network is unreachable (no route)", true
	}
	return "", false
}
