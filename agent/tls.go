package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// The protocol's names in the TLS handshake, newest first. Version 2 adds
// the agent machine's boot ID to the welcome (Disk.HostBootID); version 3
// the watch and check requests (Disk.Watch, Disk.Check). Both ends offer
// every version, so either speaks with a peer from before it.
const (
	alpn3 = "deltasync-agent/3"
	alpn2 = "deltasync-agent/2"
	alpn1 = "deltasync-agent/1"
)

var alpns = []string{alpn3, alpn2, alpn1}

// SelfSigned returns a new self-signed certificate and its private key,
// both PEM-encoded, for an agent's first run: ECDSA P-256, valid for the
// given host names and IP addresses (at least one) for ten years. A
// client trusts it by pinning it (CertificatePin) or by using it as its
// CA (Client.RootCAs).
func SelfSigned(hosts []string) (certPEM, keyPEM []byte, err error) {
	if len(hosts) == 0 {
		return nil, nil, badOptions("SelfSigned needs at least one host")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "deltasync agent " + hosts[0]},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // so that it can serve as its own CA
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), nil
}

// CertificatePin returns the pin of the first certificate in certPEM: the
// hex SHA-256 of its DER encoding, as Client.Pin takes it.
func CertificatePin(certPEM []byte) (string, error) {
	for {
		var b *pem.Block
		b, certPEM = pem.Decode(certPEM)
		if b == nil {
			return "", errors.New("agent: no CERTIFICATE in the PEM data")
		}
		if b.Type == "CERTIFICATE" {
			sum := sha256.Sum256(b.Bytes)
			return hex.EncodeToString(sum[:]), nil
		}
	}
}

// parsePin accepts a pin as 64 hex digits, optionally prefixed "sha256:"
// and with colons between bytes.
func parsePin(s string) ([]byte, error) {
	s = strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "sha256:")
	s = strings.ReplaceAll(s, ":", "")
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != sha256.Size {
		return nil, badOptions("pin %q is not a SHA-256 in hex", s)
	}
	return b, nil
}

// clientTLS is the TLS configuration of a client connecting to host.
func (c *Client) clientTLS(host string) (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: alpns,
		ServerName: host,
		// Bulk data: full-size records from the first byte.
		DynamicRecordSizingDisabled: true,
		RootCAs:                     c.RootCAs,
	}
	if c.protos != nil {
		cfg.NextProtos = c.protos
	}
	if c.Certificate != nil {
		cfg.Certificates = []tls.Certificate{*c.Certificate}
	}
	if c.Pin != "" {
		pin, err := parsePin(c.Pin)
		if err != nil {
			return nil, err
		}
		if c.RootCAs == nil {
			// The pin alone decides: the chain and names are not checked.
			cfg.InsecureSkipVerify = true
		}
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("agent: the agent sent no certificate")
			}
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if subtle.ConstantTimeCompare(sum[:], pin) != 1 {
				return fmt.Errorf("agent: the agent's certificate (sha256 %x) does not match the pin", sum)
			}
			return nil
		}
	}
	return cfg, nil
}

// serverTLS is the TLS configuration of an agent.
func (s *Server) serverTLS() *tls.Config {
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		NextProtos:   s.o.protos,
		Certificates: []tls.Certificate{s.o.Certificate},
		// Bulk data: full-size records from the first byte.
		DynamicRecordSizingDisabled: true,
	}
	if s.o.ClientCAs != nil {
		cfg.ClientCAs = s.o.ClientCAs
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg
}

// DefaultSocketBuffer is the TCP buffer size aimed at: enough for about
// 100 ms of round trip at 600 Mbit/s.
const DefaultSocketBuffer = 8 << 20

// tuneSocket makes sure a TCP connection's buffers can grow to want
// bytes. Linux grows them by itself (autotuning) up to tcp_rmem and
// tcp_wmem's maximum; setting SO_RCVBUF or SO_SNDBUF turns that off and
// is capped by rmem_max and wmem_max. So a buffer is set only when
// autotuning's maximum is below want; otherwise it is left to grow.
func tuneSocket(c net.Conn, want int) {
	tc, ok := c.(*net.TCPConn)
	if !ok || want <= 0 {
		return
	}
	_ = tc.SetNoDelay(true)
	if sysctlMax("/proc/sys/net/ipv4/tcp_rmem") < want {
		_ = tc.SetReadBuffer(want)
	}
	if sysctlMax("/proc/sys/net/ipv4/tcp_wmem") < want {
		_ = tc.SetWriteBuffer(want)
	}
}

// sysctlMax reads the last number of a sysctl file (the maximum of
// tcp_rmem, "min default max"); 0 when it cannot.
func sysctlMax(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[len(f)-1])
	return n
}
