package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// File names inside a CA directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// Defaults for validity periods.
const (
	// DefaultCAValidity is five years: rotating a CA touches every cluster, so it should be rare.
	DefaultCAValidity = 5 * 365 * 24 * time.Hour
	// DefaultCertValidity is one year; certificates are cheap to reissue and reloaded without restarts.
	DefaultCertValidity = 365 * 24 * time.Hour
	// clockSkew back-dates NotBefore so a peer whose clock runs a little behind accepts a fresh certificate.
	clockSkew = 5 * time.Minute
)

// CA is the mesh certificate authority: a self-signed ECDSA P-256 certificate carrying the trust
// domain as spiffe://<trust-domain>, and its key.
type CA struct {
	Cert        *x509.Certificate
	Key         *ecdsa.PrivateKey
	TrustDomain string
}

// CAOptions configure NewCA.
type CAOptions struct {
	// TrustDomain names the mesh (for example "mesh.example.org"); required.
	TrustDomain string
	// Validity of the CA certificate. Default DefaultCAValidity.
	Validity time.Duration
	// NotBefore is the start of validity. Default: now minus five minutes of clock skew.
	NotBefore time.Time
}

// NewCA creates a CA with a fresh key.
func NewCA(opts CAOptions) (*CA, error) {
	if err := ValidateTrustDomain(opts.TrustDomain); err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	if opts.Validity == 0 {
		opts.Validity = DefaultCAValidity
	}
	if opts.Validity < 0 {
		return nil, fmt.Errorf("create CA: validity %s is negative", opts.Validity)
	}
	if opts.NotBefore.IsZero() {
		opts.NotBefore = time.Now().Add(-clockSkew)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("create CA: generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "palisade mesh CA " + opts.TrustDomain, Organization: []string{"palisade"}},
		NotBefore:             opts.NotBefore,
		NotAfter:              opts.NotBefore.Add(opts.Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// Leaves only: an intermediate signed by this CA would be a second way into the mesh.
		MaxPathLen:     0,
		MaxPathLenZero: true,
		SubjectKeyId:   keyID(&key.PublicKey),
		URIs:           []*url.URL{TrustDomainURL(opts.TrustDomain)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA: sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("create CA: parse: %w", err)
	}
	return &CA{Cert: cert, Key: key, TrustDomain: opts.TrustDomain}, nil
}

// CertPEM is the CA certificate in PEM, the trust bundle every cluster needs.
func (ca *CA) CertPEM() []byte { return EncodeCertificatePEM(ca.Cert.Raw) }

// Write stores ca.crt (0644) and ca.key (0600) in dir; without force it refuses to replace
// different existing files.
func (ca *CA) Write(dir string, force bool) error {
	keyPEM, err := EncodeKeyPEM(ca.Key)
	if err != nil {
		return fmt.Errorf("write CA to %s: %w", dir, err)
	}
	err = WriteFiles([]File{
		{Path: filepath.Join(dir, CACertFile), Data: ca.CertPEM(), Mode: 0o644},
		{Path: filepath.Join(dir, CAKeyFile), Data: keyPEM, Mode: 0o600},
	}, force)
	if err != nil {
		return fmt.Errorf("write CA to %s: %w", dir, err)
	}
	return nil
}

// LoadCA reads ca.crt and ca.key from dir and checks that they belong together and form a CA of
// a trust domain.
func LoadCA(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	certs, err := ParseCertificatesPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA %s: %w", certPath, err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA key %s: %w", keyPath, err)
	}
	cert := certs[0]
	if !cert.IsCA {
		return nil, fmt.Errorf("load CA %s: certificate %q is not a CA", certPath, cert.Subject)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("load CA: key %s does not belong to certificate %s", keyPath, certPath)
	}
	td, err := CATrustDomain(cert)
	if err != nil {
		return nil, fmt.Errorf("load CA %s: %w", certPath, err)
	}
	return &CA{Cert: cert, Key: key, TrustDomain: td}, nil
}

// CATrustDomain returns the trust domain a CA certificate carries as its spiffe://<td> URI.
func CATrustDomain(cert *x509.Certificate) (string, error) {
	for _, u := range cert.URIs {
		if u.Scheme == "spiffe" && (u.Path == "" || u.Path == "/") {
			if err := ValidateTrustDomain(u.Host); err != nil {
				return "", err
			}
			return u.Host, nil
		}
	}
	return "", errors.New("CA certificate carries no spiffe://<trust-domain> URI")
}

func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return serial, nil
}

// keyID is a subject key identifier: the truncated SHA-256 of the public key's DER encoding.
func keyID(pub *ecdsa.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil // x509 computes one itself when this is empty
	}
	sum := sha256.Sum256(der)
	return sum[:20]
}
