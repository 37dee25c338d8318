package agent_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/internal/testenv"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
	"github.com/palisade-mesh/palisade/monitor"
	"github.com/palisade-mesh/palisade/test/harness"
	"github.com/palisade-mesh/palisade/test/topology"
)

// TestAgent_StarWarsAcrossTwoNodes runs the Star Wars L3/L4 scenario on two nodes with real agent
// processes, then kills an agent mid-traffic and takes etcd away for 30 seconds.
func TestAgent_StarWarsAcrossTwoNodes(t *testing.T) {
	testenv.RequireRoot(t)
	dir := etcdtest.SocketDir(t)
	etcd := etcdtest.StartRestartable(t)
	kvEndpoint := etcd.Endpoints()[1] // the unix socket: reachable from every node namespace

	topo := topology.NewForTest(t, topology.Options{})
	n1, n2 := topo.MustAddNode(t, "n1"), topo.MustAddNode(t, "n2")
	a1 := harness.StartAgent(t, n1, "cluster1", 1, kvEndpoint, dir)
	a2 := harness.StartAgent(t, n2, "cluster1", 1, kvEndpoint, dir)

	ds1NS, ds2NS := topo.MustAddNamespace(t, "ds1"), topo.MustAddNamespace(t, "ds2")
	tieNS, xwingNS := topo.MustAddNamespace(t, "tie"), topo.MustAddNamespace(t, "xwing")
	ds1 := a1.CreateEndpoint(t, ds1NS, "org=empire,class=deathstar,app.kubernetes.io/name=deathstar")
	ds2 := a2.CreateEndpoint(t, ds2NS, "org=empire,class=deathstar,app.kubernetes.io/name=deathstar")
	tie := a2.CreateEndpoint(t, tieNS, "org=empire,class=tiefighter,app.kubernetes.io/name=tiefighter")
	xwing := a2.CreateEndpoint(t, xwingNS, "org=alliance,class=xwing,app.kubernetes.io/name=xwing")
	if ds1.Identity != ds2.Identity {
		t.Fatalf("deathstar replicas have identities %d and %d, want one", ds1.Identity, ds2.Identity)
	}
	if ds1.Identity == tie.Identity || tie.Identity == xwing.Identity || ds1.Identity == xwing.Identity {
		t.Fatalf("identities not distinct: deathstar %d, tiefighter %d, xwing %d", ds1.Identity, tie.Identity, xwing.Identity)
	}
	harness.ServeDeathstar(t, ds1NS, "deathstar-1")
	harness.ServeDeathstar(t, ds2NS, "deathstar-2")
	tieHTTP, xwingHTTP := harness.HTTPClient(tieNS, 3*time.Second), harness.HTTPClient(xwingNS, 2*time.Second)

	// No policy: everyone lands, on both nodes.
	for _, ds := range []harness.Endpoint{ds1, ds2} {
		for name, c := range map[string]*http.Client{"tiefighter": tieHTTP, "xwing": xwingHTTP} {
			if body, err := harness.Land(c, ds.IPv4); err != nil || body != "Ship landed\n" {
				t.Fatalf("before policy, %s -> deathstar %s: %q, %v", name, ds.IPv4, body, err)
			}
		}
	}

	drops := harness.WatchMonitor(t, a1, "--type", "drop")
	harness.ImportPolicy(t, kvEndpoint, "../../examples/starwars/l3-l4.yaml")
	harness.WaitFor(t, 10*time.Second, "the xwing to be dropped", func() bool {
		_, err := harness.Land(xwingHTTP, ds1.IPv4)
		return err != nil
	})
	for _, ds := range []harness.Endpoint{ds1, ds2} {
		if body, err := harness.Land(tieHTTP, ds.IPv4); err != nil || body != "Ship landed\n" {
			t.Fatalf("after l3-l4, tiefighter -> %s: %q, %v", ds.IPv4, body, err)
		}
		if _, err := harness.Land(xwingHTTP, ds.IPv4); err == nil {
			t.Fatalf("after l3-l4, the xwing landed on %s", ds.IPv4)
		}
	}
	harness.WaitFor(t, 5*time.Second, "a drop event naming the xwing and the deathstar", func() bool {
		return drops.Seen(func(ev monitor.Event) bool {
			return ev.Source.Identity == xwing.Identity && ev.Dest.Identity == ds1.Identity
		})
	})

	// SIGKILL the agent of the node serving deathstar-1 during a stream of allowed requests: the
	// pinned datapath keeps enforcing, so no request fails, and the restarted agent adopts the
	// endpoints instead of rebuilding them.
	stream := harness.StartLandingStream(tieHTTP, ds1.IPv4)
	time.Sleep(300 * time.Millisecond)
	a1.Stop(syscall.SIGKILL)
	time.Sleep(time.Second)
	if _, err := harness.Land(xwingHTTP, ds1.IPv4); err == nil {
		t.Fatal("the xwing landed while the agent was down")
	}
	a1.Start()
	time.Sleep(500 * time.Millisecond)
	ok, failed := stream.Stop()
	if failed > 0 || ok == 0 {
		t.Fatalf("while the agent was killed and restarted: %d requests landed, %d failed (%v)", ok, failed, stream.FirstErr())
	}
	out, err := a1.CLI("endpoint", "get", "1", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var after []harness.Endpoint
	if err := json.Unmarshal([]byte(out), &after); err != nil || len(after) != 1 || after[0].Identity != ds1.Identity || after[0].IPv4 != ds1.IPv4 || after[0].State != "ready" {
		t.Fatalf("after restart, endpoint 1 = %s (%v), want deathstar-1 adopted", out, err)
	}
	if !strings.Contains(a1.Log(), "endpoint restored") {
		t.Fatal("the restarted agent did not restore its endpoint")
	}

	// Take etcd away for 30 seconds: enforcement stays exactly as it was.
	etcd.Stop()
	outageEnd := time.Now().Add(30 * time.Second)
	for time.Now().Before(outageEnd) {
		if body, err := harness.Land(tieHTTP, ds1.IPv4); err != nil || body != "Ship landed\n" {
			t.Fatalf("during the etcd outage, tiefighter -> deathstar-1: %q, %v", body, err)
		}
		if body, err := harness.Land(tieHTTP, ds2.IPv4); err != nil || body != "Ship landed\n" {
			t.Fatalf("during the etcd outage, tiefighter -> deathstar-2: %q, %v", body, err)
		}
		if _, err := harness.Land(xwingHTTP, ds2.IPv4); err == nil {
			t.Fatal("during the etcd outage, the xwing landed")
		}
		time.Sleep(2 * time.Second)
	}
	etcd.Restart()

	// Converged: a tiefighter created after the outage on the other node lands, the xwing does not.
	tie2NS := topo.MustAddNamespace(t, "tie2")
	tie2 := a1.CreateEndpoint(t, tie2NS, "org=empire,class=tiefighter,app.kubernetes.io/name=tiefighter")
	if tie2.Identity != tie.Identity {
		t.Fatalf("second tiefighter got identity %d, want %d", tie2.Identity, tie.Identity)
	}
	tie2HTTP := harness.HTTPClient(tie2NS, 3*time.Second)
	harness.WaitFor(t, 10*time.Second, "the new tiefighter to land on deathstar-2", func() bool {
		body, err := harness.Land(tie2HTTP, ds2.IPv4)
		return err == nil && body == "Ship landed\n"
	})
	// The agent's metrics are served inside its node namespace.
	resp, err := harness.HTTPClient(n1.NS, 3*time.Second).Get("http://127.0.0.1:9962/metrics")
	if err != nil {
		t.Fatalf("scrape agent metrics: %v", err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, series := range []string{"palisade_agent_endpoints 2", "palisade_agent_endpoint_regenerations_total{outcome=\"applied\"}", "palisade_kvstore_"} {
		if !strings.Contains(string(metrics), series) {
			t.Errorf("agent metrics lack %q", series)
		}
	}

	verdicts := harness.WatchMonitor(t, a1, "--type", "policy,drop", "--from-identity", fmt.Sprint(xwing.Identity))
	if _, err := harness.Land(xwingHTTP, ds1.IPv4); err == nil {
		time.Sleep(500 * time.Millisecond)
		eps, _ := a1.CLI("endpoint", "list", "-o", "json")
		t.Fatalf("after the outage, the xwing (%d) landed on deathstar (%d); verdicts on %s: %+v\nendpoints: %s", xwing.Identity, ds1.Identity, n1.Name, verdicts.Events(), eps)
	}
}
