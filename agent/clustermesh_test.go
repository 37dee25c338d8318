package agent

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/clustermesh"
	"github.com/palisade-mesh/palisade/clustermesh/remote"
	"github.com/palisade-mesh/palisade/clustermesh/remote/remotetest"
	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/policy"
	"github.com/palisade-mesh/palisade/policy/api"
)

// meshTestSink feeds a real policy engine and records what would go into the datapath and the
// routing table (those need root; test/clustermesh checks the kernel side).
type meshTestSink struct {
	engine *policy.Engine
	local  netip.Prefix

	mu        sync.Mutex
	ipcache   map[netip.Prefix]identity.ID
	routes    map[string]remote.Node
	withdrawn []string // every ipcache entry, route and identity taken away, in order
}

func newMeshTestSink(t *testing.T) *meshTestSink {
	t.Helper()
	engine, err := policy.NewEngine(policy.Options{ClusterName: "cluster1"})
	if err != nil {
		t.Fatal(err)
	}
	return &meshTestSink{engine: engine, local: netip.MustParsePrefix("10.1.1.0/24"), ipcache: map[netip.Prefix]identity.ID{}, routes: map[string]remote.Node{}}
}

func (s *meshTestSink) updateIdentities(added map[identity.ID]identity.Labels, deleted []identity.ID) {
	s.engine.UpdateIdentities(added, deleted)
	s.mu.Lock()
	for _, id := range deleted {
		s.withdrawn = append(s.withdrawn, "identity/"+id.String())
	}
	s.mu.Unlock()
}

func (s *meshTestSink) upsertIPCache(p netip.Prefix, id identity.ID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ipcache[p] = id
	return nil
}

func (s *meshTestSink) deleteIPCache(p netip.Prefix) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.ipcache, p)
	s.withdrawn = append(s.withdrawn, "ipcache/"+p.String())
	return nil
}

func (s *meshTestSink) setRoute(name, _ string, n remote.Node) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.routes[name] = n
	return nil
}

func (s *meshTestSink) removeRoute(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.routes, name)
	s.withdrawn = append(s.withdrawn, "route/"+name)
}

func (s *meshTestSink) isLocalRange(p netip.Prefix) bool { return s.local.Overlaps(p) }

// state lists the datapath and routing entries and the remote identities the engine knows.
func (s *meshTestSink) state(ids ...identity.ID) []string {
	s.mu.Lock()
	var out []string
	for p, id := range s.ipcache {
		out = append(out, "ipcache/"+p.String()+"="+id.String())
	}
	for name, n := range s.routes {
		out = append(out, "route/"+name+" via "+n.IPs[0].String())
	}
	s.mu.Unlock()
	for _, id := range ids {
		if _, ok := s.engine.SelectorCache().Labels(id); ok {
			out = append(out, "identity/"+id.String())
		}
	}
	slices.Sort(out)
	return out
}

func (s *meshTestSink) withdrawals() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.withdrawn)
}

type meshHarness struct {
	t    *testing.T
	dir  string
	mesh *clusterMesh
	sink *meshTestSink
	// ready gates the mesh's start, as the local policy sync does in the agent.
	ready chan struct{}
}

func startMesh(t *testing.T, mutate func(*meshOptions)) *meshHarness {
	t.Helper()
	h := &meshHarness{t: t, dir: filepath.Join(t.TempDir(), "clustermesh"), sink: newMeshTestSink(t), ready: make(chan struct{})}
	opts := meshOptions{
		dir:          h.dir,
		localName:    "cluster1",
		localID:      1,
		layout:       identity.DefaultLayout,
		syncTimeout:  10 * time.Second,
		staleGrace:   time.Minute,
		selectorsFor: h.sink.engine.SelectorsFor,
		pollInterval: 50 * time.Millisecond,
		clientOptions: func(o *remote.Options) {
			o.MinBackoff, o.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
		},
		log: remotetest.Quiet(),
	}
	if mutate != nil {
		mutate(&opts)
	}
	h.mesh = newClusterMesh(opts, h.sink)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.mesh.run(ctx, h.ready)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return h
}

// connect writes the remote cluster configuration file of c, as `clustermesh connect` does.
func (h *meshHarness) connect(c *remotetest.Cluster) clustermesh.RemoteConfig {
	h.t.Helper()
	cfg := c.RemoteConfig("cluster1", h.t.TempDir())
	if _, err := clustermesh.WriteRemoteConfig(h.dir, cfg); err != nil {
		h.t.Fatal(err)
	}
	return cfg
}

func (h *meshHarness) remoteStatus(name string) *remoteStatusView {
	for _, c := range h.mesh.status().Clusters {
		if c.Name == name {
			return &remoteStatusView{Connected: c.Connected, Synced: c.Synced, Stale: c.Stale, LastError: c.LastError, ConfigError: c.ConfigError,
				Identities: c.Identities, Endpoints: c.Endpoints, Nodes: c.Nodes, LastSync: c.GetLastSync().AsTime()}
		}
	}
	return nil
}

type remoteStatusView struct {
	Connected, Synced, Stale     bool
	LastError, ConfigError       string
	Identities, Endpoints, Nodes uint32
	LastSync                     time.Time
}

func (h *meshHarness) waitStatus(what, name string, cond func(*remoteStatusView) bool) {
	h.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := h.remoteStatus(name)
		if st != nil && cond(st) {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: remote %s status %+v", what, name, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *meshHarness) waitState(ids []identity.ID, want ...string) {
	h.t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(15 * time.Second)
	for !slices.Equal(h.sink.state(ids...), want) {
		if time.Now().After(deadline) {
			h.t.Fatalf("imported\n %v\nwant\n %v", h.sink.state(ids...), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// populate gives cluster c two endpoints in namespace default, app=a and app=b, on node n1 with
// pod CIDR 10.<ID>.1.0/24.
func populate(c *remotetest.Cluster) (a, b identity.ID) {
	a = c.PutIdentity(300, "k8s:app=a", "k8s:io.kubernetes.pod.namespace=default")
	b = c.PutIdentity(301, "k8s:app=b", "k8s:io.kubernetes.pod.namespace=default")
	c.PutEndpoint(fmt.Sprintf("10.%d.1.10/32", c.ID), a, "n1")
	c.PutEndpoint(fmt.Sprintf("10.%d.1.11/32", c.ID), b, "n1")
	c.PutNode("n1", fmt.Sprintf("10.99.%d.1", c.ID), fmt.Sprintf("10.%d.1.0/24", c.ID))
	return a, b
}

func TestClusterMesh_ConfigFilesStartChangeAndStopRemoteClusters(t *testing.T) {
	m := remotetest.NewMesh(t)
	c2 := m.NewCluster(t, "cluster2", 2)
	a, b := populate(c2)
	c2.Start()
	// A full watch: no local policy selects anything here, so a selector-scoped watch would
	// import the nodes only (see TestClusterMesh_RemoteAllowSurvivesOutageAndSelectorChange).
	h := startMesh(t, func(o *meshOptions) { o.fullWatch = true })
	close(h.ready)
	ids := []identity.ID{a, b}
	full := []string{"identity/" + a.String(), "identity/" + b.String(), "ipcache/10.2.1.10/32=" + a.String(), "ipcache/10.2.1.11/32=" + b.String(), "route/cluster2/n1 via 10.99.2.1"}

	// Added: imported.
	cfg := h.connect(c2)
	h.waitState(ids, full...)
	h.waitStatus("synced", "cluster2", func(s *remoteStatusView) bool {
		return s.Synced && s.Identities == 2 && s.Endpoints == 2 && s.Nodes == 1
	})
	sum, per := h.mesh.summary()
	if !sum.Ok || !strings.HasPrefix(sum.Message, "1/1 remote clusters synced, 2 remote identities, 2 remote endpoints") || len(per) != 1 || !per[0].Ok {
		t.Fatalf("status summary: %v, %v", sum, per)
	}

	// Changed (a new token file): reconnected, and nothing withdrawn meanwhile.
	tokenCopy := filepath.Join(t.TempDir(), "renamed.token")
	raw, err := os.ReadFile(cfg.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenCopy, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.TokenFile = tokenCopy
	changed := time.Now()
	if _, err := clustermesh.WriteRemoteConfig(h.dir, cfg); err != nil {
		t.Fatal(err)
	}
	h.waitStatus("reconnected with the new file", "cluster2", func(s *remoteStatusView) bool { return s.Synced && s.LastSync.After(changed) })
	h.waitState(ids, full...)
	if w := h.sink.withdrawals(); len(w) != 0 {
		t.Fatalf("a config change withdrew %v", w)
	}

	// Broken: reported, the running connection kept.
	if err := os.WriteFile(filepath.Join(h.dir, "cluster2.yaml"), []byte("name: cluster2\naddress: [oops\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.waitStatus("the broken file reported", "cluster2", func(s *remoteStatusView) bool { return s.ConfigError != "" && s.Connected && s.Synced })
	c2.PutIdentity(302, "k8s:app=c", "k8s:io.kubernetes.pod.namespace=default")
	h.waitStatus("still importing", "cluster2", func(s *remoteStatusView) bool { return s.Identities == 3 })

	// Removed: everything it imported is withdrawn.
	if err := os.Remove(filepath.Join(h.dir, "cluster2.yaml")); err != nil {
		t.Fatal(err)
	}
	h.waitState(append(ids, c2.IdentityID(302)))
	for deadline := time.Now().Add(5 * time.Second); h.remoteStatus("cluster2") != nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("a removed remote cluster is still reported: %+v", h.remoteStatus("cluster2"))
		}
	}
}

func TestClusterMesh_ClashesAreRefusedNamingBothClusters(t *testing.T) {
	m := remotetest.NewMesh(t)
	c2 := m.StartCluster(t, "cluster2", 2)
	c4 := m.StartCluster(t, "cluster4", 2)
	c5 := m.StartCluster(t, "cluster5", 1)
	h := startMesh(t, func(o *meshOptions) { o.fullWatch = true })
	close(h.ready)
	h.connect(c2)
	h.waitStatus("cluster2 synced", "cluster2", func(s *remoteStatusView) bool { return s.Synced })

	h.connect(c4)
	h.connect(c5)
	h.waitStatus("cluster4 refused", "cluster4", func(s *remoteStatusView) bool {
		return strings.Contains(s.LastError, `cluster "cluster4" (ID 2) clashes with connected cluster "cluster2" (ID 2): cluster IDs must be unique in the mesh`)
	})
	h.waitStatus("cluster5 refused", "cluster5", func(s *remoteStatusView) bool {
		return strings.Contains(s.LastError, `cluster "cluster5" (ID 1) clashes with this cluster "cluster1" (ID 1): cluster IDs must be unique in the mesh`)
	})
	if st := h.remoteStatus("cluster4"); st.Connected || st.Identities != 0 {
		t.Fatalf("a clashing cluster was imported: %+v", st)
	}

	// Once cluster2 is gone, cluster4 may take ID 2.
	if err := os.Remove(filepath.Join(h.dir, "cluster2.yaml")); err != nil {
		t.Fatal(err)
	}
	h.waitStatus("cluster4 accepted", "cluster4", func(s *remoteStatusView) bool { return s.Synced })
}

func TestClusterMesh_WaitSyncedWaitsForConfiguredClustersUpToTheTimeout(t *testing.T) {
	m := remotetest.NewMesh(t)
	c2 := m.StartCluster(t, "cluster2", 2)
	c3 := m.NewCluster(t, "cluster3", 3) // configured, never reachable
	h := startMesh(t, func(o *meshOptions) { o.syncTimeout = 2 * time.Second; o.fullWatch = true })
	h.connect(c2)
	h.connect(c3)
	// Nothing starts before the local policies are in.
	time.Sleep(200 * time.Millisecond)
	if st := h.mesh.status(); len(st.Clusters) != 0 {
		t.Fatalf("remote clusters started before the local policies synced: %v", st.Clusters)
	}
	close(h.ready)
	start := time.Now()
	err := h.mesh.waitSynced(context.Background())
	if err == nil || !strings.HasSuffix(err.Error(), ": cluster3") {
		t.Fatalf("waitSynced = %v, want a timeout naming cluster3 only", err)
	}
	if waited := time.Since(start); waited < 1500*time.Millisecond || waited > 5*time.Second {
		t.Fatalf("waitSynced returned after %s with a 2s timeout", waited)
	}
	if st := h.remoteStatus("cluster2"); !st.Synced {
		t.Fatalf("cluster2 not synced: %+v", st)
	}
	if err := os.Remove(filepath.Join(h.dir, "cluster3.yaml")); err != nil {
		t.Fatal(err)
	}
	h.waitStatus("gone", "cluster2", func(*remoteStatusView) bool { return len(h.mesh.status().Clusters) == 1 })
}

// A local endpoint whose policy allows cluster2's app=a keeps that allow entry while cluster2's
// server restarts and while the policy's selectors change: remote identities go only when a
// complete new state says so.
func TestClusterMesh_RemoteAllowSurvivesOutageAndSelectorChange(t *testing.T) {
	m := remotetest.NewMesh(t)
	c2 := m.NewCluster(t, "cluster2", 2)
	a, b := populate(c2)
	c2.Start()
	h := startMesh(t, func(o *meshOptions) { o.staleGrace = time.Minute })
	eng := h.sink.engine

	local := identity.ID(1<<16 | 500)
	localLabels, err := identity.ParseLabels("k8s:class=deathstar", "k8s:io.kubernetes.pod.namespace=default", "k8s:io.cilium.k8s.policy.cluster=cluster1")
	if err != nil {
		t.Fatal(err)
	}
	eng.UpdateIdentities(map[identity.ID]identity.Labels{local: localLabels}, nil)
	if _, err := eng.AddEndpoint(local); err != nil {
		t.Fatal(err)
	}
	applyPolicy := func(apps string) {
		t.Helper()
		doc := `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: deathstar, namespace: default}
spec:
  endpointSelector: {matchLabels: {class: deathstar}}
  ingress:
  - fromEndpoints:
    - matchExpressions:
      - {key: app, operator: In, values: [` + apps + `]}
      - {key: io.cilium.k8s.policy.cluster, operator: In, values: [cluster2]}
`
		pols, _, err := api.Decode([]byte(doc), api.DecodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := eng.ReplacePolicies(pols, nil); err != nil {
			t.Fatal(err)
		}
		h.mesh.policiesChanged()
	}
	allows := func() []identity.ID {
		ms, ok := eng.MapState(local)
		if !ok {
			t.Fatal("local endpoint not registered")
		}
		var out []identity.ID
		for k, v := range ms {
			if k.Direction == policy.Ingress && k.Identity != 0 && !v.Deny {
				out = append(out, k.Identity)
			}
		}
		slices.Sort(out)
		return out
	}
	waitAllows := func(what string, want ...identity.ID) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !slices.Equal(allows(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: allowed %v, want %v", what, allows(), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	applyPolicy("a")
	close(h.ready)
	h.connect(c2)
	waitAllows("app=a imported", a)
	if ids := h.sink.state(a, b); slices.Contains(ids, "identity/"+b.String()) {
		t.Fatalf("the selector-scoped watch imported an unselected identity: %v", ids)
	}

	// Outage: the allow entry stays (stale), and after the restart nothing was withdrawn.
	c2.Stop()
	h.waitStatus("stale", "cluster2", func(s *remoteStatusView) bool { return s.Stale })
	time.Sleep(300 * time.Millisecond)
	waitAllows("during the outage", a)
	c2.Start()
	h.waitStatus("resynced", "cluster2", func(s *remoteStatusView) bool { return s.Synced && !s.Stale })
	waitAllows("after the resync", a)
	if w := h.sink.withdrawals(); len(w) != 0 {
		t.Fatalf("the outage withdrew %v", w)
	}

	// Selector change: b arrives once the new watch is complete; a never leaves meanwhile.
	applyPolicy("a, b")
	waitAllows("app=a and app=b", a, b)
	if w := h.sink.withdrawals(); len(w) != 0 {
		t.Fatalf("widening the selectors withdrew %v", w)
	}
	applyPolicy("b")
	waitAllows("app=b only", b)
	h.waitState([]identity.ID{a, b}, "identity/"+b.String(), "ipcache/10.2.1.11/32="+b.String(), "route/cluster2/n1 via 10.99.2.1")
}

func TestClusterMesh_StaleEntriesWithdrawnAfterGrace(t *testing.T) {
	m := remotetest.NewMesh(t)
	c2 := m.NewCluster(t, "cluster2", 2)
	a, b := populate(c2)
	c2.Start()
	h := startMesh(t, func(o *meshOptions) { o.staleGrace = 500 * time.Millisecond; o.fullWatch = true })
	close(h.ready)
	h.connect(c2)
	h.waitStatus("synced", "cluster2", func(s *remoteStatusView) bool { return s.Synced && s.Identities == 2 })
	c2.Stop()
	h.waitStatus("stale", "cluster2", func(s *remoteStatusView) bool { return s.Stale && s.Identities == 2 })
	h.waitState([]identity.ID{a, b})
	h.waitStatus("withdrawn", "cluster2", func(s *remoteStatusView) bool {
		return !s.Stale && s.Identities == 0 && s.Endpoints == 0 && s.Nodes == 0
	})
}

func TestClusterMesh_RemoteMayNotClaimLocalAddresses(t *testing.T) {
	m := remotetest.NewMesh(t)
	c2 := m.NewCluster(t, "cluster2", 2)
	id := c2.PutIdentity(300, "k8s:app=a")
	c2.PutEndpoint("10.1.1.7/32", id, "n1") // inside the local pod CIDR 10.1.1.0/24
	c2.PutEndpoint("10.2.1.7/32", id, "n1")
	c2.PutNode("n1", "10.99.2.1", "10.1.1.0/24")
	c2.PutNode("n2", "10.99.2.2", "10.2.1.0/24")
	c2.Start()
	h := startMesh(t, func(o *meshOptions) { o.fullWatch = true })
	close(h.ready)
	h.connect(c2)
	h.waitStatus("synced", "cluster2", func(s *remoteStatusView) bool { return s.Synced })
	h.waitState([]identity.ID{id}, "identity/"+id.String(), "ipcache/10.2.1.7/32="+id.String(), "route/cluster2/n1 via 10.99.2.1", "route/cluster2/n2 via 10.99.2.2")
	h.sink.mu.Lock()
	cidrs := h.sink.routes["cluster2/n1"].PodCIDRs
	h.sink.mu.Unlock()
	if len(cidrs) != 0 {
		t.Fatalf("a remote node routes local addresses: %v", cidrs)
	}
}

func TestClusterMesh_ChangedConfigThatNeverSyncsGoesStaleAndKeepsTheClaim(t *testing.T) {
	m := remotetest.NewMesh(t)
	c2 := m.NewCluster(t, "cluster2", 2)
	a, b := populate(c2)
	c2.Start()
	c4 := m.StartCluster(t, "cluster4", 2)
	h := startMesh(t, func(o *meshOptions) { o.staleGrace = 2 * time.Second; o.fullWatch = true })
	close(h.ready)
	cfg := h.connect(c2)
	h.waitStatus("synced", "cluster2", func(s *remoteStatusView) bool { return s.Synced && s.Identities == 2 })
	full := []string{"identity/" + a.String(), "identity/" + b.String(), "ipcache/10.2.1.10/32=" + a.String(), "ipcache/10.2.1.11/32=" + b.String(), "route/cluster2/n1 via 10.99.2.1"}
	h.waitState([]identity.ID{a, b}, full...)

	// The new configuration names an address nothing listens on: what cluster2 delivered stays
	// for the grace period, as after any loss of the connection, and then goes.
	cfg.Address = "127.0.0.1:1"
	if _, err := clustermesh.WriteRemoteConfig(h.dir, cfg); err != nil {
		t.Fatal(err)
	}
	h.waitStatus("stale under the new configuration", "cluster2", func(s *remoteStatusView) bool {
		return s.Stale && s.Identities == 2 && strings.Contains(s.LastError, "127.0.0.1:1")
	})
	// Meanwhile its ID stays taken.
	h.connect(c4)
	h.waitStatus("cluster4 refused", "cluster4", func(s *remoteStatusView) bool {
		return strings.Contains(s.LastError, `cluster "cluster4" (ID 2) clashes with connected cluster "cluster2" (ID 2)`)
	})
	if st := h.remoteStatus("cluster4"); st.Connected || st.Identities != 0 {
		t.Fatalf("cluster4 imported while cluster2's entries are in force: %+v", st)
	}
	h.waitState([]identity.ID{a, b})
	h.waitStatus("cluster4 accepted once cluster2's entries are gone", "cluster4", func(s *remoteStatusView) bool { return s.Synced })
}

func TestClusterMesh_ClustersWithOneIDStartingTogetherAreNotBothAccepted(t *testing.T) {
	m := remotetest.NewMesh(t)
	c2 := m.StartCluster(t, "cluster2", 2)
	c4 := m.StartCluster(t, "cluster4", 2)
	var (
		mu      sync.Mutex
		first   = map[string]error{}
		checked = map[string]chan struct{}{"cluster2": make(chan struct{}), "cluster4": make(chan struct{})}
	)
	other := map[string]string{"cluster2": "cluster4", "cluster4": "cluster2"}
	h := startMesh(t, func(o *meshOptions) {
		o.fullWatch = true
		o.clientOptions = func(opts *remote.Options) {
			opts.MinBackoff, opts.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
			name, check := opts.Config.Name, opts.Check
			opts.Check = func(info remote.Info) error {
				err := check(info)
				mu.Lock()
				_, seen := first[name]
				if !seen {
					first[name] = err
					close(checked[name])
				}
				mu.Unlock()
				if err == nil && !seen {
					// Hold the accepted one before it is connected until the other was checked:
					// the window in which a claim based on the connection state is not yet taken.
					select {
					case <-checked[other[name]]:
					case <-time.After(10 * time.Second):
					}
				}
				return err
			}
		}
	})
	h.connect(c2)
	h.connect(c4)
	close(h.ready)
	for _, c := range checked {
		select {
		case <-c:
		case <-time.After(15 * time.Second):
			t.Fatal("a cluster was never checked")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if (first["cluster2"] == nil) == (first["cluster4"] == nil) {
		t.Fatalf("first checks: cluster2 %v, cluster4 %v; want exactly one accepted", first["cluster2"], first["cluster4"])
	}
}

func TestClusterMesh_SelectorsBeyondTheMeshAPILimitsShowInStatus(t *testing.T) {
	m := remotetest.NewMesh(t)
	c2 := m.NewCluster(t, "cluster2", 2)
	a, b := populate(c2)
	c2.Start()
	many := make([][]api.Requirement, clustermesh.MaxSelectors+1)
	for i := range many {
		many[i] = []api.Requirement{{Source: identity.SourceAny, Key: "app", Op: api.OpIn, Values: []string{fmt.Sprint("v", i)}}}
	}
	h := startMesh(t, func(o *meshOptions) { o.selectorsFor = func(string) [][]api.Requirement { return many } })
	close(h.ready)
	h.connect(c2)
	h.waitStatus("synced with a full watch", "cluster2", func(s *remoteStatusView) bool { return s.Synced && s.Identities == 2 })
	h.waitState([]identity.ID{a, b}, "identity/"+a.String(), "identity/"+b.String(), "ipcache/10.2.1.10/32="+a.String(), "ipcache/10.2.1.11/32="+b.String(), "route/cluster2/n1 via 10.99.2.1")
	_, per := h.mesh.summary()
	if len(per) != 1 || !strings.Contains(per[0].Message, "watching everything: the selectors exceed the mesh API's limits: 4097 selectors") {
		t.Fatalf("status does not show the fallback to a full watch: %v", per)
	}
}
