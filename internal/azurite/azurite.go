// Package azurite starts a private Azurite blob emulator for tests.
//
// Azurite is installed from npm, pinned to Version, into a cache directory
// ($DELTASYNC_AZURITE_DIR, or deltasync/azurite under the user's cache
// directory) the first time it is needed, and reused afterwards. Each
// Start runs its own server on a free loopback port with its data in a
// fresh temporary directory, runs the installed azurite-blob program
// directly (not through npx, whose process is not the server), and Stop
// kills its whole process group.
//
// Node.js and npm must be installed. When they are not, Start fails with
// a message that says so: tests that need Azurite must fail, not skip,
// so that CI cannot pass without having run them.
//
// Azurite is looser than Azure in places (see shared/AZURE.md): it
// accepts writes over 4 MiB and past the end of a blob, ignores paging of
// page-range listings and answers a page-range diff with a plain listing.
// Tests that pass against it prove the library's requests are understood,
// not that Azure would accept them.
package azurite

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// Version is the Azurite release installed and run.
	Version = "3.37.0"
	// Account is Azurite's well-known development account.
	Account = "devstoreaccount1"
	// Key is Azurite's well-known development account key. It is public
	// (documented by Microsoft for the emulator) and grants nothing on Azure.
	Key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Options configure Start. The zero value is ready to use.
type Options struct {
	// Dir is where Azurite is installed (DIR/node_modules/.bin/azurite-blob).
	// Default: $DELTASYNC_AZURITE_DIR, else deltasync/azurite in the
	// user's cache directory.
	Dir string
	// Log receives Azurite's standard output and error. Default: kept in
	// memory and shown in the error when the server fails to start.
	Log *os.File
	// StartTimeout bounds the wait for the port to answer. Default 60 s.
	StartTimeout time.Duration
}

// Server is a running Azurite blob service.
type Server struct {
	// Endpoint is the blob service URL of the development account,
	// http://127.0.0.1:PORT/devstoreaccount1.
	Endpoint string
	// Port is the loopback port the server listens on.
	Port int

	cmd     *exec.Cmd
	dataDir string
	out     *lockedBuffer
	done    chan struct{}
	once    sync.Once
	stopErr error
}

// ConnectionString returns a connection string for the development account
// on this server. It contains the (public) development key.
func (s *Server) ConnectionString() string {
	return fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;", Account, Key, s.Endpoint)
}

// BlobURL returns the URL of a blob on this server, without credentials.
func (s *Server) BlobURL(container, blob string) string {
	return s.Endpoint + "/" + container + "/" + blob
}

// DefaultDir returns the installation directory used when Options.Dir is
// empty.
func DefaultDir() (string, error) {
	if d := os.Getenv("DELTASYNC_AZURITE_DIR"); d != "" {
		return d, nil
	}
	c, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("azurite: no cache directory (set DELTASYNC_AZURITE_DIR): %w", err)
	}
	return filepath.Join(c, "deltasync", "azurite"), nil
}

// Install makes sure Azurite Version is installed in dir, installing it
// with npm when it is missing or of another version. Concurrent installs
// (test binaries of several packages) are serialised with a file lock.
func Install(ctx context.Context, dir string) (bin string, err error) {
	bin = filepath.Join(dir, "node_modules", ".bin", "azurite-blob")
	if installedVersion(dir) == Version {
		return bin, nil
	}
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", fmt.Errorf("azurite: %s is not installed; the Azure tests need Node.js and npm "+
				"(Debian: apt-get install -y nodejs npm) to install Azurite %s: %w", tool, Version, err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("azurite: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".install.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("azurite: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("azurite: locking %s: %w", dir, err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if installedVersion(dir) == Version { // installed while we waited
		return bin, nil
	}
	cmd := exec.CommandContext(ctx, "npm", "install", "--no-save", "--no-audit", "--no-fund",
		"--prefix", dir, "azurite@"+Version)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("azurite: npm install azurite@%s into %s failed: %w\n%s", Version, dir, err, tail(out.String(), 4000))
	}
	if v := installedVersion(dir); v != Version {
		return "", fmt.Errorf("azurite: npm installed version %q, want %s", v, Version)
	}
	return bin, nil
}

func installedVersion(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "node_modules", "azurite", "package.json"))
	if err != nil {
		return ""
	}
	var p struct {
		Version string `json:"version"`
	}
	if json.Unmarshal(b, &p) != nil {
		return ""
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", ".bin", "azurite-blob")); err != nil {
		return ""
	}
	return p.Version
}

// Start installs Azurite if needed and starts a blob service on a free
// loopback port. Call Stop when done.
func Start(ctx context.Context, o Options) (*Server, error) {
	dir := o.Dir
	if dir == "" {
		d, err := DefaultDir()
		if err != nil {
			return nil, err
		}
		dir = d
	}
	bin, err := Install(ctx, dir)
	if err != nil {
		return nil, err
	}
	timeout := o.StartTimeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // a free port can be taken before Azurite binds it
		s, err := start(ctx, bin, o, timeout)
		if err == nil {
			return s, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func start(ctx context.Context, bin string, o Options, timeout time.Duration) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("azurite: finding a free port: %w", err)
	}
	dataDir, err := os.MkdirTemp("", "azurite-data-")
	if err != nil {
		return nil, fmt.Errorf("azurite: %w", err)
	}
	cmd := exec.Command(bin,
		"--blobHost", "127.0.0.1",
		"--blobPort", strconv.Itoa(port),
		"--location", dataDir,
		"--skipApiVersionCheck",
		"--disableTelemetry",
		"--silent")
	s := &Server{
		Endpoint: fmt.Sprintf("http://127.0.0.1:%d/%s", port, Account),
		Port:     port,
		cmd:      cmd,
		dataDir:  dataDir,
		out:      &lockedBuffer{},
		done:     make(chan struct{}),
	}
	if o.Log != nil {
		cmd.Stdout, cmd.Stderr = o.Log, o.Log
	} else {
		cmd.Stdout, cmd.Stderr = s.out, s.out
	}
	// Its own process group, so that Stop kills Azurite and anything it
	// spawned; and killed with the test binary if that dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dataDir)
		return nil, fmt.Errorf("azurite: starting %s: %w", bin, err)
	}
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(s.done)
	}()
	if err := s.waitReady(ctx, timeout); err != nil {
		s.Stop()
		select {
		case <-s.done:
			if waitErr != nil {
				err = fmt.Errorf("%w (azurite exited: %v)", err, waitErr)
			}
		default:
		}
		return nil, fmt.Errorf("%w\n%s", err, tail(s.out.String(), 4000))
	}
	return s, nil
}

func (s *Server) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case <-s.done:
			return errors.New("azurite: server exited before answering")
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.Endpoint+"?comp=list", nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			return nil // any answer (403 for an unsigned list) means it is up
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("azurite: port %d did not answer within %v", s.Port, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop kills the server's process group, waits for it to exit and removes
// its data. It may be called more than once.
func (s *Server) Stop() error {
	s.once.Do(func() {
		s.terminate(5 * time.Second)
		s.stopErr = os.RemoveAll(s.dataDir)
	})
	return s.stopErr
}

// terminate sends SIGTERM to the server's process group and, after
// grace, SIGKILL; it returns when the server has exited.
func (s *Server) terminate(grace time.Duration) {
	pid := s.cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(grace):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-s.done
	}
}

// Restart stops the server (SIGTERM, so that Azurite saves its data),
// keeps it down for down, and starts it again on the same port with the
// same data: a service that went away mid-request and came back.
func (s *Server) Restart(ctx context.Context, down time.Duration) error {
	s.terminate(10 * time.Second)
	select {
	case <-time.After(down):
	case <-ctx.Done():
		return ctx.Err()
	}
	cmd := exec.Command(s.cmd.Path, s.cmd.Args[1:]...)
	cmd.Stdout, cmd.Stderr = s.cmd.Stdout, s.cmd.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("azurite: restarting: %w", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	return s.waitReady(ctx, 60*time.Second)
}

// Output returns what the server printed (empty when Options.Log was set).
func (s *Server) Output() string { return s.out.String() }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 { // keep the last MiB or so
		rest := append([]byte(nil), l.b.Bytes()[l.b.Len()-512<<10:]...)
		l.b.Reset()
		l.b.Write(rest)
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
