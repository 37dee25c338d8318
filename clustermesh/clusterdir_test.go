package clustermesh

import (
	"crypto/ecdsa"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/certs"
	"github.com/palisade-mesh/palisade/certs/token"
)

func newCA(t *testing.T, trustDomain string) string {
	t.Helper()
	ca, err := certs.NewCA(certs.CAOptions{TrustDomain: trustDomain})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "ca")
	if err := ca.Write(dir, false); err != nil {
		t.Fatal(err)
	}
	return dir
}

func initCluster(t *testing.T, caDir, name string, id uint32) ClusterDir {
	t.Helper()
	d, err := InitClusterDir(InitOptions{Dir: filepath.Join(t.TempDir(), name), CADir: caDir, Name: name, ID: id, Address: "10.99.0.1:4245"})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestConnect_WritesConfigsAndTokensBothWays(t *testing.T) {
	caDir := newCA(t, "mesh.test")
	c1, c2 := initCluster(t, caDir, "cluster1", 1), initCluster(t, caDir, "cluster2", 2)
	c1, err := OpenClusterDir(c1.Path)
	if err != nil {
		t.Fatal(err)
	}
	conns, err := Connect(c1, c2, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(conns) != 2 || conns[0].Reader != "cluster1" || conns[1].Reader != "cluster2" {
		t.Fatalf("connections = %+v", conns)
	}
	for _, pair := range [][2]ClusterDir{{c1, c2}, {c2, c1}} {
		reader, served := pair[0], pair[1]
		cfg, err := LoadRemoteConfig(filepath.Join(reader.Remotes(), served.Info.Name+RemoteConfigExt))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Address != served.Info.Address || cfg.CertFile != reader.AgentCert().Cert || cfg.CAFile != reader.CABundle() {
			t.Errorf("%s's config for %s = %+v", reader.Info.Name, served.Info.Name, cfg)
		}
		tok, err := ReadToken(cfg.TokenFile)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := token.LoadVerificationKey(served.SigningKey())
		if err != nil {
			t.Fatal(err)
		}
		v, err := token.NewVerifier(token.VerifierOptions{Cluster: served.Info.Name, Keys: []*ecdsa.PublicKey{pub}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Check("Bearer "+tok, reader.Info.Name, token.ScopeRead); err != nil {
			t.Errorf("%s's token for reading %s does not verify: %v", reader.Info.Name, served.Info.Name, err)
		}
		if st, err := os.Stat(cfg.TokenFile); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("token file mode: %v, %v", st, err)
		}
	}
}

func TestConnect_RefusesAndWritesNothing(t *testing.T) {
	caDir := newCA(t, "mesh.test")
	c1 := initCluster(t, caDir, "cluster1", 1)
	for _, tc := range []struct {
		name string
		peer func() ClusterDir
		want string
	}{
		{"same ID", func() ClusterDir { return initCluster(t, caDir, "cluster2", 1) }, `cluster "cluster1" and cluster "cluster2" both have cluster ID 1`},
		{"same name", func() ClusterDir { return initCluster(t, caDir, "cluster1", 2) }, `are cluster "cluster1"`},
		{"other CA", func() ClusterDir { return initCluster(t, newCA(t, "mesh.test"), "cluster3", 3) }, "would not trust the mesh API server of cluster3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Connect(c1, tc.peer(), time.Hour)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Connect = %v, want an error containing %q", err, tc.want)
			}
			if _, err := os.Stat(c1.Remotes()); !os.IsNotExist(err) {
				t.Errorf("refused connect wrote %s", c1.Remotes())
			}
		})
	}
}
