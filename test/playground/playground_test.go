package playground_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/internal/playground"
	"github.com/palisade-mesh/palisade/internal/testenv"
	"github.com/palisade-mesh/palisade/test/topology"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildOut  []byte
)

// palisadeBinary builds the palisade binary once for the package's tests.
func palisadeBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pal-pg-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "palisade")
		buildOut, buildErr = exec.Command("go", "build", "-o", binPath, "github.com/palisade-mesh/palisade/cmd/palisade").CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("build: %v\n%s", buildErr, buildOut)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// playgroundCLI runs palisade commands against one playground directory.
type playgroundCLI struct {
	t   *testing.T
	bin string
	dir string
}

func newPlaygroundCLI(t *testing.T) *playgroundCLI {
	dir, err := os.MkdirTemp("/tmp", "pal-pg-")
	if err != nil {
		t.Fatal(err)
	}
	return &playgroundCLI{t: t, bin: palisadeBinary(t), dir: dir}
}

// dev runs `palisade dev ARGS --dir DIR` and fails the test if it fails.
func (c *playgroundCLI) dev(args ...string) string {
	c.t.Helper()
	return c.run(append(append([]string{"dev"}, args...), "--dir", c.dir)...)
}

func (c *playgroundCLI) run(args ...string) string {
	c.t.Helper()
	out, err := exec.Command(c.bin, args...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("palisade %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// up starts the playground and makes sure it is removed when the test ends, also on failure.
func (c *playgroundCLI) up(args ...string) *playground.State {
	c.t.Helper()
	c.dev(append([]string{"up"}, args...)...)
	st, err := playground.Load(c.dir)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() {
		if _, err := os.Stat(c.dir); err == nil {
			_ = st.Down()
		}
	})
	return st
}

func (c *playgroundCLI) state() *playground.State {
	c.t.Helper()
	st, err := playground.Load(c.dir)
	if err != nil {
		c.t.Fatal(err)
	}
	return st
}

// request sends one request from inside from's namespace.
func request(t *testing.T, st *playground.State, from, to, method, path string, timeout time.Duration) playground.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+3*time.Second)
	defer cancel()
	r, err := st.Request(ctx, from, to, method, path, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (last: %s)", timeout, what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// downLeavesNothing runs `dev down` and checks that no namespace, pin, process or file of st
// is left.
func (c *playgroundCLI) downLeavesNothing(st *playground.State) {
	c.t.Helper()
	c.dev("down")
	t := c.t
	if left := topology.NamespacesWithPrefix(st.NSPrefix); len(left) > 0 {
		t.Errorf("namespaces left after dev down: %v", left)
	}
	for _, cl := range st.Clusters {
		if cl.Etcd.Running() {
			t.Errorf("etcd of %s (pid %d) still running", cl.Name, cl.Etcd.PID)
		}
		if cl.MeshAPIServer != nil && cl.MeshAPIServer.Running() {
			t.Errorf("mesh API server of %s (pid %d) still running", cl.Name, cl.MeshAPIServer.PID)
		}
	}
	for _, n := range st.Nodes() {
		if _, err := os.Stat(n.PinDir); err == nil {
			t.Errorf("pinned state left after dev down: %s", n.PinDir)
		}
		if n.Agent.Running() {
			t.Errorf("agent of %s (pid %d) still running", n.Name, n.Agent.PID)
		}
	}
	for _, e := range st.Endpoints {
		if e.Server != nil && e.Server.Running() {
			t.Errorf("workload of %s (pid %d) still running", e.QualifiedName(), e.Server.PID)
		}
	}
	if _, err := os.Stat(c.dir); err == nil {
		t.Errorf("%s left after dev down", c.dir)
	}
}

// TestPlayground_StarWarsUpAndDown drives the playground as a user does, through the palisade
// binary, and checks that `dev down` leaves nothing behind.
func TestPlayground_StarWarsUpAndDown(t *testing.T) {
	testenv.RequireRoot(t)
	c := newPlaygroundCLI(t)
	st := c.up("--nodes", "2")
	if len(st.Clusters) != 1 || st.Clusters[0].Name != "playground" || st.Clusters[0].MeshAPIServer != nil || st.Mesh() {
		t.Fatalf("a default playground is not the single cluster \"playground\" without a mesh API server: %+v", st.Clusters)
	}
	if got := strings.TrimSpace(c.dev("kvstore")); got != "unix://"+filepath.Join(c.dir, "etcd.sock") {
		t.Errorf("dev kvstore = %q", got)
	}
	c.dev("endpoint", "add", "deathstar", "--node", "node1", "--labels", "org=empire,class=deathstar", "--workload", "deathstar")
	c.dev("endpoint", "add", "tiefighter", "--node", "node2", "--labels", "org=empire,class=tiefighter")
	c.dev("endpoint", "add", "xwing", "--node", "node2", "--labels", "org=alliance,class=xwing")
	st = c.state()
	land := func(from string) playground.Response {
		return request(t, st, from, "deathstar", "POST", "/v1/request-landing", time.Second)
	}
	// The deathstar's server starts asynchronously.
	waitFor(t, 10*time.Second, "the xwing to land before any policy", func() (bool, string) {
		r := land("xwing")
		return r.Status == 200, r.Verdict()
	})
	c.run("policy", "import", "-f", "../../examples/starwars/l3-l4.yaml", "--kvstore-endpoints", st.KvstoreEndpoint())
	waitFor(t, 10*time.Second, "the xwing to be dropped after l3-l4", func() (bool, string) {
		r := land("xwing")
		return r.Dropped, r.Verdict()
	})
	if r := land("tiefighter"); r.Status != 200 || r.Body != "Ship landed\n" {
		t.Fatalf("after l3-l4 the tiefighter gets %s", r.Verdict())
	}
	c.downLeavesNothing(st)
}

// TestPlayground_MeshOfThreeClusters runs `dev up --clusters 3` as the demo does and checks the
// verdict table of examples/multicluster/README.md across clusters, that a tiefighter started in
// cluster2 afterwards lands without any restart, what `dev status` and `clustermesh status` show,
// and that `dev down` leaves nothing behind.
func TestPlayground_MeshOfThreeClusters(t *testing.T) {
	testenv.RequireRoot(t)
	c := newPlaygroundCLI(t)
	st := c.up("--clusters", "3", "--nodes", "2")

	cidrs := map[string]string{}
	for i, cl := range st.Clusters {
		if want := "cluster" + string(rune('1'+i)); cl.Name != want || cl.ID != uint32(i+1) {
			t.Errorf("cluster %d is %s (ID %d), want %s (ID %d)", i, cl.Name, cl.ID, want, i+1)
		}
		if cl.MeshAPIServer == nil || !cl.MeshAPIServer.Running() || !cl.Etcd.Running() {
			t.Errorf("%s: etcd or mesh API server not running", cl.Name)
		}
		if got := strings.TrimSpace(c.dev("kvstore", "--cluster", cl.Name)); got != cl.KvstoreEndpoint() {
			t.Errorf("dev kvstore --cluster %s = %q, want %q", cl.Name, got, cl.KvstoreEndpoint())
		}
		for _, n := range cl.Nodes {
			if other, dup := cidrs[n.PodCIDR]; dup {
				t.Errorf("nodes %s and %s share pod CIDR %s", other, n.Name, n.PodCIDR)
			}
			cidrs[n.PodCIDR] = n.Name
			if got := strings.TrimSpace(c.dev("socket", "--node", n.Name)); got != n.Socket {
				t.Errorf("dev socket --node %s = %q, want %q", n.Name, got, n.Socket)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	c.dev("endpoint", "add", "deathstar-1", "--node", "c1n1", "--labels", "org=empire,class=deathstar", "--workload", "deathstar")
	c.dev("endpoint", "add", "deathstar-2", "--node", "c1n2", "--labels", "org=empire,class=deathstar", "--workload", "deathstar")
	c.dev("endpoint", "add", "tiefighter", "--node", "c2n1", "--labels", "org=empire,class=tiefighter")
	c.dev("endpoint", "add", "xwing", "--node", "c2n2", "--labels", "org=alliance,class=xwing")
	c.dev("endpoint", "add", "tiefighter", "--node", "c3n1", "--labels", "org=empire,class=tiefighter")
	status := c.dev("status")
	for _, want := range []string{"cluster1", "cluster2", "cluster3", st.Clusters[1].MeshAddress, "c3n2"} {
		if !strings.Contains(status, want) {
			t.Errorf("dev status does not show %q:\n%s", want, status)
		}
	}
	st = c.state()

	type row struct{ from, method, path, want string }
	landing := func(from string) row { return row{from, "POST", "/v1/request-landing", ""} }
	for _, ds := range []string{"cluster1/deathstar-1", "cluster1/deathstar-2"} {
		waitFor(t, 10*time.Second, "every ship to reach "+ds+" before any policy", func() (bool, string) {
			for _, r := range []row{landing("cluster2/tiefighter"), landing("cluster2/xwing"), landing("cluster3/tiefighter")} {
				if got := request(t, st, r.from, ds, r.method, r.path, time.Second).Verdict(); got != "200 Ship landed" {
					return false, r.from + ": " + got
				}
			}
			return true, ""
		})
	}

	c.run("policy", "import", "-f", "../../examples/multicluster/cross-cluster-l7.yaml", "--kvstore-endpoints", strings.TrimSpace(c.dev("kvstore", "--cluster", "cluster1")))
	waitFor(t, 15*time.Second, "cluster2's xwing to be dropped", func() (bool, string) {
		r := request(t, st, "cluster2/xwing", "cluster1/deathstar-1", "POST", "/v1/request-landing", 300*time.Millisecond)
		return r.Dropped, r.Verdict()
	})
	table := []row{
		{"cluster2/tiefighter", "POST", "/v1/request-landing", "200 Ship landed"},
		{"cluster2/tiefighter", "PUT", "/v1/exhaust-port", "403 Access denied"},
		{"cluster2/xwing", "POST", "/v1/request-landing", "dropped (connection timed out)"},
		{"cluster3/tiefighter", "POST", "/v1/request-landing", "dropped (connection timed out)"},
	}
	for _, ds := range []string{"cluster1/deathstar-1", "cluster1/deathstar-2"} {
		for _, r := range table {
			if got := request(t, st, r.from, ds, r.method, r.path, time.Second).Verdict(); got != r.want {
				t.Errorf("%s %s %s -> %s: %q, want %q", r.from, r.method, r.path, ds, got, r.want)
			}
		}
	}

	// A tiefighter with a label no ship had (so a new identity, and a new address) started in
	// cluster2 now lands on cluster1's deathstar without anything restarting.
	c.dev("endpoint", "add", "tiefighter-2", "--node", "c2n2", "--labels", "org=empire,class=tiefighter,squadron=black")
	var landed struct {
		Status   int    `json:"status"`
		Body     string `json:"body"`
		Attempts int    `json:"attempts"`
		TookMS   int64  `json:"tookMs"`
	}
	out := c.dev("request", "--from", "cluster2/tiefighter-2", "--to", "cluster1/deathstar-1", "-X", "POST", "/v1/request-landing",
		"--until-status", "200", "--timeout", "100ms", "--within", "5s", "-o", "json")
	if err := json.Unmarshal([]byte(out), &landed); err != nil || landed.Status != 200 || landed.Body != "Ship landed\n" || landed.Attempts < 1 {
		t.Fatalf("the new cluster2 tiefighter's landing: %v\n%s", err, out)
	}
	t.Logf("a new cluster2 tiefighter landed on cluster1's deathstar %d ms (%d requests) after `dev endpoint add` returned", landed.TookMS, landed.Attempts)
	st = c.state()

	meshStatus := c.run("clustermesh", "status", "--socket", strings.TrimSpace(c.dev("socket", "--node", "c1n1")))
	for _, want := range []string{"cluster2", "cluster3", st.Clusters[2].MeshAddress} {
		if !strings.Contains(meshStatus, want) {
			t.Errorf("clustermesh status on c1n1 does not show %q:\n%s", want, meshStatus)
		}
	}

	c.downLeavesNothing(st)
}

// TestPlayground_FailedUpRemovesWhatItStarted makes etcd fail to start (its data directory is a
// file) and checks that `dev up` reports it, keeps the logs elsewhere and leaves nothing behind.
func TestPlayground_FailedUpRemovesWhatItStarted(t *testing.T) {
	testenv.RequireRoot(t)
	c := newPlaygroundCLI(t)
	if err := os.WriteFile(filepath.Join(c.dir, "cluster1-etcd"), []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := topology.NamespacesWithPrefix("pdev-")
	out, err := exec.Command(c.bin, "dev", "up", "--clusters", "2", "--nodes", "1", "--dir", c.dir).CombinedOutput()
	if err == nil {
		_ = exec.Command(c.bin, "dev", "down", "--dir", c.dir).Run()
		t.Fatalf("dev up succeeded with an unusable etcd data directory:\n%s", out)
	}
	msg := string(out)
	const kept = "the daemons' logs are kept in "
	i := strings.Index(msg, kept)
	if !strings.Contains(msg, "etcd of cluster1") || i < 0 {
		t.Fatalf("dev up error does not name etcd of cluster1 and the kept logs:\n%s", msg)
	}
	logs := strings.TrimRight(strings.Fields(msg[i+len(kept):])[0], ")")
	t.Cleanup(func() { os.RemoveAll(logs) })
	if _, err := os.Stat(filepath.Join(logs, "cluster1-etcd.log")); err != nil {
		t.Errorf("etcd's log was not kept: %v", err)
	}
	if _, err := os.Stat(c.dir); err == nil {
		t.Errorf("%s left after a failed dev up", c.dir)
	}
	if after := topology.NamespacesWithPrefix("pdev-"); len(after) > len(before) {
		t.Errorf("namespaces left after a failed dev up: before %v, after %v", before, after)
	}
}
