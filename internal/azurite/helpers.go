package azurite

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
)

// ForTest starts a server for one test and stops it in t.Cleanup. A
// failure to start (Node.js missing, npm failing) fails the test.
func ForTest(t testing.TB) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s, err := Start(ctx, Options{})
	if err != nil {
		t.Fatalf("starting Azurite: %v", err)
	}
	t.Cleanup(func() { s.Stop() })
	return s
}

func credential() *sas.SharedKeyCredential {
	c, err := blob.NewSharedKeyCredential(Account, Key)
	if err != nil {
		panic(err) // the development key is a constant
	}
	return c
}

// AccountSAS returns a query string (without '?') granting every
// permission on the development account for an hour.
func AccountSAS() (string, error) {
	q, err := sas.AccountSignatureValues{
		Protocol:      sas.ProtocolHTTPSandHTTP,
		ExpiryTime:    time.Now().UTC().Add(time.Hour),
		Permissions:   (&sas.AccountPermissions{Read: true, Write: true, Delete: true, List: true, Add: true, Create: true, Update: true}).String(),
		ResourceTypes: (&sas.AccountResourceTypes{Service: true, Container: true, Object: true}).String(),
	}.SignWithSharedKey(credential())
	if err != nil {
		return "", err
	}
	return q.Encode(), nil
}

// BlobSAS returns a service SAS query string (without '?') for one blob
// with the given permissions (for example "racwd"), valid for d.
func BlobSAS(container, blob, permissions string, d time.Duration) (string, error) {
	q, err := sas.BlobSignatureValues{
		Protocol:      sas.ProtocolHTTPSandHTTP,
		ExpiryTime:    time.Now().UTC().Add(d),
		Permissions:   permissions,
		ContainerName: container,
		BlobName:      blob,
	}.SignWithSharedKey(credential())
	if err != nil {
		return "", err
	}
	return q.Encode(), nil
}

// CreateContainer creates a container (a raw REST call signed with an
// account SAS, so that tests need not import azblob's container package).
// A container that already exists is not an error.
func (s *Server) CreateContainer(ctx context.Context, name string) error {
	q, err := AccountSAS()
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, s.Endpoint+"/"+name+"?restype=container&"+q, nil)
	if err != nil {
		return err
	}
	req.Header.Set("x-ms-version", "2021-12-02")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("azurite: creating container %s: %w", name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusConflict {
		return fmt.Errorf("azurite: creating container %s: %s: %s", name, resp.Status, body)
	}
	return nil
}
