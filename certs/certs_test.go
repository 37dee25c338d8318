package certs

import (
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCA_WriteRefusesToOverwriteWithoutForce(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA(CAOptions{TrustDomain: "mesh.test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Write(dir, false); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode %v, want 0600", fi.Mode().Perm())
	}
	before, _ := os.ReadFile(filepath.Join(dir, CAKeyFile))

	other, err := NewCA(CAOptions{TrustDomain: "mesh.test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Write(dir, false); !errors.Is(err, ErrExists) {
		t.Fatalf("second Write: %v, want ErrExists", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if string(before) != string(after) {
		t.Fatal("refused Write changed the key file")
	}
	if err := other.Write(dir, true); err != nil {
		t.Fatalf("forced Write: %v", err)
	}
	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(other.Cert) || loaded.TrustDomain != "mesh.test" {
		t.Fatal("forced Write did not replace the CA")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("CA dir holds %d files, want 2 (no temporary files left)", len(entries))
	}
}

func TestLoadCA_RejectsKeyOfAnotherCA(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, d := range []string{a, b} {
		ca, err := NewCA(CAOptions{TrustDomain: "mesh.test"})
		if err != nil {
			t.Fatal(err)
		}
		if err := ca.Write(d, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(filepath.Join(b, CAKeyFile), filepath.Join(a, CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(a); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Fatalf("LoadCA with a foreign key: %v", err)
	}
}

func TestCA_IssueCarriesIDSANsAndUsage(t *testing.T) {
	ca, err := NewCA(CAOptions{TrustDomain: "mesh.test"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		role      Role
		dns       []string
		wantDNS   []string
		wantUsage string
	}{
		{role: RoleServer, dns: []string{"mesh.c1.example"}, wantDNS: []string{"mesh.c1.example", "mesh-apiserver.c1.mesh.test"}, wantUsage: "server auth"},
		{role: RoleAgent, wantUsage: "client auth"},
		{role: RoleClient, dns: []string{"ops.example"}, wantDNS: []string{"ops.example"}, wantUsage: "client auth"},
	}
	for _, tt := range tests {
		t.Run(string(tt.role), func(t *testing.T) {
			is, err := ca.Issue(IssueOptions{Cluster: "c1", Role: tt.role, DNSNames: tt.dns, IPs: []net.IP{net.ParseIP("127.0.0.1")}})
			if err != nil {
				t.Fatal(err)
			}
			d := Describe(is.Cert, time.Now())
			if want := "spiffe://mesh.test/cluster/c1/" + string(tt.role); d.SPIFFEID != want || len(d.URIs) != 1 {
				t.Fatalf("URIs %v, want exactly %s", d.URIs, want)
			}
			if !slices.Equal(d.DNSNames, tt.wantDNS) {
				t.Fatalf("DNS SANs %v, want %v", d.DNSNames, tt.wantDNS)
			}
			if !slices.Equal(d.IPs, []string{"127.0.0.1"}) || !slices.Equal(d.Usages, []string{tt.wantUsage}) || d.Status != "valid" {
				t.Fatalf("description %+v", d)
			}
			if err := is.Cert.CheckSignatureFrom(ca.Cert); err != nil {
				t.Fatalf("not signed by the CA: %v", err)
			}
		})
	}
}

func TestCA_IssueRejectsBadRequests(t *testing.T) {
	ca, err := NewCA(CAOptions{TrustDomain: "mesh.test", Validity: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts IssueOptions
		want string
	}{
		{name: "no cluster", opts: IssueOptions{Role: RoleAgent}, want: "cluster name is empty"},
		{name: "upper-case cluster", opts: IssueOptions{Cluster: "Cluster1", Role: RoleAgent}, want: "invalid"},
		{name: "slash in cluster", opts: IssueOptions{Cluster: "a/b", Role: RoleAgent}, want: "invalid"},
		{name: "unknown role", opts: IssueOptions{Cluster: "c1", Role: "admin"}, want: `unknown role "admin"`},
		{name: "outlives CA", opts: IssueOptions{Cluster: "c1", Role: RoleAgent, Validity: 48 * time.Hour}, want: "after the CA"},
		{name: "negative validity", opts: IssueOptions{Cluster: "c1", Role: RoleAgent, Validity: -time.Hour}, want: "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ca.Issue(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Issue: %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

func TestParseID_AcceptsOnlyClusterIDs(t *testing.T) {
	tests := []struct {
		uri  string
		want ID
		ok   bool
	}{
		{uri: "spiffe://mesh.test/cluster/c1/server", want: ID{"mesh.test", "c1", RoleServer}, ok: true},
		{uri: "spiffe://mesh.test/cluster/c-2/agent", want: ID{"mesh.test", "c-2", RoleAgent}, ok: true},
		{uri: "https://mesh.test/cluster/c1/server"},
		{uri: "spiffe://mesh.test/cluster/c1"},
		{uri: "spiffe://mesh.test/cluster/c1/server/extra"},
		{uri: "spiffe://mesh.test/cluster/c1/root"},
		{uri: "spiffe://mesh.test/cluster/C1/agent"},
		{uri: "spiffe://mesh.test:8443/cluster/c1/agent"},
		{uri: "spiffe://user@mesh.test/cluster/c1/agent"},
		{uri: "spiffe://mesh.test/cluster/c1/agent?x=1"},
		{uri: "spiffe://Mesh.Test/cluster/c1/agent"},
		{uri: "spiffe://mesh.test/cluster/c%2F1/agent"},
		{uri: "spiffe:///cluster/c1/agent"},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			u, err := url.Parse(tt.uri)
			if err != nil {
				t.Fatal(err)
			}
			id, err := ParseID(u)
			if tt.ok != (err == nil) {
				t.Fatalf("ParseID: %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && (id != tt.want || id.String() != tt.uri) {
				t.Fatalf("ParseID = %v (%s), want %v", id, id, tt.want)
			}
			if !tt.ok && !errors.Is(err, ErrNotSPIFFE) {
				t.Fatalf("error %v does not wrap ErrNotSPIFFE", err)
			}
		})
	}
}

func TestIssued_WriteKeepsIdenticalBundleButRefusesOtherFiles(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA(CAOptions{TrustDomain: "mesh.test"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := ca.Issue(IssueOptions{Cluster: "c1", Role: RoleServer})
	if err != nil {
		t.Fatal(err)
	}
	agent, err := ca.Issue(IssueOptions{Cluster: "c1", Role: RoleAgent})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Write(dir, ca.CertPEM(), false); err != nil {
		t.Fatal(err)
	}
	// Same bundle, another role: fine.
	if _, err := agent.Write(dir, ca.CertPEM(), false); err != nil {
		t.Fatalf("second role into the same directory: %v", err)
	}
	again, err := ca.Issue(IssueOptions{Cluster: "c1", Role: RoleServer})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := again.Write(dir, ca.CertPEM(), false); !errors.Is(err, ErrExists) {
		t.Fatalf("re-issue without force: %v, want ErrExists", err)
	}
	p := PathsFor(dir, "c1", RoleServer)
	if fi, err := os.Stat(p.Key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v mode %v", err, fi.Mode())
	}
}

func TestIssued_WriteKeepsABundleThatAlreadyTrustsTheCA(t *testing.T) {
	dir := t.TempDir()
	oldCA, err := NewCA(CAOptions{TrustDomain: "mesh.test"})
	if err != nil {
		t.Fatal(err)
	}
	newCA, err := NewCA(CAOptions{TrustDomain: "mesh.test"})
	if err != nil {
		t.Fatal(err)
	}
	bundle := append(oldCA.CertPEM(), newCA.CertPEM()...)
	p := PathsFor(dir, "c1", RoleAgent)
	if err := WriteFiles([]File{{Path: p.CA, Data: bundle, Mode: 0o644}}, false); err != nil {
		t.Fatal(err)
	}
	is, err := newCA.Issue(IssueOptions{Cluster: "c1", Role: RoleAgent})
	if err != nil {
		t.Fatal(err)
	}
	for _, force := range []bool{false, true} {
		if _, err := is.Write(dir, newCA.CertPEM(), force); err != nil {
			t.Fatalf("force=%v: %v", force, err)
		}
		if got, _ := os.ReadFile(p.CA); string(got) != string(bundle) {
			t.Fatalf("force=%v: the two-CA bundle was replaced", force)
		}
	}
	// A bundle without the issuing CA is in the way, unless forced.
	third, err := NewCA(CAOptions{TrustDomain: "mesh.test"})
	if err != nil {
		t.Fatal(err)
	}
	is3, err := third.Issue(IssueOptions{Cluster: "c1", Role: RoleClient})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := is3.Write(dir, third.CertPEM(), false); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), CACertFile) {
		t.Fatalf("bundle without the CA, no force: %v, want ErrExists naming %s", err, CACertFile)
	}
}
