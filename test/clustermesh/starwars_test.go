package clustermesh_test

import (
	"errors"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/internal/testenv"
	"github.com/palisade-mesh/palisade/test/harness"
	"github.com/palisade-mesh/palisade/test/topology"
)

const policyFile = "../../examples/multicluster/cross-cluster-l7.yaml"

// verdict is what a request got: the body, "403" or "dropped".
func verdict(c *http.Client, method, url string) string {
	body, err := harness.Request(c, method, url)
	var se *harness.StatusError
	switch {
	case errors.As(err, &se):
		return se.Body
	case err != nil:
		return "dropped"
	}
	return body
}

// TestMesh_StarWarsAcrossThreeClusters checks the table of examples/multicluster: a policy in
// cluster1 naming cluster2's tiefighters lets exactly those land (and only with POST), then that a
// new tiefighter lands within a second and that losing cluster2's mesh API server loses nothing.
func TestMesh_StarWarsAcrossThreeClusters(t *testing.T) {
	testenv.RequireRoot(t)
	topo := topology.NewForTest(t, topology.Options{})
	mesh := harness.StartMesh(t, topo, harness.MeshOptions{Clusters: 3, Connect: [][2]int{{0, 1}, {0, 2}, {1, 2}}})
	c1, c2, c3 := mesh[0], mesh[1], mesh[2]

	ds1NS, ds2NS := topo.MustAddNamespace(t, "ds1"), topo.MustAddNamespace(t, "ds2")
	tie2NS, xwing2NS, tie3NS := topo.MustAddNamespace(t, "tie2"), topo.MustAddNamespace(t, "xwing2"), topo.MustAddNamespace(t, "tie3")
	ds1 := c1.Agents[0].CreateEndpoint(t, ds1NS, "org=empire,class=deathstar")
	ds2 := c1.Agents[1].CreateEndpoint(t, ds2NS, "org=empire,class=deathstar")
	tie2 := c2.Agents[0].CreateEndpoint(t, tie2NS, "org=empire,class=tiefighter")
	xwing2 := c2.Agents[1].CreateEndpoint(t, xwing2NS, "org=alliance,class=xwing")
	tie3 := c3.Agents[0].CreateEndpoint(t, tie3NS, "org=empire,class=tiefighter")
	if tie2.Identity>>16 != 2 || xwing2.Identity>>16 != 2 || tie3.Identity>>16 != 3 || tie2.Identity == xwing2.Identity {
		t.Fatalf("identities are not cluster-scoped: cluster2 tiefighter %d and xwing %d, cluster3 tiefighter %d", tie2.Identity, xwing2.Identity, tie3.Identity)
	}
	harness.ServeDeathstar(t, ds1NS, "deathstar-1")
	harness.ServeDeathstar(t, ds2NS, "deathstar-2")
	client := func(ns *topology.Namespace) *http.Client { return harness.HTTPClient(ns, 2*time.Second) }
	tie2HTTP, xwing2HTTP, tie3HTTP := client(tie2NS), client(xwing2NS), client(tie3NS)

	// Before any policy, every ship lands: the clusters route to each other.
	for name, c := range map[string]*http.Client{"cluster2/tiefighter": tie2HTTP, "cluster2/xwing": xwing2HTTP, "cluster3/tiefighter": tie3HTTP} {
		if got := verdict(c, http.MethodPost, "http://"+ds1.IPv4+"/v1/request-landing"); got != "Ship landed\n" {
			t.Fatalf("before policy, %s -> deathstar: %q", name, got)
		}
	}

	harness.ImportPolicy(t, c1.KV, policyFile)
	harness.WaitFor(t, 15*time.Second, "cluster2's xwing to be dropped", func() bool {
		return verdict(xwing2HTTP, http.MethodPost, "http://"+ds1.IPv4+"/v1/request-landing") == "dropped"
	})
	table := []struct {
		from   string
		client *http.Client
		method string
		path   string
		want   string
	}{
		{"cluster2/tiefighter", tie2HTTP, http.MethodPost, "/v1/request-landing", "Ship landed\n"},
		{"cluster2/tiefighter", tie2HTTP, http.MethodPut, "/v1/exhaust-port", "Access denied\r\n"},
		{"cluster2/xwing", xwing2HTTP, http.MethodPost, "/v1/request-landing", "dropped"},
		{"cluster3/tiefighter", tie3HTTP, http.MethodPost, "/v1/request-landing", "dropped"},
	}
	for _, ds := range []harness.Endpoint{ds1, ds2} {
		for _, row := range table {
			if got := verdict(row.client, row.method, "http://"+ds.IPv4+row.path); got != row.want {
				t.Errorf("%s %s %s on deathstar %s: got %q, want %q", row.from, row.method, row.path, ds.IPv4, got, row.want)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, a := range c1.Agents {
		out, err := a.CLI("clustermesh", "status")
		if err != nil {
			t.Fatal(err)
		}
		for _, remote := range []string{"cluster2", "cluster3"} {
			if !strings.Contains(out, remote) {
				t.Errorf("clustermesh status on %s does not show %s:\n%s", a.Node().Name, remote, out)
			}
		}
	}

	// A tiefighter started in cluster2 after the policy lands within a second, with no restart.
	tieNewNS := topo.MustAddNamespace(t, "tie2new")
	created := time.Now()
	tieNew := c2.Agents[1].CreateEndpoint(t, tieNewNS, "org=empire,class=tiefighter")
	fast := harness.HTTPClient(tieNewNS, 200*time.Millisecond)
	harness.WaitFor(t, 10*time.Second, "the new tiefighter to land", func() bool {
		body, err := harness.Land(fast, ds1.IPv4)
		return err == nil && body == "Ship landed\n"
	})
	took := time.Since(created)
	if took > time.Second {
		t.Errorf("a new cluster2 tiefighter (identity %d) took %s to land, want at most 1s", tieNew.Identity, took)
	}
	t.Logf("a new cluster2 tiefighter landed %s after `endpoint create` started", took)

	// Cluster2's mesh API server goes away: known endpoints keep landing, on new connections too.
	stream := harness.StartLandingStream(tie2HTTP, ds1.IPv4)
	time.Sleep(300 * time.Millisecond)
	c2.Server.Stop(syscall.SIGKILL)
	time.Sleep(3 * time.Second)
	if got := verdict(xwing2HTTP, http.MethodPost, "http://"+ds2.IPv4+"/v1/request-landing"); got != "dropped" {
		t.Errorf("while cluster2's mesh API server was down, the xwing got %q", got)
	}
	c2.Server.Start()
	harness.WaitFor(t, 20*time.Second, "cluster1's agents to resync cluster2", func() bool {
		for _, a := range c1.Agents {
			out, err := a.CLI("clustermesh", "status", "-o", "json")
			if err != nil || !remoteSynced(out, "cluster2") {
				return false
			}
		}
		return true
	})
	time.Sleep(500 * time.Millisecond)
	if ok, failed := stream.Stop(); failed > 0 || ok == 0 {
		t.Fatalf("across cluster2's mesh API server restart: %d landed, %d failed (%v)", ok, failed, stream.FirstErr())
	}
	for _, row := range table {
		if got := verdict(row.client, row.method, "http://"+ds2.IPv4+row.path); got != row.want {
			t.Errorf("after the restart, %s %s %s: got %q, want %q", row.from, row.method, row.path, got, row.want)
		}
	}
}
