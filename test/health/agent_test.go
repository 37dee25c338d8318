package health_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/test/harness"

	"github.com/palisade-mesh/palisade/internal/testenv"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
	"github.com/palisade-mesh/palisade/test/topology"
)

// agent is one `palisade agent` in a node namespace, with the test that owns it.
type agent struct {
	*harness.Agent
	t *testing.T
}

func startAgent(t *testing.T, node *topology.Node, kvEndpoint, dir string) *agent {
	t.Helper()
	return &agent{Agent: harness.StartAgent(t, node, "healthc", 7, kvEndpoint, dir), t: t}
}

// nodeStates runs `palisade node list -o json` on the agent.
func (a *agent) nodeStates() (map[string]string, error) {
	out, err := a.CLI("node", "list", "-o", "json")
	if err != nil {
		return nil, err
	}
	var nodes []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(out), &nodes); err != nil {
		return nil, fmt.Errorf("node list output %q: %w", out, err)
	}
	states := map[string]string{}
	for _, n := range nodes {
		states[n.Name] = n.State
	}
	return states, nil
}

func (a *agent) waitNodeState(node, want string, within time.Duration) time.Duration {
	a.t.Helper()
	start := time.Now()
	var last map[string]string
	for time.Since(start) < within {
		states, err := a.nodeStates()
		if err == nil && states[node] == want {
			return time.Since(start)
		}
		last = states
		time.Sleep(100 * time.Millisecond)
	}
	a.t.Fatalf("%s: node %s not %s after %s; node list: %v", a.Node().Name, node, want, within, last)
	return 0
}

// metrics scrapes the agent's metrics endpoint inside its node namespace.
func (a *agent) metrics() string {
	a.t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return a.Node().NS.DialContext(ctx, nil, network, addr)
		},
	}}
	resp, err := c.Get("http://127.0.0.1:9962/metrics")
	if err != nil {
		a.t.Fatalf("scrape %s: %v", a.Node().Name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// TestAgents_GossipHealthInNodeListStatusMetricsAndMonitor runs three real agents: a SIGKILLed
// agent's node is dead in `palisade node list`, counted in status and metrics and announced on the
// monitor; restarted it is alive; a stopped agent's node is left.
func TestAgents_GossipHealthInNodeListStatusMetricsAndMonitor(t *testing.T) {
	testenv.RequireRoot(t)
	dir := etcdtest.SocketDir(t)
	etcd := etcdtest.Start(t)
	kvEndpoint := etcd.Endpoints()[1] // the unix socket: reachable from every node namespace
	topo := topology.NewForTest(t, topology.Options{Prefix: "pha"})
	var agents []*agent
	for i := 1; i <= 3; i++ {
		agents = append(agents, startAgent(t, topo.MustAddNode(t, fmt.Sprintf("n%d", i)), kvEndpoint, dir))
	}
	a1 := agents[0]
	for _, a := range agents {
		for _, n := range []string{"n1", "n2", "n3"} {
			a.waitNodeState(n, "alive", 20*time.Second)
		}
	}
	table, err := a1.CLI("node", "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, col := range []string{"ADDRESS", "STATE", "SINCE", "RTT", "n2", "alive"} {
		if !strings.Contains(table, col) {
			t.Fatalf("node list lacks %q:\n%s", col, table)
		}
	}

	rotateGossipKey(t, agents, kvEndpoint)

	monCtx, stopMon := context.WithCancel(context.Background())
	defer stopMon()
	mon := exec.CommandContext(monCtx, harness.Binary(t), "monitor", "--type", "agent", "--socket", a1.Socket)
	monOut := &harness.LogBuffer{}
	mon.Stdout, mon.Stderr = monOut, monOut
	if err := mon.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stopMon(); mon.Wait() }()
	time.Sleep(300 * time.Millisecond) // the subscription is open

	agents[2].Stop(syscall.SIGKILL)
	took := a1.waitNodeState("n3", "dead", 8*time.Second)
	t.Logf("SIGKILLed agent n3 dead in a1's node list after %s", took.Round(10*time.Millisecond))
	status, err := a1.CLI("status")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(status, "1 dead") || !strings.Contains(status, "stale") || !strings.Contains(status, "n3 (routes 10.100.3.0/24") {
		t.Fatalf("status does not report n3 dead with its stale route:\n%s", status)
	}
	if m := a1.metrics(); !strings.Contains(m, `palisade_health_members{state="dead"} 1`) || !strings.Contains(m, "palisade_health_probe_rtt_seconds_count") {
		t.Fatalf("metrics lack the dead member or probe RTTs:\n%s", grepLines(m, "palisade_health"))
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(monOut.String(), "node n3 is dead") {
		if time.Now().After(deadline) {
			t.Fatalf("monitor did not report n3 dead:\n%s", monOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	agents[2].Start()
	a1.waitNodeState("n3", "alive", 15*time.Second)

	agents[1].Stop(syscall.SIGTERM)
	a1.waitNodeState("n2", "left", 5*time.Second)
	if strings.Contains(a1.Log(), "primary") {
		t.Fatal("the agent logged gossip key material")
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// rotateGossipKey rotates the cluster's key with the CLI (add, use, remove) while the agents run,
// and checks they keep seeing each other alive and never log a key.
func rotateGossipKey(t *testing.T, agents []*agent, kvEndpoint string) {
	t.Helper()
	keys := func(args ...string) string {
		t.Helper()
		args = append([]string{"node", "gossip-keys"}, append(args, "--kvstore-endpoints", kvEndpoint)...)
		out, err := exec.Command(harness.Binary(t), args...).CombinedOutput()
		if err != nil {
			t.Fatalf("palisade %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	before := strings.Fields(keys("list"))
	if len(before) != 4 || before[0] != "*" {
		t.Fatalf("expected one primary key, got %q", before)
	}
	oldFP := before[1]
	added := strings.Fields(keys("add"))
	newFP := added[len(added)-1]
	time.Sleep(time.Second)
	keys("use", newFP)
	time.Sleep(time.Second)
	keys("remove", oldFP)
	if out := keys("list"); !strings.HasPrefix(out, "* "+newFP) || strings.Contains(out, oldFP) {
		t.Fatalf("after rotation:\n%s", out)
	}
	time.Sleep(2 * time.Second) // several probe rounds under the new key only
	for _, a := range agents {
		for _, n := range []string{"n1", "n2", "n3"} {
			a.waitNodeState(n, "alive", 2*time.Second)
		}
		if !strings.Contains(a.Log(), "gossip keys updated") {
			t.Fatalf("%s did not apply the rotation:\n%s", a.Node().Name, lastLines(a.Log(), 20))
		}
		if strings.Contains(a.Log(), "rejected gossip message") {
			t.Fatalf("%s rejected messages during the rotation:\n%s", a.Node().Name, grepLines(a.Log(), "rejected"))
		}
	}
}
