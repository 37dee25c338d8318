package main

import (
	"bytes"
	"crypto/ecdsa"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/palisade-mesh/palisade/certs"
	"github.com/palisade-mesh/palisade/certs/token"
)

// runMeshCLI runs the palisade command line and returns stdout and stderr separately.
func runMeshCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	root := newRootCommand()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), errOut.String(), err
}

func TestCertsCommand_InitIssueShow(t *testing.T) {
	dir := t.TempDir()
	caDir, out := filepath.Join(dir, "ca"), filepath.Join(dir, "cluster1")
	if _, _, err := runMeshCLI(t, "certs", "init", "--trust-domain", "mesh.test", "--dir", caDir); err != nil {
		t.Fatal(err)
	}
	caBefore, _ := os.ReadFile(filepath.Join(caDir, certs.CAKeyFile))
	if _, _, err := runMeshCLI(t, "certs", "init", "--trust-domain", "mesh.test", "--dir", caDir); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second init: %v, want a refusal mentioning --force", err)
	}
	if caAfter, _ := os.ReadFile(filepath.Join(caDir, certs.CAKeyFile)); !bytes.Equal(caBefore, caAfter) {
		t.Fatal("refused init changed the CA key")
	}
	if _, _, err := runMeshCLI(t, "certs", "issue", "--cluster", "cluster1", "--role", "server", "--dns", "mesh.c1.example", "--ip", "127.0.0.1", "--ca-dir", caDir, "--out", out); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runMeshCLI(t, "certs", "issue", "--cluster", "cluster1", "--role", "admin", "--ca-dir", caDir, "--out", out); err == nil || !strings.Contains(err.Error(), `unknown role "admin"`) {
		t.Fatalf("issue with a bad role: %v", err)
	}
	p := certs.PathsFor(out, "cluster1", certs.RoleServer)
	stdout, _, err := runMeshCLI(t, "certs", "show", p.Cert, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var descs []certs.Description
	if err := json.Unmarshal([]byte(stdout), &descs); err != nil {
		t.Fatalf("show -o json: %v\n%s", err, stdout)
	}
	d := descs[0]
	if len(descs) != 1 || d.SPIFFEID != "spiffe://mesh.test/cluster/cluster1/server" || d.IPs[0] != "127.0.0.1" || d.DNSNames[0] != "mesh.c1.example" || d.Status != "valid" {
		t.Fatalf("show: %+v", descs)
	}
	table, _, err := runMeshCLI(t, "certs", "show", p.CA)
	if err != nil || !strings.Contains(table, "spiffe://mesh.test") || !strings.Contains(table, "certificate signing") {
		t.Fatalf("show CA table: %v\n%s", err, table)
	}
}

func TestClustermeshTokenCommand_IssueVerifiesInspectRevoke(t *testing.T) {
	dir := t.TempDir()
	keyFile, revFile := filepath.Join(dir, "signing.key"), filepath.Join(dir, "revoked")
	if _, _, err := runMeshCLI(t, "clustermesh", "token", "keygen", "--out", keyFile); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("signing key: %v mode %v", err, fi.Mode())
	}
	stdout, _, err := runMeshCLI(t, "clustermesh", "token", "issue", "--for", "cluster2", "--ttl", "1h", "--key", keyFile, "--cluster", "cluster1", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var issued issuedToken
	if err := json.Unmarshal([]byte(stdout), &issued); err != nil {
		t.Fatalf("issue -o json: %v\n%s", err, stdout)
	}
	plain, _, err := runMeshCLI(t, "clustermesh", "token", "issue", "--for", "cluster2", "--key", keyFile, "--cluster", "cluster1")
	if err != nil || strings.Count(strings.TrimSpace(plain), ".") != 2 || strings.ContainsAny(strings.TrimSpace(plain), " \n") {
		t.Fatalf("issue prints %q (%v), want just the token", plain, err)
	}

	key, err := token.LoadKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	revs, err := token.OpenRevocations(revFile, token.RevocationsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := token.NewVerifier(token.VerifierOptions{Cluster: "cluster1", Keys: []*ecdsa.PublicKey{&key.PublicKey}, Revocations: revs})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Check(issued.Token, "cluster2", token.ScopeRead); err != nil {
		t.Fatalf("CLI-issued token does not verify: %v", err)
	}

	inspected, warning, err := runMeshCLI(t, "clustermesh", "token", "inspect", issued.Token, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var view inspectedToken
	if err := json.Unmarshal([]byte(inspected), &view); err != nil {
		t.Fatal(err)
	}
	if view.Verified || view.ID != issued.ID || view.Subject != "cluster2" || !strings.Contains(warning, "NOT VERIFIED") {
		t.Fatalf("inspect: %+v, stderr %q", view, warning)
	}
	if _, _, err := runMeshCLI(t, "clustermesh", "token", "inspect", "garbage"); err == nil {
		t.Fatal("inspect accepted garbage")
	}

	if _, _, err := runMeshCLI(t, "clustermesh", "token", "revoke", issued.ID, "--revocations", revFile); err != nil {
		t.Fatal(err)
	}
	if err := revs.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Check(issued.Token, "cluster2", token.ScopeRead); err == nil {
		t.Fatal("token still accepted after revoke")
	}
}
