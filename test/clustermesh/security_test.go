package clustermesh_test

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/certs/meshtls"
	"github.com/palisade-mesh/palisade/certs/token"
	"github.com/palisade-mesh/palisade/clustermesh"
	"github.com/palisade-mesh/palisade/internal/testenv"
	"github.com/palisade-mesh/palisade/test/harness"
	"github.com/palisade-mesh/palisade/test/topology"
)

// infoFrom calls cluster's mesh API Info from inside ns, as the holder of the TLS material in
// src, with the given bearer token ("" sends none).
func infoFrom(t *testing.T, ns *topology.Namespace, served *harness.MeshCluster, src *meshtls.Source, bearer string) (*apiv1.MeshInfo, error) {
	t.Helper()
	cfg, err := meshtls.ClientConfig(src, meshtls.ClientOptions{ServerCluster: served.Name})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("passthrough:///"+served.Address(),
		grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return ns.DialContext(ctx, &net.Dialer{}, "tcp", addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if bearer != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, clustermesh.AuthorizationKey, "Bearer "+bearer)
	}
	return apiv1.NewMeshClient(conn).Info(ctx, &apiv1.MeshInfoRequest{})
}

func source(t *testing.T, dir, cert, key string) *meshtls.Source {
	t.Helper()
	src, err := meshtls.NewSource(meshtls.SourceOptions{CAFile: filepath.Join(dir, "ca.crt"), CertFile: cert, KeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// signedBy mints a token with cluster's signing key, expiring at exp.
func signedBy(t *testing.T, c *harness.MeshCluster, reader string, exp time.Time) string {
	t.Helper()
	key, err := token.LoadKey(c.Dir.SigningKey())
	if err != nil {
		t.Fatal(err)
	}
	claims := &token.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: c.Name, Subject: reader, Audience: jwt.ClaimStrings{token.Audience},
			ExpiresAt: jwt.NewNumericDate(exp), IssuedAt: jwt.NewNumericDate(exp.Add(-time.Hour)), ID: "test-" + reader,
		},
		Scopes: []string{token.ScopeRead},
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = token.KeyID(&key.PublicKey)
	signed, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// TestMesh_AccessIsRefusedWithoutTheRightCertificateAndToken calls cluster1's mesh API server
// from cluster3's node, once with the right material and then with each thing wrong.
func TestMesh_AccessIsRefusedWithoutTheRightCertificateAndToken(t *testing.T) {
	testenv.RequireRoot(t)
	topo := topology.NewForTest(t, topology.Options{})
	mesh := harness.StartMesh(t, topo, harness.MeshOptions{Clusters: 3, NodesPerCluster: 1, Connect: [][2]int{{0, 1}, {0, 2}}})
	c1, c2, c3 := mesh[0], mesh[1], mesh[2]
	from := c3.Nodes[0].NS

	agent3 := c3.Dir.AgentCert()
	src3 := source(t, c3.Dir.Path, agent3.Cert, agent3.Key)
	tok3, err := clustermesh.ReadToken(filepath.Join(c3.Dir.Remotes(), "cluster1.token"))
	if err != nil {
		t.Fatal(err)
	}
	tok2, err := clustermesh.ReadToken(filepath.Join(c2.Dir.Remotes(), "cluster1.token"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := infoFrom(t, from, c1, src3, tok3)
	if err != nil || info.GetCluster() != "cluster1" || info.GetClusterId() != 1 {
		t.Fatalf("cluster3 with its own certificate and token: %v, %v", info, err)
	}

	// A CA of the same trust domain that the mesh never trusted.
	rogue := filepath.Join(t.TempDir(), "rogue")
	harness.CLI(t, "certs", "init", "--trust-domain", "mesh.test", "--dir", filepath.Join(rogue, "ca"))
	harness.CLI(t, "certs", "issue", "--cluster", "cluster3", "--role", "agent", "--ca-dir", filepath.Join(rogue, "ca"), "--out", rogue)
	// The client trusts the mesh CA (so it accepts cluster1's server) but presents the rogue
	// certificate: the server must refuse it.
	rogueSrc := source(t, c3.Dir.Path, filepath.Join(rogue, "cluster3-agent.crt"), filepath.Join(rogue, "cluster3-agent.key"))

	unsigned := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.RegisteredClaims{
		Issuer: "cluster1", Subject: "cluster3", Audience: jwt.ClaimStrings{token.Audience},
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)), ID: "unsigned",
	})
	none, err := unsigned.SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		src    *meshtls.Source
		bearer string
		want   string
	}{
		{"certificate from a CA the mesh does not trust", rogueSrc, tok3, ""},
		{"expired token", src3, signedBy(t, c1, "cluster3", time.Now().Add(-time.Hour)), "expired"},
		{"cluster3 presenting cluster2's token", src3, tok2, "cluster2"},
		{"unsigned token", src3, none, ""},
		{"no token", src3, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info, err := infoFrom(t, from, c1, tc.src, tc.bearer)
			if err == nil {
				t.Fatalf("refused access was granted: %v", info)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			t.Logf("refused: %v", err)
		})
	}
	if log := c1.Server.Log(); !strings.Contains(log, "certificate signed by a CA this cluster does not trust") {
		t.Errorf("cluster1's mesh API server did not log why it refused the rogue certificate:\n%s", log)
	}
}
