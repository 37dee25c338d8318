package proxy_test

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/internal/testenv"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
	"github.com/palisade-mesh/palisade/monitor"
	"github.com/palisade-mesh/palisade/test/harness"
	"github.com/palisade-mesh/palisade/test/topology"
)

// request sends one request and returns status and body.
func request(c *http.Client, method, url string) (int, string, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// TestL7_StarWars runs examples/starwars/l7.yaml on two nodes with real agents: the deathstar on
// n1, the ships on n2. The tiefighter lands, its PUT on the exhaust port gets 403 from the proxy
// on the same keep-alive connection, the maintenance droid's PUT reaches the deathstar, the xwing
// is still dropped at L3/L4, and every request is in `palisade monitor --type l7`.
func TestL7_StarWars(t *testing.T) {
	testenv.RequireRoot(t)
	dir := etcdtest.SocketDir(t)
	etcd := etcdtest.StartRestartable(t)
	kvEndpoint := etcd.Endpoints()[1]

	topo := topology.NewForTest(t, topology.Options{})
	n1, n2 := topo.MustAddNode(t, "n1"), topo.MustAddNode(t, "n2")
	a1 := harness.StartAgent(t, n1, "cluster1", 1, kvEndpoint, dir)
	a2 := harness.StartAgent(t, n2, "cluster1", 1, kvEndpoint, dir)

	dsNS, tieNS, droidNS, xwingNS := topo.MustAddNamespace(t, "ds"), topo.MustAddNamespace(t, "tie"), topo.MustAddNamespace(t, "droid"), topo.MustAddNamespace(t, "xwing")
	ds := a1.CreateEndpoint(t, dsNS, "org=empire,class=deathstar")
	tie := a2.CreateEndpoint(t, tieNS, "org=empire,class=tiefighter")
	droid := a2.CreateEndpoint(t, droidNS, "org=empire,class=maintenance-droid")
	a2.CreateEndpoint(t, xwingNS, "org=alliance,class=xwing")
	harness.ServeDeathstar(t, dsNS, "deathstar")

	// One keep-alive client per ship: the verdicts are per request, not per connection.
	keepAlive := func(ns *topology.Namespace) *http.Client {
		c := harness.HTTPClient(ns, 3*time.Second)
		c.Transport.(*http.Transport).DisableKeepAlives = false
		return c
	}
	tieHTTP, droidHTTP, xwingHTTP := keepAlive(tieNS), keepAlive(droidNS), harness.HTTPClient(xwingNS, 2*time.Second)
	base := "http://" + ds.IPv4

	l7 := harness.WatchMonitor(t, a1, "--type", "l7")
	harness.ImportPolicy(t, kvEndpoint, "../../examples/starwars/l7.yaml")
	harness.WaitFor(t, 15*time.Second, "the exhaust port to be closed to the tiefighter", func() bool {
		status, _, _ := request(tieHTTP, http.MethodPut, base+"/v1/exhaust-port")
		return status == http.StatusForbidden
	})
	for range 3 {
		if status, body, err := request(tieHTTP, http.MethodPost, base+"/v1/request-landing"); err != nil || status != 200 || body != "Ship landed\n" {
			t.Fatalf("tiefighter landing: %d %q %v", status, body, err)
		}
		if status, body, err := request(tieHTTP, http.MethodPut, base+"/v1/exhaust-port"); err != nil || status != http.StatusForbidden || body != "Access denied\r\n" {
			t.Fatalf("tiefighter exhaust port: %d %q %v", status, body, err)
		}
	}
	if status, body, err := request(droidHTTP, http.MethodPut, base+"/v1/exhaust-port"); err != nil || status != http.StatusServiceUnavailable || !strings.Contains(body, "exploded") {
		t.Fatalf("droid exhaust port: %d %q %v", status, body, err)
	}
	if status, _, err := request(droidHTTP, http.MethodPost, base+"/v1/request-landing"); err != nil || status != http.StatusForbidden {
		t.Fatalf("droid landing: %d %v, want 403", status, err)
	}
	if _, _, err := request(xwingHTTP, http.MethodPost, base+"/v1/request-landing"); err == nil {
		t.Fatal("the xwing got an answer: it must be dropped at L3/L4")
	}
	// The monitor drops events for a subscriber that falls behind: keep the traffic coming.
	harness.WaitFor(t, 10*time.Second, "l7 events for the tiefighter's denied PUT and the droid's allowed PUT", func() bool {
		_, _, _ = request(tieHTTP, http.MethodPut, base+"/v1/exhaust-port")
		_, _, _ = request(droidHTTP, http.MethodPut, base+"/v1/exhaust-port")
		return l7.Seen(func(ev monitor.Event) bool {
			return ev.Type == "l7" && ev.Verdict == "denied" && ev.Source.Identity == tie.Identity && ev.Dest.Identity == ds.Identity &&
				ev.L7 != nil && ev.L7.Method == "PUT" && ev.L7.Path == "/v1/exhaust-port" && ev.L7.Status == 403
		}) && l7.Seen(func(ev monitor.Event) bool {
			return ev.Verdict == "allowed" && ev.Source.Identity == droid.Identity && ev.L7 != nil && ev.L7.Status == 503
		})
	})

	// Removing the policy takes the proxy out of the path: the PUT reaches the deathstar.
	out, err := exec.Command(harness.Binary(t), "policy", "delete", "-f", "../../examples/starwars/l7.yaml", "--kvstore-endpoints", kvEndpoint).CombinedOutput()
	if err != nil {
		t.Fatalf("policy delete: %v\n%s", err, out)
	}
	harness.WaitFor(t, 15*time.Second, "the tiefighter's PUT to reach the deathstar after the policy is gone", func() bool {
		status, _, _ := request(harness.HTTPClient(tieNS, 2*time.Second), http.MethodPut, base+"/v1/exhaust-port")
		return status == http.StatusServiceUnavailable
	})
}

func TestMain(m *testing.M) {
	code := m.Run()
	harness.Cleanup()
	os.Exit(code)
}
