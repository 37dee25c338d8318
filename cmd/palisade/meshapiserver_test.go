package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/certs"
	"github.com/palisade-mesh/palisade/certs/token"
	"github.com/palisade-mesh/palisade/clustermesh/apiserver"
	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
)

// meshAPIServerArgs writes cluster1's server certificate and signing key to a temporary
// directory and returns the flags naming them.
func meshAPIServerArgs(t *testing.T, endpoint string) []string {
	t.Helper()
	dir := t.TempDir()
	ca, err := certs.NewCA(certs.CAOptions{TrustDomain: "mesh.test"})
	if err != nil {
		t.Fatal(err)
	}
	is, err := ca.Issue(certs.IssueOptions{Cluster: "cluster1", Role: certs.RoleServer})
	if err != nil {
		t.Fatal(err)
	}
	paths, err := is.Write(dir, ca.CertPEM(), false)
	if err != nil {
		t.Fatal(err)
	}
	key, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "signing.key")
	if err := token.WriteKey(keyFile, key, false); err != nil {
		t.Fatal(err)
	}
	return []string{"mesh-apiserver", "--kvstore-endpoints=" + endpoint, "--listen=127.0.0.1:0",
		"--ca-file=" + paths.CA, "--cert-file=" + paths.Cert, "--key-file=" + paths.Key, "--signing-key=" + keyFile,
		"--revocations=" + filepath.Join(dir, "revoked"), "--heartbeat-interval=100ms", "--log-level=warn"}
}

func TestMeshAPIServerCommand_RefusesAnotherClustersEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	kv := etcdtest.NewClient(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := identity.EnsureClusterConfig(ctx, kv, identity.ClusterConfig{Name: "cluster1", ID: 1}); err != nil {
		t.Fatal(err)
	}
	args := meshAPIServerArgs(t, srv.Endpoints()[0])
	for _, tc := range []struct {
		name, flags, want string
	}{
		{"other name", "--cluster-name=cluster2 --cluster-id=1", `holds cluster "cluster1" with ID 1, but this server is configured for cluster "cluster2" with ID 1`},
		{"other ID", "--cluster-name=cluster1 --cluster-id=7", `holds cluster "cluster1" with ID 1, but this server is configured for cluster "cluster1" with ID 7`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runPalisade(t, append(args, strings.Fields(tc.flags)...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("mesh-apiserver = %v (%s), want an error containing %q", err, out, tc.want)
			}
		})
	}
}

func TestMeshAPIServerCommand_ServesAndWritesHeartbeat(t *testing.T) {
	srv := etcdtest.Start(t)
	kv := etcdtest.NewClient(t, srv)
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append(meshAPIServerArgs(t, srv.Endpoints()[0]), "--cluster-name=cluster1", "--cluster-id=3"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("mesh-apiserver: %v\n%s", err, out.String())
		}
	}()
	deadline := time.Now().Add(15 * time.Second)
	for {
		kvp, found, err := kv.Get(context.Background(), apiserver.HeartbeatKey)
		if err == nil && found {
			if _, err := time.Parse(time.RFC3339Nano, string(kvp.Value)); err != nil {
				t.Fatalf("heartbeat %q: %v", kvp.Value, err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no heartbeat written (found %v, err %v)\n%s", found, err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cfg, found, err := identity.GetClusterConfig(context.Background(), kv)
	if err != nil || !found || cfg.Name != "cluster1" || cfg.ID != 3 {
		t.Fatalf("cluster config recorded = %+v, %v, %v", cfg, found, err)
	}
}

func TestMeshAPIServerCommand_ConfigFile(t *testing.T) {
	srv := etcdtest.Start(t)
	kv := etcdtest.NewClient(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := identity.EnsureClusterConfig(ctx, kv, identity.ClusterConfig{Name: "cluster1", ID: 1}); err != nil {
		t.Fatal(err)
	}
	// The generated flags, as a config file.
	var lines []string
	for _, a := range meshAPIServerArgs(t, srv.Endpoints()[0])[1:] {
		name, value, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if name == "signing-key" {
			lines = append(lines, name+": ["+value+"]")
			continue
		}
		lines = append(lines, name+": "+value)
	}
	dir := t.TempDir()
	write := func(name string, extra ...string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(strings.Join(append(append([]string(nil), lines...), extra...), "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"command line wins", []string{"--config", write("a.yaml", "cluster-name: cluster1", "cluster-id: 1"), "--cluster-id=7"},
			`holds cluster "cluster1" with ID 1, but this server is configured for cluster "cluster1" with ID 7`},
		{"unknown key", []string{"--config", write("b.yaml", "cluster-nmae: cluster1")}, `unknown setting "cluster-nmae"`},
		{"bad value", []string{"--config", write("c.yaml", "cluster-name: cluster1", "cluster-id: many")}, "cluster-id"},
		{"required", []string{"--config", write("d.yaml")}, "--cluster-name is required"},
		// Reaching the cluster check means the large number was taken.
		{"large number", []string{"--config", write("e.yaml", "cluster-name: cluster1", "cluster-id: 7", "send-queue-length: 1000000")},
			`holds cluster "cluster1" with ID 1, but this server is configured for cluster "cluster1" with ID 7`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runPalisade(t, append([]string{"mesh-apiserver"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("mesh-apiserver = %v (%s), want an error containing %q", err, out, tc.want)
			}
		})
	}
}
