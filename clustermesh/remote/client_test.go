package remote_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/clustermesh"
	"github.com/palisade-mesh/palisade/clustermesh/remote"
	"github.com/palisade-mesh/palisade/clustermesh/remote/remotetest"
	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/policy/api"
)

// recorder is a consumer that keeps what it was given and notes every delivery a correct client
// never makes: an upsert repeating what the consumer holds, a deletion of something it does not
// hold.
type recorder struct {
	mu       sync.Mutex
	ids      map[identity.ID]string
	ips      map[netip.Prefix]identity.ID
	nodes    map[string]string
	batches  []remote.Changes
	problems []string
}

func newRecorder() *recorder {
	return &recorder{ids: map[identity.ID]string{}, ips: map[netip.Prefix]identity.ID{}, nodes: map[string]string{}}
}

func (r *recorder) Apply(ch remote.Changes) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches = append(r.batches, ch)
	for id, l := range ch.Identities {
		if r.ids[id] == l.String() {
			r.problems = append(r.problems, fmt.Sprintf("identity %d delivered again unchanged", id))
		}
		r.ids[id] = l.String()
	}
	for _, e := range ch.IPCache {
		if old, ok := r.ips[e.Prefix]; ok && old == e.Identity {
			r.problems = append(r.problems, fmt.Sprintf("ipcache %s delivered again unchanged", e.Prefix))
		}
		r.ips[e.Prefix] = e.Identity
	}
	for _, n := range ch.Nodes {
		v := fmt.Sprint(n.IPs, n.PodCIDRs)
		if r.nodes[n.Name] == v {
			r.problems = append(r.problems, fmt.Sprintf("node %s delivered again unchanged", n.Name))
		}
		r.nodes[n.Name] = v
	}
	for _, id := range ch.DeletedIdentities {
		if _, ok := r.ids[id]; !ok {
			r.problems = append(r.problems, fmt.Sprintf("deletion of unknown identity %d", id))
		}
		delete(r.ids, id)
	}
	for _, p := range ch.DeletedIPCache {
		if _, ok := r.ips[p]; !ok {
			r.problems = append(r.problems, fmt.Sprintf("deletion of unknown ipcache %s", p))
		}
		delete(r.ips, p)
	}
	for _, n := range ch.DeletedNodes {
		if _, ok := r.nodes[n]; !ok {
			r.problems = append(r.problems, "deletion of unknown node "+n)
		}
		delete(r.nodes, n)
	}
}

// state is what the consumer holds, as sorted "identity/<id>", "ipcache/<prefix>=<id>" and
// "node/<name>" strings.
func (r *recorder) state() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for id := range r.ids {
		out = append(out, fmt.Sprintf("identity/%d", id))
	}
	for p, id := range r.ips {
		out = append(out, fmt.Sprintf("ipcache/%s=%d", p, id))
	}
	for n := range r.nodes {
		out = append(out, "node/"+n)
	}
	slices.Sort(out)
	return out
}

func (r *recorder) batchCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.batches)
}

func (r *recorder) batchesSince(n int) []remote.Changes {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.batches[n:])
}

func (r *recorder) checkNoProblems(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.problems) > 0 {
		t.Fatalf("deliveries a correct client never makes: %v", r.problems)
	}
}

// delivered summarises batches as sorted "+identity/<id>", "-ipcache/<prefix>", ... strings.
func delivered(batches []remote.Changes) []string {
	var out []string
	for _, b := range batches {
		for id := range b.Identities {
			out = append(out, fmt.Sprintf("+identity/%d", id))
		}
		for _, id := range b.DeletedIdentities {
			out = append(out, fmt.Sprintf("-identity/%d", id))
		}
		for _, e := range b.IPCache {
			out = append(out, fmt.Sprintf("+ipcache/%s", e.Prefix))
		}
		for _, p := range b.DeletedIPCache {
			out = append(out, fmt.Sprintf("-ipcache/%s", p))
		}
		for _, n := range b.Nodes {
			out = append(out, "+node/"+n.Name)
		}
		for _, n := range b.DeletedNodes {
			out = append(out, "-node/"+n)
		}
	}
	slices.Sort(out)
	return out
}

func startClient(t *testing.T, cfg clustermesh.RemoteConfig, mutate func(*remote.Options)) (*remote.Client, *recorder) {
	t.Helper()
	rec := newRecorder()
	opts := remote.Options{
		Config:     cfg,
		Consumer:   rec,
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 300 * time.Millisecond,
		Logger:     remotetest.Quiet(),
	}
	if mutate != nil {
		mutate(&opts)
	}
	c, err := remote.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx); err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return c, rec
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitState(t *testing.T, rec *recorder, want ...string) {
	t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(15 * time.Second)
	for !slices.Equal(rec.state(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("consumer holds\n %v\nwant\n %v", rec.state(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// populate writes two endpoints with identities app=a (300) and app=b (301), and a node.
func populate(c *remotetest.Cluster) {
	c.PutIdentity(300, "k8s:app=a")
	c.PutIdentity(301, "k8s:app=b")
	c.PutEndpoint("10.2.1.10/32", c.IdentityID(300), "n1")
	c.PutEndpoint("10.2.1.11/32", c.IdentityID(301), "n1")
	c.PutNode("n1", "10.99.2.1", "10.2.1.0/24")
}

func TestClient_InitialSyncThenLiveChanges(t *testing.T) {
	mesh := remotetest.NewMesh(t)
	c2 := mesh.NewCluster(t, "cluster2", 2)
	populate(c2)
	c2.Start()
	client, rec := startClient(t, c2.RemoteConfig("cluster1", t.TempDir()), nil)

	eventually(t, "sync", func() bool { return client.Status().Synced })
	waitState(t, rec, "identity/131372", "identity/131373", "ipcache/10.2.1.10/32=131372", "ipcache/10.2.1.11/32=131373", "node/n1")
	if b := rec.batchesSince(0); len(b) != 1 || !b[0].Synced {
		t.Fatalf("the initial state came in %d batches (want one, marked synced): %+v", len(b), b)
	}
	st := client.Status()
	if !st.Connected || st.Info == nil || st.Info.ClusterID != 2 || st.Identities != 2 || st.IPCache != 2 || st.Nodes != 1 || st.TokenExpiry.IsZero() || st.LastSync.IsZero() {
		t.Fatalf("status after sync: %+v", st)
	}

	n := rec.batchCount()
	c2.PutIdentity(302, "k8s:app=c")
	c2.PutEndpoint("10.2.1.12/32", c2.IdentityID(302), "n1")
	c2.DeleteEndpoint("10.2.1.11/32")
	c2.DeleteIdentity(301)
	waitState(t, rec, "identity/131372", "identity/131374", "ipcache/10.2.1.10/32=131372", "ipcache/10.2.1.12/32=131374", "node/n1")
	if got, want := delivered(rec.batchesSince(n)), []string{"+identity/131374", "+ipcache/10.2.1.12/32", "-identity/131373", "-ipcache/10.2.1.11/32"}; !slices.Equal(got, want) {
		t.Fatalf("live changes delivered %v, want %v", got, want)
	}
	rec.checkNoProblems(t)
}

func TestClient_ReconnectAfterServerRestartDeliversOnlyDifferences(t *testing.T) {
	mesh := remotetest.NewMesh(t)
	c2 := mesh.StartCluster(t, "cluster2", 2)
	populate(c2)
	client, rec := startClient(t, c2.RemoteConfig("cluster1", t.TempDir()), nil)
	before := []string{"identity/131372", "identity/131373", "ipcache/10.2.1.10/32=131372", "ipcache/10.2.1.11/32=131373", "node/n1"}
	waitState(t, rec, before...)
	eventually(t, "sync", func() bool { return client.Status().Synced })

	c2.Stop()
	eventually(t, "the loss noticed", func() bool { st := client.Status(); return !st.Connected && st.Stale })
	// While the server is away the cluster changes.
	c2.DeleteEndpoint("10.2.1.11/32")
	c2.DeleteIdentity(301)
	c2.PutIdentity(302, "k8s:app=c")
	c2.PutEndpoint("10.2.1.12/32", c2.IdentityID(302), "n1")
	time.Sleep(200 * time.Millisecond) // several reconnection attempts fail meanwhile
	if got := rec.state(); !slices.Equal(got, before) {
		t.Fatalf("entries changed while the remote was unreachable: %v", got)
	}
	if st := client.Status(); st.LastError == "" || st.Identities != 2 {
		t.Fatalf("status while unreachable: %+v", st)
	}

	n := rec.batchCount()
	c2.Start()
	waitState(t, rec, "identity/131372", "identity/131374", "ipcache/10.2.1.10/32=131372", "ipcache/10.2.1.12/32=131374", "node/n1")
	eventually(t, "resync", func() bool { return client.Status().Synced })
	batches := rec.batchesSince(n)
	if len(batches) != 1 || !batches[0].Synced {
		t.Fatalf("the resync came in %d batches, want one marked synced", len(batches))
	}
	if got, want := delivered(batches), []string{"+identity/131374", "+ipcache/10.2.1.12/32", "-identity/131373", "-ipcache/10.2.1.11/32"}; !slices.Equal(got, want) {
		t.Fatalf("resync delivered %v, want only the differences %v", got, want)
	}
	if st := client.Status(); st.Stale || !st.Connected || st.LastError != "" {
		t.Fatalf("status after resync: %+v", st)
	}
	rec.checkNoProblems(t)
}

func TestClient_SelectorChangeRestartsTheWatchWithDifferencesOnly(t *testing.T) {
	mesh := remotetest.NewMesh(t)
	c2 := mesh.StartCluster(t, "cluster2", 2)
	populate(c2)
	c2.PutIdentity(302, "k8s:app=c")
	c2.PutEndpoint("10.2.1.12/32", c2.IdentityID(302), "n1")
	appIn := func(values ...string) [][]api.Requirement {
		return [][]api.Requirement{{{Source: identity.SourceAny, Key: "app", Op: api.OpIn, Values: values}}}
	}
	var sels atomic.Pointer[[][]api.Requirement]
	set := func(s [][]api.Requirement) { sels.Store(&s) }
	set(appIn("a"))
	client, rec := startClient(t, c2.RemoteConfig("cluster1", t.TempDir()), func(o *remote.Options) {
		o.Selectors = func() [][]api.Requirement { return *sels.Load() }
	})
	waitState(t, rec, "identity/131372", "ipcache/10.2.1.10/32=131372", "node/n1")
	eventually(t, "sync", func() bool { return client.Status().Synced })
	if st := client.Status(); st.Selectors != 1 {
		t.Fatalf("status selectors %d, want 1", st.Selectors)
	}

	for _, step := range []struct {
		values    []string
		state     []string
		delivered []string
	}{
		{[]string{"a", "b"}, []string{"identity/131372", "identity/131373", "ipcache/10.2.1.10/32=131372", "ipcache/10.2.1.11/32=131373", "node/n1"},
			[]string{"+identity/131373", "+ipcache/10.2.1.11/32"}},
		{[]string{"b"}, []string{"identity/131373", "ipcache/10.2.1.11/32=131373", "node/n1"},
			[]string{"-identity/131372", "-ipcache/10.2.1.10/32"}},
	} {
		n := rec.batchCount()
		set(appIn(step.values...))
		client.UpdateSelectors()
		waitState(t, rec, step.state...)
		if got := delivered(rec.batchesSince(n)); !slices.Equal(got, step.delivered) {
			t.Fatalf("selectors %v: delivered %v, want %v", step.values, got, step.delivered)
		}
	}
	// The same selectors again restart nothing.
	n := rec.batchCount()
	client.UpdateSelectors()
	time.Sleep(200 * time.Millisecond)
	if rec.batchCount() != n || !client.Status().Synced {
		t.Fatal("an unchanged selector set restarted the watch")
	}
	rec.checkNoProblems(t)
}

func TestClient_RefusedClusterImportsNothing(t *testing.T) {
	mesh := remotetest.NewMesh(t)
	c2 := mesh.StartCluster(t, "cluster2", 2)
	populate(c2)
	var checked atomic.Int32
	client, rec := startClient(t, c2.RemoteConfig("cluster1", t.TempDir()), func(o *remote.Options) {
		o.Check = func(info remote.Info) error {
			checked.Add(1)
			return fmt.Errorf("cluster %q (ID %d) clashes with connected cluster %q (ID %d): cluster IDs must be unique in the mesh", info.Cluster, info.ClusterID, "cluster4", 2)
		}
	})
	eventually(t, "the refusal as last error", func() bool {
		return strings.Contains(client.Status().LastError, `cluster "cluster2" (ID 2) clashes with connected cluster "cluster4" (ID 2)`)
	})
	eventually(t, "a retry", func() bool { return checked.Load() >= 2 })
	if st := client.Status(); st.Connected || st.Synced || len(rec.state()) != 0 {
		t.Fatalf("a refused cluster was imported: %+v, %v", st, rec.state())
	}
}

func TestClient_BadCredentialsAreTheLastError(t *testing.T) {
	mesh := remotetest.NewMesh(t)
	c2 := mesh.StartCluster(t, "cluster2", 2)
	c3 := mesh.StartCluster(t, "cluster3", 3)
	populate(c2)
	otherMesh := remotetest.NewMesh(t)
	foreign := otherMesh.StartCluster(t, "cluster2", 2)
	tests := []struct {
		name    string
		mutate  func(t *testing.T, cfg *clustermesh.RemoteConfig)
		wantErr string
	}{
		{"token issued by another cluster", func(t *testing.T, cfg *clustermesh.RemoteConfig) {
			writeFile(t, cfg.TokenFile, c3.Token("cluster1", time.Hour))
		}, "not a signing key of cluster cluster2"},
		{"token issued to another reader", func(t *testing.T, cfg *clustermesh.RemoteConfig) {
			writeFile(t, cfg.TokenFile, c2.Token("cluster9", time.Hour))
		}, `was issued to cluster "cluster9"`},
		{"unsigned garbage token", func(t *testing.T, cfg *clustermesh.RemoteConfig) {
			writeFile(t, cfg.TokenFile, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJjbHVzdGVyMSJ9.")
		}, "signing method none is invalid"},
		{"server certificate from another CA", func(t *testing.T, cfg *clustermesh.RemoteConfig) {
			*cfg = foreign.RemoteConfig("cluster1", t.TempDir())
			cfg.Address = c2.Addr()
		}, "certificate signed by a CA this cluster does not trust"},
		{"server of another cluster at the address", func(t *testing.T, cfg *clustermesh.RemoteConfig) {
			cfg.Address = c3.Addr()
		}, "certificate names another cluster: spiffe://mesh.test/cluster/cluster3/server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := c2.RemoteConfig("cluster1", t.TempDir())
			tt.mutate(t, &cfg)
			client, rec := startClient(t, cfg, nil)
			eventually(t, "the error", func() bool { return strings.Contains(client.Status().LastError, tt.wantErr) })
			if st := client.Status(); st.Connected || len(rec.state()) != 0 {
				t.Fatalf("imported with bad credentials: %+v", st)
			}
		})
	}
}

func TestClient_StaleEntriesWithdrawnAfterTheGracePeriod(t *testing.T) {
	mesh := remotetest.NewMesh(t)
	c2 := mesh.StartCluster(t, "cluster2", 2)
	populate(c2)
	client, rec := startClient(t, c2.RemoteConfig("cluster1", t.TempDir()), func(o *remote.Options) { o.StaleGrace = 500 * time.Millisecond })
	full := []string{"identity/131372", "identity/131373", "ipcache/10.2.1.10/32=131372", "ipcache/10.2.1.11/32=131373", "node/n1"}
	waitState(t, rec, full...)

	c2.Stop()
	stopped := time.Now()
	eventually(t, "stale", func() bool { return client.Status().Stale })
	waitState(t, rec)
	if held := time.Since(stopped); held < 500*time.Millisecond {
		t.Fatalf("entries withdrawn after %s, before the grace period", held)
	}
	if st := client.Status(); st.Stale || st.Identities != 0 || st.IPCache != 0 || st.Nodes != 0 {
		t.Fatalf("status after the grace period: %+v", st)
	}
	c2.Start()
	waitState(t, rec, full...)
	rec.checkNoProblems(t)
}

func TestNew_RejectsUnusableConfiguration(t *testing.T) {
	mesh := remotetest.NewMesh(t)
	c2 := mesh.StartCluster(t, "cluster2", 2)
	good := c2.RemoteConfig("cluster1", t.TempDir())
	tests := []struct {
		name   string
		mutate func(*remote.Options)
	}{
		{"missing certificate", func(o *remote.Options) { o.Config.CertFile += ".missing" }},
		{"missing token", func(o *remote.Options) { o.Config.TokenFile += ".missing" }},
		{"no consumer", func(o *remote.Options) { o.Consumer = nil }},
		{"bad address", func(o *remote.Options) { o.Config.Address = "nowhere" }},
		{"bad layout", func(o *remote.Options) { o.Layout = identity.Layout{MaxConnectedClusters: 7} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := remote.Options{Config: good, Consumer: newRecorder()}
			tt.mutate(&opts)
			if _, err := remote.New(opts); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
