package certs

import (
	"net/url"
	"testing"
)

// FuzzParseID feeds arbitrary URIs (a peer's certificate carries whatever it likes) to ParseID: it
// must never panic, and whatever it accepts must be valid and render back to an ID that parses to
// the same thing, so the identity the mesh acts on is the one in the certificate.
func FuzzParseID(f *testing.F) {
	for _, s := range []string{
		"spiffe://mesh.test/cluster/c1/server",
		"spiffe://mesh.test/cluster/c1/agent/",
		"spiffe://mesh.test/cluster/c%2F1/agent",
		"spiffe://mesh.test:1/cluster/c1/agent",
		"spiffe://u@mesh.test/cluster/c1/client?q#f",
		"spiffe:opaque",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := url.Parse(s)
		if err != nil {
			return
		}
		id, err := ParseID(u)
		if err != nil {
			return
		}
		if err := id.Validate(); err != nil {
			t.Fatalf("ParseID(%q) accepted an invalid ID: %v", s, err)
		}
		again, err := ParseID(id.URL())
		if err != nil || again != id {
			t.Fatalf("ParseID(%q) = %v does not round-trip: %v, %v", s, id, again, err)
		}
	})
}

// FuzzParseCertificatesPEM: trust bundles and certificates come from files operators edit.
func FuzzParseCertificatesPEM(f *testing.F) {
	ca, err := NewCA(CAOptions{TrustDomain: "mesh.test"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ca.CertPEM())
	f.Add(append(ca.CertPEM(), ca.CertPEM()...))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParseCertificatesPEM(data)
		if err == nil && len(certs) == 0 {
			t.Fatal("no error and no certificate")
		}
	})
}
