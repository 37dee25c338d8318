package meshtls

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/palisade-mesh/palisade/certs"
)

// Reasons a peer certificate is rejected; match them with errors.Is. The error text adds the
// specifics (dates, names, the issuer).
var (
	ErrNoCertificate    = errors.New("peer presented no certificate")
	ErrExpired          = errors.New("certificate expired")
	ErrNotYetValid      = errors.New("certificate not yet valid")
	ErrUnknownCA        = errors.New("certificate signed by a CA this cluster does not trust")
	ErrWrongUsage       = errors.New("certificate not issued for this use")
	ErrNoSPIFFEID       = certs.ErrNoID
	ErrInvalidSPIFFEID  = certs.ErrNotSPIFFE
	ErrWrongTrustDomain = errors.New("certificate belongs to another trust domain")
	ErrWrongCluster     = errors.New("certificate names another cluster")
	ErrWrongRole        = errors.New("certificate has a role not allowed here")
)

// Expectation is what a peer certificate must satisfy.
type Expectation struct {
	// TrustDomain the peer's SPIFFE ID must be in.
	TrustDomain string
	// Cluster the peer's SPIFFE ID must name; empty accepts any cluster.
	Cluster string
	// Roles the peer may have.
	Roles []certs.Role
	// Usage the certificate must allow: server auth when verifying a server, client auth for a client.
	Usage x509.ExtKeyUsage
}

// VerifyPeer checks a peer's chain (leaf first, as crypto/tls hands it over) against the trusted
// CAs at time now and returns the peer's ID. Dates are checked first so an expired certificate is
// reported as expired rather than as untrusted; nothing in the certificate is believed before the
// chain verifies.
func VerifyPeer(chain []*x509.Certificate, roots *x509.CertPool, want Expectation, now time.Time) (certs.ID, error) {
	if len(chain) == 0 {
		return certs.ID{}, ErrNoCertificate
	}
	leaf := chain[0]
	name := describeLeaf(leaf)
	if now.Before(leaf.NotBefore) {
		return certs.ID{}, fmt.Errorf("%w: %s is valid from %s to %s, but it is now %s", ErrNotYetValid,
			name, stamp(leaf.NotBefore), stamp(leaf.NotAfter), stamp(now))
	}
	if now.After(leaf.NotAfter) {
		return certs.ID{}, fmt.Errorf("%w: %s expired at %s (valid from %s); it is now %s", ErrExpired,
			name, stamp(leaf.NotAfter), stamp(leaf.NotBefore), stamp(now))
	}
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{want.Usage},
	})
	if err != nil {
		return certs.ID{}, explainChainError(name, leaf, err)
	}
	id, err := certs.LeafID(leaf)
	if err != nil {
		return certs.ID{}, err
	}
	if id.TrustDomain != want.TrustDomain {
		return certs.ID{}, fmt.Errorf("%w: %s is in trust domain %q, want %q", ErrWrongTrustDomain, id, id.TrustDomain, want.TrustDomain)
	}
	if want.Cluster != "" && id.Cluster != want.Cluster {
		return certs.ID{}, fmt.Errorf("%w: %s names cluster %q, but %q was expected", ErrWrongCluster, id, id.Cluster, want.Cluster)
	}
	if !slices.Contains(want.Roles, id.Role) {
		return certs.ID{}, fmt.Errorf("%w: %s has role %q, want one of %v", ErrWrongRole, id, id.Role, want.Roles)
	}
	return id, nil
}

func explainChainError(name string, leaf *x509.Certificate, err error) error {
	var unknown x509.UnknownAuthorityError
	if errors.As(err, &unknown) {
		return fmt.Errorf("%w: %s is issued by %q, which is not in the mesh CA bundle", ErrUnknownCA, name, leaf.Issuer)
	}
	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) {
		switch invalid.Reason {
		case x509.Expired:
			// The leaf's dates were fine, so it is the CA that is out of its validity.
			return fmt.Errorf("%w: the CA that issued %s (%q): %s", ErrExpired, name, leaf.Issuer, invalid.Detail)
		case x509.IncompatibleUsage:
			return fmt.Errorf("%w: %s allows %s, not what this side needs", ErrWrongUsage, name, usages(leaf))
		}
	}
	return fmt.Errorf("verify %s: %w", name, err)
}

// describeLeaf names a certificate in errors by its URI when it has one (still unverified, so only
// for the message), else by its subject.
func describeLeaf(c *x509.Certificate) string {
	if len(c.URIs) > 0 {
		return fmt.Sprintf("certificate %s", c.URIs[0])
	}
	return fmt.Sprintf("certificate %q", c.Subject)
}

func usages(c *x509.Certificate) string {
	var out []string
	for _, u := range c.ExtKeyUsage {
		switch u {
		case x509.ExtKeyUsageServerAuth:
			out = append(out, "server auth")
		case x509.ExtKeyUsageClientAuth:
			out = append(out, "client auth")
		default:
			out = append(out, fmt.Sprint(u))
		}
	}
	if len(out) == 0 {
		return "no extended usage"
	}
	return strings.Join(out, ", ")
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
