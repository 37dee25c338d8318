package certs

import (
	"crypto/x509"
	"fmt"
	"os"
	"time"
)

// Description is what `palisade certs show` prints about one certificate.
type Description struct {
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	Serial    string    `json:"serial"`
	IsCA      bool      `json:"isCA"`
	SPIFFEID  string    `json:"spiffeID,omitempty"`
	URIs      []string  `json:"uris,omitempty"`
	DNSNames  []string  `json:"dnsNames,omitempty"`
	IPs       []string  `json:"ips,omitempty"`
	Usages    []string  `json:"usages,omitempty"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	// Status is "valid", "expired" or "not yet valid" at the time of Describe.
	Status string `json:"status"`
}

// Describe summarizes cert as of now.
func Describe(cert *x509.Certificate, now time.Time) Description {
	d := Description{
		Subject:   cert.Subject.String(),
		Issuer:    cert.Issuer.String(),
		Serial:    fmt.Sprintf("%x", cert.SerialNumber),
		IsCA:      cert.IsCA,
		NotBefore: cert.NotBefore.UTC(),
		NotAfter:  cert.NotAfter.UTC(),
		Status:    "valid",
	}
	for _, u := range cert.URIs {
		d.URIs = append(d.URIs, u.String())
		if id, err := ParseID(u); err == nil {
			d.SPIFFEID = id.String()
		}
	}
	d.DNSNames = cert.DNSNames
	for _, ip := range cert.IPAddresses {
		d.IPs = append(d.IPs, ip.String())
	}
	for _, u := range cert.ExtKeyUsage {
		switch u {
		case x509.ExtKeyUsageServerAuth:
			d.Usages = append(d.Usages, "server auth")
		case x509.ExtKeyUsageClientAuth:
			d.Usages = append(d.Usages, "client auth")
		default:
			d.Usages = append(d.Usages, fmt.Sprintf("ext key usage %d", u))
		}
	}
	if cert.IsCA {
		d.Usages = append(d.Usages, "certificate signing")
	}
	switch {
	case now.Before(cert.NotBefore):
		d.Status = "not yet valid"
	case now.After(cert.NotAfter):
		d.Status = "expired"
	}
	return d
}

// DescribeFile describes every certificate in a PEM file (a leaf or a trust bundle).
func DescribeFile(path string, now time.Time) ([]Description, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("show certificates: %w", err)
	}
	certs, err := ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("show certificates in %s: %w", path, err)
	}
	out := make([]Description, 0, len(certs))
	for _, c := range certs {
		out = append(out, Describe(c, now))
	}
	return out, nil
}
