package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// IssueOptions say whom a certificate is for.
type IssueOptions struct {
	// Cluster is the holder's cluster name; required.
	Cluster string
	// Role is what the holder does; required.
	Role Role
	// DNSNames and IPs are extra SANs, for clients that check host names (ours check the URI).
	// A server certificate always also gets DefaultServerDNSName.
	DNSNames []string
	IPs      []net.IP
	// Validity of the certificate. Default DefaultCertValidity. It may not outlast the CA.
	Validity time.Duration
	// NotBefore is the start of validity. Default: now minus five minutes of clock skew.
	NotBefore time.Time
}

// Issued is a freshly issued certificate and its key.
type Issued struct {
	ID      ID
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
	KeyPEM  []byte
}

// DefaultServerDNSName is the DNS SAN every mesh API server certificate carries, so a client that
// dials by address can set it as the TLS server name.
func DefaultServerDNSName(id ID) string {
	return "mesh-apiserver." + id.Cluster + "." + id.TrustDomain
}

// Issue signs a certificate for opts.Cluster in opts.Role with a fresh P-256 key. Server
// certificates are for server authentication, client and agent certificates for client
// authentication; mixing them up fails the peer's key-usage check.
func (ca *CA) Issue(opts IssueOptions) (*Issued, error) {
	id := ID{TrustDomain: ca.TrustDomain, Cluster: opts.Cluster, Role: opts.Role}
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("issue certificate: %w", err)
	}
	if opts.Validity == 0 {
		opts.Validity = DefaultCertValidity
	}
	if opts.Validity < 0 {
		return nil, fmt.Errorf("issue certificate for %s: validity %s is negative", id, opts.Validity)
	}
	if opts.NotBefore.IsZero() {
		opts.NotBefore = time.Now().Add(-clockSkew)
	}
	notAfter := opts.NotBefore.Add(opts.Validity)
	if notAfter.After(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("issue certificate for %s: it would expire %s, after the CA (%s); shorten --validity or rotate the CA",
			id, notAfter.UTC().Format(time.RFC3339), ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	dnsNames := append([]string(nil), opts.DNSNames...)
	usage := x509.ExtKeyUsageClientAuth
	if opts.Role == RoleServer {
		usage = x509.ExtKeyUsageServerAuth
		dnsNames = appendMissing(dnsNames, DefaultServerDNSName(id))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: generate key: %w", id, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", id, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: opts.Cluster + " " + string(opts.Role), Organization: []string{"palisade"}, OrganizationalUnit: []string{ca.TrustDomain}},
		NotBefore:    opts.NotBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		URIs:         []*url.URL{id.URL()},
		DNSNames:     dnsNames,
		IPAddresses:  opts.IPs,
		SubjectKeyId: keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: sign: %w", id, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: parse: %w", id, err)
	}
	keyPEM, err := EncodeKeyPEM(key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", id, err)
	}
	return &Issued{ID: id, Cert: cert, Key: key, CertPEM: EncodeCertificatePEM(der), KeyPEM: keyPEM}, nil
}

// LeafPaths are the files Issued.Write creates in a directory.
type LeafPaths struct {
	Cert, Key, CA string
}

// PathsFor names the files of a cluster's certificate in dir: <cluster>-<role>.crt and .key,
// next to the trust bundle ca.crt.
func PathsFor(dir, cluster string, role Role) LeafPaths {
	base := filepath.Join(dir, cluster+"-"+string(role))
	return LeafPaths{Cert: base + ".crt", Key: base + ".key", CA: filepath.Join(dir, CACertFile)}
}

// Write stores the certificate (0644), its key (0600) and the CA bundle caPEM (0644) in dir. Without
// force it refuses to replace different existing files and writes nothing. An existing bundle
// that already holds every CA of caPEM is left alone, even with force: during a CA rotation it
// holds the old CA too, and re-issuing must not drop it.
func (is *Issued) Write(dir string, caPEM []byte, force bool) (LeafPaths, error) {
	p := PathsFor(dir, is.ID.Cluster, is.ID.Role)
	files := []File{
		{Path: p.Key, Data: is.KeyPEM, Mode: 0o600},
		{Path: p.Cert, Data: is.CertPEM, Mode: 0o644},
	}
	if !bundleCovers(p.CA, caPEM) {
		files = append(files, File{Path: p.CA, Data: caPEM, Mode: 0o644})
	}
	if err := WriteFiles(files, force); err != nil {
		return LeafPaths{}, fmt.Errorf("write certificate for %s: %w", is.ID, err)
	}
	return p, nil
}

// bundleCovers reports whether the bundle file at path already trusts every CA in caPEM.
func bundleCovers(path string, caPEM []byte) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	have, err := ParseCertificatesPEM(data)
	if err != nil {
		return false
	}
	want, err := ParseCertificatesPEM(caPEM)
	if err != nil {
		return false
	}
	for _, w := range want {
		if !slices.ContainsFunc(have, w.Equal) {
			return false
		}
	}
	return true
}

func appendMissing(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}
