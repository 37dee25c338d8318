package certs

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Role says what a certificate's holder does in the mesh.
type Role string

const (
	// RoleServer is a cluster's mesh API server.
	RoleServer Role = "server"
	// RoleClient is a tool or operator that reads a remote cluster's mesh API.
	RoleClient Role = "client"
	// RoleAgent is a node agent that watches remote clusters through their mesh API servers.
	RoleAgent Role = "agent"
)

// Roles lists the valid roles in the order the CLI shows them.
var Roles = []Role{RoleServer, RoleClient, RoleAgent}

// ParseRole checks that s names a role.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("unknown role %q (valid: server, client, agent)", s)
}

// ErrNotSPIFFE is returned by ParseID for a URI that is not a Palisade SPIFFE ID.
var ErrNotSPIFFE = errors.New("not a palisade SPIFFE ID")

// ID is the identity a certificate carries: spiffe://<TrustDomain>/cluster/<Cluster>/<Role>.
type ID struct {
	TrustDomain string
	Cluster     string
	Role        Role
}

// String renders the ID as the URI that goes into the certificate.
func (id ID) String() string {
	return "spiffe://" + id.TrustDomain + "/cluster/" + id.Cluster + "/" + string(id.Role)
}

// URL is String as a *url.URL, the form x509 templates take.
func (id ID) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/cluster/" + id.Cluster + "/" + string(id.Role)}
}

// Validate checks every part of the ID.
func (id ID) Validate() error {
	if err := ValidateTrustDomain(id.TrustDomain); err != nil {
		return err
	}
	if err := ValidateClusterName(id.Cluster); err != nil {
		return err
	}
	if _, err := ParseRole(string(id.Role)); err != nil {
		return err
	}
	return nil
}

// TrustDomainURL is the URI the CA certificate carries: spiffe://<trust-domain>.
func TrustDomainURL(td string) *url.URL { return &url.URL{Scheme: "spiffe", Host: td} }

// ParseID parses spiffe://<trust-domain>/cluster/<name>/<role> strictly: no port, user, query or
// fragment, and every part valid.
func ParseID(u *url.URL) (ID, error) {
	if u.Scheme != "spiffe" {
		return ID{}, fmt.Errorf("%w: %q: scheme is %q, want spiffe", ErrNotSPIFFE, u.String(), u.Scheme)
	}
	if u.User != nil || u.Port() != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return ID{}, fmt.Errorf("%w: %q: SPIFFE IDs carry no user, port, query or fragment", ErrNotSPIFFE, u.String())
	}
	parts := strings.Split(strings.TrimPrefix(u.EscapedPath(), "/"), "/")
	if len(parts) != 3 || parts[0] != "cluster" {
		return ID{}, fmt.Errorf("%w: %q: path must be /cluster/<name>/<role>", ErrNotSPIFFE, u.String())
	}
	id := ID{TrustDomain: u.Host, Cluster: parts[1], Role: Role(parts[2])}
	if err := id.Validate(); err != nil {
		return ID{}, fmt.Errorf("%w: %q: %w", ErrNotSPIFFE, u.String(), err)
	}
	return id, nil
}

var (
	// SPIFFE trust domains are lower-case letters, digits, dots, dashes and underscores.
	trustDomainRE = regexp.MustCompile(`^[a-z0-9._-]+$`)
	// Cluster names end up in DNS names and etcd keys, so they follow DNS label rules.
	clusterNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
)

// ValidateTrustDomain checks a SPIFFE trust domain name.
func ValidateTrustDomain(td string) error {
	if td == "" {
		return errors.New("trust domain is empty")
	}
	if len(td) > 255 || !trustDomainRE.MatchString(td) {
		return fmt.Errorf("trust domain %q is invalid: use at most 255 lower-case letters, digits, '.', '-' or '_'", td)
	}
	return nil
}

// ValidateClusterName checks a cluster name: a DNS label of at most 63 characters.
func ValidateClusterName(name string) error {
	if name == "" {
		return errors.New("cluster name is empty")
	}
	if len(name) > 63 || !clusterNameRE.MatchString(name) {
		return fmt.Errorf("cluster name %q is invalid: use at most 63 lower-case letters, digits or '-', starting and ending with a letter or digit", name)
	}
	return nil
}

// ErrNoID is returned by LeafID for a certificate without exactly one URI SAN.
var ErrNoID = errors.New("certificate carries no SPIFFE ID")

// LeafID returns the ID of a mesh certificate, which must carry exactly one URI SAN, a valid
// spiffe://<trust-domain>/cluster/<name>/<role>.
func LeafID(cert *x509.Certificate) (ID, error) {
	switch len(cert.URIs) {
	case 0:
		return ID{}, fmt.Errorf("%w: certificate %q has no URI SAN, want spiffe://<trust-domain>/cluster/<name>/<role>", ErrNoID, cert.Subject)
	case 1:
		return ParseID(cert.URIs[0])
	default:
		return ID{}, fmt.Errorf("%w: certificate %q has %d URI SANs, want exactly one", ErrNoID, cert.Subject, len(cert.URIs))
	}
}
