package agent_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/deltasync/deltasync/agent"
	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/transfer"
)

// An agent serves a disk on loopback; a sync from a local file makes it
// identical, sending only the block that differs.
func Example() {
	dir, _ := os.MkdirTemp("", "agent-example-")
	defer os.RemoveAll(dir)
	src := bytes.Repeat([]byte("deltasync"), 1<<17) // 1.1 MiB
	dst := bytes.Clone(src)
	copy(dst[300000:], "changed")
	srcPath, dstPath := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
	os.WriteFile(srcPath, src, 0o644)
	os.WriteFile(dstPath, dst, 0o644)

	// The agent's side: a certificate, a token known by its hash, a disk.
	certPEM, keyPEM, _ := agent.SelfSigned([]string{"127.0.0.1"})
	cert, _ := tls.X509KeyPair(certPEM, keyPEM)
	token, _ := agent.NewToken()
	srv, err := agent.NewServer(agent.ServerOptions{
		Disks:       map[string]string{"vm1-os": dstPath},
		Certificate: cert,
		Tokens:      []agent.Token{{Hash: agent.HashToken(token), Disks: []string{"vm1-os"}}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	defer func() { stop(); <-served }()

	// The client's side: the agent's address, the token, the pin.
	pin, _ := agent.CertificatePin(certPEM)
	c := &agent.Client{Addr: ln.Addr().String(), Token: token, Pin: pin}
	d, err := c.OpenTarget(ctx, "vm1-os")
	if err != nil {
		fmt.Println(err)
		return
	}
	s, _ := localdisk.OpenSource(srcPath, localdisk.SourceOptions{})
	defer s.Close()
	st, err := transfer.Sync(ctx, s, d, &transfer.Options{Verify: true})
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Println(err)
		return
	}
	got, _ := os.ReadFile(dstPath)
	fmt.Printf("wrote %d bytes; verified %v; identical %v\n", st.Written, st.Verified, bytes.Equal(got, src))
	// Output: wrote 65536 bytes; verified true; identical true
}
