package azurite

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"
)

func TestStartStop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s, err := Start(ctx, Options{})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	resp, err := http.Get(s.Endpoint + "?comp=list")
	if err != nil {
		s.Stop()
		t.Fatalf("GET: %v", err)
	}
	resp.Body.Close()
	if err := s.CreateContainer(ctx, "ctr1"); err != nil {
		s.Stop()
		t.Fatal(err)
	}
	if err := s.CreateContainer(ctx, "ctr1"); err != nil { // exists: fine
		s.Stop()
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil { // idempotent
		t.Fatal(err)
	}
	// The whole process group is gone: nothing listens on the port.
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)), time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("port %d still answers after Stop", s.Port)
	}
}

func TestInstallIdempotent(t *testing.T) {
	dir, err := DefaultDir()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := Install(ctx, dir); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := Install(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("second Install took %v: it should find the cached install", d)
	}
	if v := installedVersion(dir); v != Version {
		t.Fatalf("installed %q, want %s", v, Version)
	}
}
