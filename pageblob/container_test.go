package pageblob

// Tests of missing containers: created for a new target when the
// credential may, named in the error otherwise.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/internal/azurite"
)

// containerExists asks Azurite directly.
func containerExists(t *testing.T, name string) bool {
	t.Helper()
	resp := rawRequest(t, http.MethodGet, az.Endpoint+"/"+name+"?restype=container", nil)
	return resp.StatusCode == http.StatusOK
}

// A new target in a missing container gets the container created when
// the credential may create it; otherwise, and for a source or a target
// that must exist, the error names the container.
func TestMissingContainer(t *testing.T) {
	ctx := context.Background()
	fresh := func() string { return fmt.Sprintf("newc-%d-%d", time.Now().UnixNano()%1e9, blobSeq.Add(1)) }
	data := randBytes(4096)

	// The development key, an account SAS, a connection string: created.
	acct, _ := azurite.AccountSAS()
	for _, c := range []struct {
		what string
		loc  func(container string) string
		o    Options
	}{
		{"development key", func(c string) string { return az.BlobURL(c, "disk.img") }, Options{}},
		{"account SAS", func(c string) string { return az.BlobURL(c, "disk.img") + "?" + acct }, Options{}},
		{"connection string", func(c string) string { return c + "/disk.img" }, Options{ConnectionString: az.ConnectionString()}},
	} {
		container := fresh()
		o := c.o
		o.Getenv, o.Retry, o.CreateSize = noEnv, fastRetry(), 1<<20
		b, err := OpenTarget(ctx, c.loc(container), &o)
		if err != nil {
			t.Fatalf("%s: seeding into a missing container: %v", c.what, err)
		}
		if _, err := b.WriteAt(data, 0); err != nil {
			t.Fatal(err)
		}
		b.Close()
		if !containerExists(t, container) {
			t.Errorf("%s: container %s not created", c.what, container)
		}
		back, err := Open(ctx, az.BlobURL(container, "disk.img"), &Options{Getenv: noEnv})
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, back, 4096); !bytes.Equal(got, data) {
			t.Errorf("%s: the blob differs", c.what)
		}
		back.Close()
	}

	// A SAS for one blob may not create its container: the error names it.
	container := fresh()
	q, _ := azurite.BlobSAS(container, "disk.img", "racwd", time.Hour)
	sig := sigOf(t, q)
	_, err := OpenTarget(ctx, az.BlobURL(container, "disk.img")+"?"+q, &Options{Getenv: noEnv, Retry: fastRetry(), CreateSize: 1 << 20})
	if !errors.Is(err, ErrContainerNotFound) || !errors.Is(err, ErrNotFound) {
		t.Errorf("blob SAS into a missing container: %v, want ErrContainerNotFound", err)
	}
	if err != nil {
		msg := err.Error()
		if !strings.Contains(msg, `"`+container+`"`) || !strings.Contains(msg, "may not create") || !strings.Contains(msg, "sas") {
			t.Errorf("the error does not name the container and why: %s", msg)
		}
		noSecrets(t, "blob SAS", msg, sig)
	}
	if containerExists(t, container) {
		t.Error("the container exists")
	}
	// A source, and a target that must exist (no CreateSize): named too.
	for _, open := range []func(context.Context, string, *Options) (*Blob, error){Open, OpenTarget} {
		_, err := open(ctx, az.BlobURL(container, "disk.img"), &Options{Getenv: noEnv, Retry: fastRetry()})
		if !errors.Is(err, ErrContainerNotFound) || !errors.Is(err, ErrNotFound) || err != nil && !strings.Contains(err.Error(), `"`+container+`"`) {
			t.Errorf("open in a missing container: %v, want ErrContainerNotFound naming %s", err, container)
		}
	}
	// A blob missing from a container that exists is still just that.
	_, err = Open(ctx, az.BlobURL(testContainer, "no-such-blob"), &Options{Getenv: noEnv, Retry: fastRetry()})
	if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrContainerNotFound) {
		t.Errorf("missing blob: %v", err)
	}
}
