package health_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/test/harness"

	"github.com/palisade-mesh/palisade/health"
	"github.com/palisade-mesh/palisade/internal/testenv"
	"github.com/palisade-mesh/palisade/test/topology"
)

// cluster is N node namespaces on a fabric, each able to run one member process.
type cluster struct {
	t       *testing.T
	topo    *topology.Topology
	name    string
	keyFile string
	nodes   map[string]*topology.Node
	order   []string

	mu    sync.Mutex
	procs map[string]*memberProc
	// seen holds, per observer, every change it reported, in order.
	seen map[string][]memberLine
}

type memberProc struct {
	name   string
	cmd    *exec.Cmd
	stderr *harness.LogBuffer
	done   chan struct{} // closed when the process exited and its output was read
}

func newCluster(t *testing.T, n int) *cluster {
	t.Helper()
	testenv.RequireRoot(t)
	topo := topology.NewForTest(t, topology.Options{Prefix: "phl"})
	c := &cluster{
		t: t, topo: topo, name: "hc-" + topo.Suffix(),
		nodes: map[string]*topology.Node{}, procs: map[string]*memberProc{}, seen: map[string][]memberLine{},
	}
	c.keyFile = writeKeys(t, "cluster")
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("n%d", i)
		c.nodes[name] = topo.MustAddNode(t, name)
		c.order = append(c.order, name)
	}
	// Registered after the topology, so it runs first: members are killed before namespaces go.
	t.Cleanup(c.killAll)
	return c
}

func writeKeys(t *testing.T, name string) string {
	t.Helper()
	ks, err := health.NewKeySet()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ks.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name+".keys")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// start runs member name on its node, with every other node as a seed.
func (c *cluster) start(name string) { c.startWithKeys(name, c.keyFile) }

func (c *cluster) startWithKeys(name, keyFile string) {
	c.t.Helper()
	node := c.nodes[name]
	var seeds []string
	for _, other := range c.order {
		if other != name {
			seeds = append(seeds, fmt.Sprintf("%s:%d", c.nodes[other].FabricIP, health.DefaultPort))
		}
	}
	self, err := os.Executable()
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := node.NS.Command(c.t.Context(), self)
	cmd.Env = append(os.Environ(),
		envMember+"="+name, envCluster+"="+c.name, envAddr+"="+node.FabricIP.String(),
		envKeys+"="+keyFile, envSeeds+"="+strings.Join(seeds, ","))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	p := &memberProc{name: name, cmd: cmd, stderr: &harness.LogBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := node.NS.Start(cmd); err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.procs[name] = p
	c.mu.Unlock()
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var l memberLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				continue
			}
			c.mu.Lock()
			c.seen[l.Observer] = append(c.seen[l.Observer], l)
			c.mu.Unlock()
		}
		_ = cmd.Wait()
	}()
}

func (c *cluster) startAll() {
	for _, n := range c.order {
		c.start(n)
	}
}

// signal sends sig to member name and waits for it to exit.
func (c *cluster) signal(name string, sig syscall.Signal) {
	c.t.Helper()
	c.mu.Lock()
	p := c.procs[name]
	delete(c.procs, name)
	c.mu.Unlock()
	if p == nil {
		c.t.Fatalf("member %s is not running", name)
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		c.t.Fatalf("member %s did not exit on %s", name, sig)
	}
}

func (c *cluster) killAll() {
	c.mu.Lock()
	procs := c.procs
	c.procs = map[string]*memberProc{}
	c.mu.Unlock()
	for _, p := range procs {
		_ = p.cmd.Process.Kill()
	}
	for _, p := range procs {
		<-p.done
		if c.t.Failed() {
			c.t.Logf("log of member %s:\n%s", p.name, lastLines(p.stderr.String(), 30))
		}
	}
}

func (c *cluster) stderrOf(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.procs[name]; p != nil {
		return p.stderr.String()
	}
	return ""
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// others is every member but the named ones.
func (c *cluster) others(except ...string) []string {
	var out []string
	for _, n := range c.order {
		if !containsString(except, n) {
			out = append(out, n)
		}
	}
	return out
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// state is what observer currently reports about member ("" when it never reported it).
func (c *cluster) state(observer, member string) health.State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stateLocked(observer, member)
}

func (c *cluster) stateLocked(observer, member string) health.State {
	var s health.State
	for _, l := range c.seen[observer] {
		if l.Member == member {
			s = l.State
		}
	}
	return s
}

// firstReport is when observer first reported member in state at or after since.
func (c *cluster) firstReport(observer, member string, state health.State, since time.Time) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.seen[observer] {
		if l.Member == member && l.State == state && !l.At.Before(since) {
			return l.At, true
		}
	}
	return time.Time{}, false
}

// waitFor waits until every observer reports member in state (as its current view) and returns
// when each first reported it after since.
func (c *cluster) waitFor(observers []string, member string, state health.State, since time.Time, within time.Duration) map[string]time.Time {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := map[string]time.Time{}
		for _, o := range observers {
			if c.state(o, member) != state {
				continue
			}
			if at, ok := c.firstReport(o, member, state, since); ok {
				got[o] = at
			} else if state == health.StateAlive {
				got[o] = since // alive since before: nothing to time
			}
		}
		if len(got) == len(observers) {
			return got
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("after %s, %s is not %s everywhere: %s", within, member, state, c.describe(observers, member))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitConverged waits until every running member sees every other running member alive.
func (c *cluster) waitConverged(members []string, within time.Duration) time.Time {
	c.t.Helper()
	for _, m := range members {
		c.waitFor(members, m, health.StateAlive, time.Time{}, within)
	}
	return time.Now()
}

func (c *cluster) describe(observers []string, member string) string {
	var parts []string
	for _, o := range observers {
		parts = append(parts, fmt.Sprintf("%s sees %q", o, c.state(o, member)))
	}
	return strings.Join(parts, ", ")
}

// changesSince lists every reported change at or after since, for flapping checks.
func (c *cluster) changesSince(since time.Time) []memberLine {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []memberLine
	for _, lines := range c.seen {
		for _, l := range lines {
			if !l.At.Before(since) && l.Observer != l.Member {
				out = append(out, l)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out
}

// durations sorts the detection times of each observer, measured from t0.
func durations(at map[string]time.Time, t0 time.Time) []time.Duration {
	var out []time.Duration
	for _, t := range at {
		out = append(out, t.Sub(t0))
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
