package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strings"
	"time"

	"github.com/deltasync/deltasync/agent"
	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/localdisk"
)

// A disk served by an agent is named agent://HOST:PORT/DISK as SRC or DST.
// The token comes from DELTASYNC_AGENT_TOKEN or -agent-token-file, never
// from the command line (it would show in ps); the agent's certificate is
// checked against -agent-ca or -agent-pin.

const agentUsage = `usage:
  deltasync agent -listen HOST:PORT -disk NAME=PATH [-disk ...] -cert FILE -key FILE -token-file FILE [-client-ca FILE]
      serve the named disks (files or block devices) to authenticated clients over TLS
  deltasync agent cert -hosts HOST[,HOST...] -cert FILE -key FILE
      write a self-signed certificate and its key; print its pin (-agent-pin for clients)
  deltasync agent token -disks NAME[,NAME...|*] [-ttl DURATION] [-token-file FILE]
      print a new token on stdout; append its hash, disks and expiry to the token file

Clients name a served disk agent://HOST:PORT/NAME, with the token in
DELTASYNC_AGENT_TOKEN or -agent-token-file, and -agent-pin or -agent-ca.
Writes to an agent are pipelined; a sync onto one saves its journal once the
agent has applied the writes before it. When a writing session ends without
its run finishing (Ctrl-C, a dropped connection, a killed client), the agent
applies what it received, flushes the disk and records its evidence (file
identity and ctime, or a device's write counters), and refuses a new writer
on that disk until that is done; a rerun resumes from its last save only if
the agent still holds that evidence and the disk has not changed since. The
evidence lives in the agent's memory: after the agent restarts (or its
machine reboots) a rerun compares everything again. -fsync checkpoint
flushes the agent's disk before every save instead.
`

// agentFlags are the flags of seed and sync for agent:// disks.
type agentFlags struct {
	tokenFile, ca, pin, cert, key string
}

func (af *agentFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&af.tokenFile, "agent-token-file", "", "agent:// disks: file holding the bearer token (default: $DELTASYNC_AGENT_TOKEN)")
	fs.StringVar(&af.ca, "agent-ca", "", "agent:// disks: PEM file of the CA(s) that signed the agent's certificate")
	fs.StringVar(&af.pin, "agent-pin", "", "agent:// disks: SHA-256 of the agent's certificate (printed by 'deltasync agent')")
	fs.StringVar(&af.cert, "agent-cert", "", "agent:// disks: client certificate (PEM) for an agent using mutual TLS")
	fs.StringVar(&af.key, "agent-key", "", "agent:// disks: key of -agent-cert")
}

// isAgentURL tells an agent:// disk from a path.
func isAgentURL(arg string) bool { return strings.HasPrefix(arg, "agent://") }

// openAgent opens an agent:// disk as a source or a target. Writes to an
// agent are pipelined; transfer waits until the agent has applied them
// before every journal save (the disk is a disk.WriteBehind and
// disk.AppliedBarrier).
func openAgent(arg string, rf *runFlags, write bool) (*agent.Disk, error) {
	addr, name, err := agent.ParseURL(arg)
	if err != nil {
		return nil, err
	}
	c, err := rf.agent.client(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if write {
		return c.OpenTarget(ctx, name)
	}
	return c.OpenSource(ctx, name)
}

// client builds the agent client from the flags and the environment.
func (af *agentFlags) client(addr string) (*agent.Client, error) {
	c := &agent.Client{Addr: addr, Pin: af.pin, Token: os.Getenv("DELTASYNC_AGENT_TOKEN")}
	if af.tokenFile != "" {
		b, err := os.ReadFile(af.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("-agent-token-file: %w", err)
		}
		c.Token = strings.TrimSpace(string(b))
	}
	if af.ca != "" {
		b, err := os.ReadFile(af.ca)
		if err != nil {
			return nil, fmt.Errorf("-agent-ca: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("-agent-ca %s: no PEM certificate", af.ca)
		}
	}
	if (af.cert == "") != (af.key == "") {
		return nil, errors.New("-agent-cert and -agent-key go together")
	}
	if af.cert != "" {
		cert, err := tls.LoadX509KeyPair(af.cert, af.key)
		if err != nil {
			return nil, fmt.Errorf("-agent-cert: %w", err)
		}
		c.Certificate = &cert
	}
	if c.Token == "" && c.Certificate == nil {
		return nil, errors.New("agent:// disk: no token (set DELTASYNC_AGENT_TOKEN or -agent-token-file) and no -agent-cert")
	}
	if c.Pin == "" && c.RootCAs == nil {
		fmt.Fprintln(os.Stderr, "deltasync: no -agent-pin or -agent-ca: the agent's certificate is checked against the system's roots")
	}
	return c, nil
}

// diskList is the repeatable -disk NAME=PATH flag.
type diskList map[string]string

func (d diskList) String() string { return fmt.Sprint(map[string]string(d)) }

func (d diskList) Set(v string) error {
	name, path, ok := strings.Cut(v, "=")
	if !ok || path == "" || !agent.ValidDiskName(name) {
		return fmt.Errorf("want NAME=PATH with NAME of letters, digits, '.', '_', '-', got %q", v)
	}
	if _, dup := d[name]; dup {
		return fmt.Errorf("disk %q given twice", name)
	}
	d[name] = path
	return nil
}

// cmdAgent runs 'deltasync agent' and its helpers.
func cmdAgent(ctx context.Context, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "cert":
			return cmdAgentCert(args[1:])
		case "token":
			return cmdAgentToken(args[1:])
		}
	}
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), agentUsage); fs.PrintDefaults() }
	disks := diskList{}
	listen := fs.String("listen", "", "address to listen on, HOST:PORT (port 0: any; the address is printed)")
	fs.Var(disks, "disk", "NAME=PATH of a file or block device to serve (repeat for more)")
	certFile := fs.String("cert", "", "TLS certificate (PEM), e.g. from 'deltasync agent cert'")
	keyFile := fs.String("key", "", "its private key (PEM)")
	tokenFile := fs.String("token-file", "", "accepted tokens: lines 'sha256:HEX DISKS [EXPIRY]' (see 'deltasync agent token')")
	clientCA := fs.String("client-ca", "", "PEM file of CAs: require a client certificate signed by one (mutual TLS)")
	allowLive := fs.Bool("allow-live", false, "serve source sessions of disks that are mounted or being written (crash-inconsistent)")
	zeroMode := fs.String("zero-mode", "punch", "how file targets clear zero ranges: punch, zero-range, write")
	quiet := fs.Bool("quiet", false, "log nothing but errors")
	hashConc := fs.Int("hash-concurrency", 0, "workers hashing a disk for a client (0: the default, max(4, CPUs))")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if *listen == "" || len(disks) == 0 || *certFile == "" || *keyFile == "" || len(pos) != 0 {
		return usagef("agent", "want -listen, at least one -disk, -cert and -key, and no arguments")
	}
	if *tokenFile == "" && *clientCA == "" {
		return usagef("agent", "want -token-file, -client-ca or both: an agent never serves unauthenticated clients")
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		return fmt.Errorf("-cert/-key: %w", err)
	}
	certPEM, err := os.ReadFile(*certFile)
	if err != nil {
		return err
	}
	pin, err := agent.CertificatePin(certPEM)
	if err != nil {
		return err
	}
	if *hashConc < 0 {
		return fmt.Errorf("-hash-concurrency %d: want 0 (the default) or more", *hashConc)
	}
	o := agent.ServerOptions{Disks: disks, Certificate: cert, AllowLive: *allowLive, HashConcurrency: *hashConc}
	var rf runFlags
	rf.zeroMode, rf.cmd = *zeroMode, "agent"
	if o.ZeroMode, err = rf.zero(); err != nil {
		return err
	}
	if *tokenFile != "" {
		f, err := os.Open(*tokenFile)
		if err != nil {
			return fmt.Errorf("-token-file: %w", err)
		}
		o.Tokens, err = agent.ParseTokens(f)
		f.Close()
		if err != nil {
			return err
		}
		if len(o.Tokens) == 0 && *clientCA == "" {
			return fmt.Errorf("-token-file %s holds no token", *tokenFile)
		}
	}
	if *clientCA != "" {
		b, err := os.ReadFile(*clientCA)
		if err != nil {
			return fmt.Errorf("-client-ca: %w", err)
		}
		o.ClientCAs = x509.NewCertPool()
		if !o.ClientCAs.AppendCertsFromPEM(b) {
			return fmt.Errorf("-client-ca %s: no PEM certificate", *clientCA)
		}
	}
	lg := log.New(os.Stderr, "", log.LstdFlags)
	if !*quiet {
		o.Logf = lg.Printf
	}
	// Check the disks now rather than at the first client.
	for name, p := range disks {
		d, err := localdisk.OpenSource(p, localdisk.SourceOptions{AllowLive: true})
		if err != nil {
			return fmt.Errorf("-disk %s: %w", name, err)
		}
		d.Close()
	}
	srv, err := agent.NewServer(o)
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := listenTCP(ctx, *listen)
	if err != nil {
		return err
	}
	// One line a script can read: the address (with the port chosen) and
	// the certificate's pin.
	lg.Printf("deltasync agent: listening on %s (certificate sha256 %s), %d disks", ln.Addr(), pin, len(disks))
	return srv.Serve(ctx, ln)
}

// cmdAgentCert writes a self-signed certificate and key.
func cmdAgentCert(args []string) error {
	fs := flag.NewFlagSet("agent cert", flag.ContinueOnError)
	hosts := fs.String("hosts", "", "host names and IP addresses the certificate is for, comma-separated")
	certFile := fs.String("cert", "", "certificate file to write (PEM)")
	keyFile := fs.String("key", "", "key file to write (PEM, mode 0600)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: deltasync agent cert -hosts HOST[,HOST...] -cert FILE -key FILE\n"+
			"write a self-signed certificate and its key; print its pin (-agent-pin for clients)")
		fs.PrintDefaults()
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if *hosts == "" || *certFile == "" || *keyFile == "" || len(pos) != 0 {
		return usagef("agent cert", "want -hosts, -cert and -key, and no arguments")
	}
	certPEM, keyPEM, err := agent.SelfSigned(strings.Split(*hosts, ","))
	if err != nil {
		return err
	}
	if err := writeNew(*keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	if err := writeNew(*certFile, certPEM, 0o644); err != nil {
		return err
	}
	pin, err := agent.CertificatePin(certPEM)
	if err != nil {
		return err
	}
	fmt.Println(pin)
	return nil
}

// cmdAgentToken makes a token.
func cmdAgentToken(args []string) error {
	fs := flag.NewFlagSet("agent token", flag.ContinueOnError)
	disks := fs.String("disks", "", "disk names the token opens, comma-separated, or * for all")
	ttl := fs.Duration("ttl", 0, "how long the token is valid (0: no expiry)")
	tokenFile := fs.String("token-file", "", "append the token's line to this file (created with mode 0600); default: print it on stderr")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: deltasync agent token -disks NAME[,NAME...|*] [-ttl DURATION] [-token-file FILE]\n"+
			"print a new token on stdout; append its hash, disks and expiry to the token file")
		fs.PrintDefaults()
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if *disks == "" || len(pos) != 0 {
		return usagef("agent token", "want -disks, and no arguments")
	}
	if *ttl < 0 {
		return usagef("agent token", "-ttl %v: want a positive duration, or 0 for no expiry", *ttl)
	}
	tok, err := agent.NewToken()
	if err != nil {
		return err
	}
	t := agent.Token{Hash: agent.HashToken(tok), Disks: strings.Split(*disks, ",")}
	if *ttl > 0 {
		t.Expires = time.Now().Add(*ttl).Truncate(time.Second)
	}
	line := agent.FormatToken(t)
	if _, err := agent.ParseTokens(strings.NewReader(line)); err != nil {
		return err
	}
	if *tokenFile == "" {
		fmt.Fprintln(os.Stderr, line)
	} else {
		f, err := os.OpenFile(*tokenFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return err
		}
		_, err = io.WriteString(f, line+"\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	fmt.Println(tok)
	return nil
}

// writeNew writes a file that must not exist yet.
func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// listenTCP listens with TCP keep-alives, so that a client that vanished
// is noticed and its disk released.
func listenTCP(ctx context.Context, addr string) (net.Listener, error) {
	return (&net.ListenConfig{KeepAlive: 15 * time.Second}).Listen(ctx, "tcp", addr)
}

// An agent disk is a source and a target of the command.
var (
	_ opened      = (*agent.Disk)(nil)
	_ disk.Source = (*agent.Disk)(nil)
)
