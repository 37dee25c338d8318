package health_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/internal/testenv"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
	"github.com/palisade-mesh/palisade/test/topology"
)

var (
	buildOnce sync.Once
	binDir    string
	binErr    error
)

// palisadeBinary builds the palisade command once per test binary.
func palisadeBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "palisade-health-bin-"); binErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, "palisade"), "github.com/palisade-mesh/palisade/cmd/palisade").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return filepath.Join(binDir, "palisade")
}

// agent is one `palisade agent` in a node namespace.
type agent struct {
	t      *testing.T
	node   *topology.Node
	args   []string
	socket string
	log    *lockedBuffer
	cmd    *exec.Cmd
	done   chan struct{}
}

func startAgent(t *testing.T, node *topology.Node, kvEndpoint, dir string) *agent {
	t.Helper()
	a := &agent{t: t, node: node, socket: filepath.Join(dir, node.Name+".sock"), log: &lockedBuffer{}}
	pinDir := fmt.Sprintf("/sys/fs/bpf/pal-health-%d-%s", os.Getpid(), node.Name)
	a.args = []string{"agent",
		"--cluster-name", "healthc", "--cluster-id", "7",
		"--node-name", node.Name, "--node-ip", node.FabricIP.String(), "--pod-cidr", node.PodCIDR.String(),
		"--kvstore-endpoints", kvEndpoint, "--lease-ttl", "10s",
		"--state-dir", filepath.Join(dir, node.Name+"-state"), "--socket", a.socket, "--bpf-pin-dir", pinDir,
		"--metrics-addr", "127.0.0.1:9962",
	}
	t.Cleanup(func() {
		a.signal(syscall.SIGKILL)
		if err := os.RemoveAll(pinDir); err != nil {
			t.Errorf("remove pins %s: %v", pinDir, err)
		}
		if t.Failed() {
			t.Logf("agent %s log:\n%s", node.Name, lastLines(a.log.String(), 40))
		}
	})
	a.start()
	return a
}

func (a *agent) start() {
	a.t.Helper()
	cmd := a.node.NS.Command(context.Background(), palisadeBinary(a.t), a.args...)
	cmd.Stdout, cmd.Stderr = a.log, a.log
	if err := a.node.NS.Start(cmd); err != nil {
		a.t.Fatalf("start agent on %s: %v", a.node.Name, err)
	}
	a.cmd, a.done = cmd, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(a.done)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := a.cli("status"); err == nil {
			return
		}
		select {
		case <-a.done:
			a.t.Fatalf("agent on %s exited:\n%s", a.node.Name, a.log.String())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("agent on %s not ready:\n%s", a.node.Name, a.log.String())
		}
	}
}

func (a *agent) signal(sig syscall.Signal) {
	if a.cmd == nil || a.cmd.Process == nil {
		return
	}
	_ = a.cmd.Process.Signal(sig)
	select {
	case <-a.done:
	case <-time.After(15 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
}

func (a *agent) cli(args ...string) (string, error) {
	args = append(args, "--socket", a.socket)
	out, err := exec.Command(palisadeBinary(a.t), args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("palisade %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// nodeStates runs `palisade node list -o json` on the agent.
func (a *agent) nodeStates() (map[string]string, error) {
	out, err := a.cli("node", "list", "-o", "json")
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
	a.t.Fatalf("%s: node %s not %s after %s; node list: %v", a.node.Name, node, want, within, last)
	return 0
}

// metrics scrapes the agent's metrics endpoint inside its node namespace.
func (a *agent) metrics() string {
	a.t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return a.node.NS.DialContext(ctx, nil, network, addr)
		},
	}}
	resp, err := c.Get("http://127.0.0.1:9962/metrics")
	if err != nil {
		a.t.Fatalf("scrape %s: %v", a.node.Name, err)
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
	table, err := a1.cli("node", "list")
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
	mon := exec.CommandContext(monCtx, palisadeBinary(t), "monitor", "--type", "agent", "--socket", a1.socket)
	monOut := &lockedBuffer{}
	mon.Stdout, mon.Stderr = monOut, monOut
	if err := mon.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stopMon(); mon.Wait() }()
	time.Sleep(300 * time.Millisecond) // the subscription is open

	agents[2].signal(syscall.SIGKILL)
	took := a1.waitNodeState("n3", "dead", 8*time.Second)
	t.Logf("SIGKILLed agent n3 dead in a1's node list after %s", took.Round(10*time.Millisecond))
	status, err := a1.cli("status")
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

	agents[2].start()
	a1.waitNodeState("n3", "alive", 15*time.Second)

	agents[1].signal(syscall.SIGTERM)
	a1.waitNodeState("n2", "left", 5*time.Second)
	if strings.Contains(a1.log.String(), "primary") {
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
		out, err := exec.Command(palisadeBinary(t), args...).CombinedOutput()
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
		if !strings.Contains(a.log.String(), "gossip keys updated") {
			t.Fatalf("%s did not apply the rotation:\n%s", a.node.Name, lastLines(a.log.String(), 20))
		}
		if strings.Contains(a.log.String(), "rejected gossip message") {
			t.Fatalf("%s rejected messages during the rotation:\n%s", a.node.Name, grepLines(a.log.String(), "rejected"))
		}
	}
}
