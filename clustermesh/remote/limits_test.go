package remote_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/clustermesh"
	"github.com/palisade-mesh/palisade/clustermesh/remote"
	"github.com/palisade-mesh/palisade/clustermesh/remote/remotetest"
	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/policy/api"
)

func TestClient_RejectedUpsertDeletesWhatItsKeyHeld(t *testing.T) {
	mesh := remotetest.NewMesh(t)
	c2 := mesh.StartCluster(t, "cluster2", 2)
	populate(c2)
	client, rec := startClient(t, c2.RemoteConfig("cluster1", t.TempDir()), nil)
	waitState(t, rec, "identity/131372", "identity/131373", "ipcache/10.2.1.10/32=131372", "ipcache/10.2.1.11/32=131373", "node/n1")
	eventually(t, "sync", func() bool { return client.Status().Synced })

	// 10.2.1.10 is reassigned to an identity cluster2 may not hand out (a local one of the
	// reader): the old mapping must not stay in force.
	c2.PutEndpoint("10.2.1.10/32", identity.ID(5000), "n1")
	waitState(t, rec, "identity/131372", "identity/131373", "ipcache/10.2.1.11/32=131373", "node/n1")
	if st := client.Status(); st.Rejected != 1 || st.IPCache != 1 {
		t.Fatalf("status after a rejected upsert: rejected %d, ipcache %d; want 1, 1", st.Rejected, st.IPCache)
	}
	// A valid upsert of the key brings it back.
	c2.PutEndpoint("10.2.1.10/32", c2.IdentityID(301), "n1")
	waitState(t, rec, "identity/131372", "identity/131373", "ipcache/10.2.1.10/32=131373", "ipcache/10.2.1.11/32=131373", "node/n1")
	rec.checkNoProblems(t)
}

func TestClient_LimitEndsTheStreamAndKeepsWhatWasDelivered(t *testing.T) {
	mesh := remotetest.NewMesh(t)
	c2 := mesh.StartCluster(t, "cluster2", 2)
	populate(c2)
	full := []string{"identity/131372", "identity/131373", "ipcache/10.2.1.10/32=131372", "ipcache/10.2.1.11/32=131373", "node/n1"}

	t.Run("live changes beyond the limit", func(t *testing.T) {
		client, rec := startClient(t, c2.RemoteConfig("cluster1", t.TempDir()), func(o *remote.Options) { o.MaxIPCache = 3 })
		waitState(t, rec, full...)
		eventually(t, "sync", func() bool { return client.Status().Synced })
		c2.PutEndpoints(map[string]identity.ID{"10.2.1.12/32": c2.IdentityID(300), "10.2.1.13/32": c2.IdentityID(300)}, "n1")
		eventually(t, "the limit as last error", func() bool {
			return strings.Contains(client.Status().LastError, `remote cluster "cluster2" sent more than 3 ipcache entries (the limit MaxIPCache)`)
		})
		time.Sleep(300 * time.Millisecond) // reconnections hit the limit again meanwhile
		if got := rec.state(); !slices.Equal(got, full) {
			t.Fatalf("the consumer holds %v beyond the limit, want what was delivered before %v", got, full)
		}
		if st := client.Status(); st.Synced || !st.Stale || st.IPCache != 2 {
			t.Fatalf("status beyond the limit: %+v", st)
		}
		rec.checkNoProblems(t)
	})
	t.Run("initial state beyond the limit", func(t *testing.T) {
		client, rec := startClient(t, c2.RemoteConfig("cluster1", t.TempDir()), func(o *remote.Options) { o.MaxIdentities = 1 })
		eventually(t, "the limit as last error", func() bool {
			return strings.Contains(client.Status().LastError, "sent more than 1 identities (the limit MaxIdentities)")
		})
		if st := client.Status(); st.Synced || len(rec.state()) != 0 {
			t.Fatalf("imported beyond the limit: %+v, %v", st, rec.state())
		}
	})
}

func TestClient_SelectorsBeyondTheServerLimitsFallBackToAFullWatch(t *testing.T) {
	mesh := remotetest.NewMesh(t)
	c2 := mesh.StartCluster(t, "cluster2", 2)
	populate(c2)
	appIn := func(values ...string) []api.Requirement {
		return []api.Requirement{{Source: identity.SourceAny, Key: "app", Op: api.OpIn, Values: values}}
	}
	manySelectors := make([][]api.Requirement, clustermesh.MaxSelectors+1)
	for i := range manySelectors {
		manySelectors[i] = appIn(fmt.Sprint("v", i))
	}
	manyReqs := make([]api.Requirement, clustermesh.MaxRequirementsPerSelect+1)
	for i := range manyReqs {
		manyReqs[i] = api.Requirement{Source: identity.SourceAny, Key: fmt.Sprint("k", i), Op: api.OpExists}
	}
	manyValues := make([]string, clustermesh.MaxValuesPerRequirement+1)
	for i := range manyValues {
		manyValues[i] = fmt.Sprint("v", i)
	}
	bigValue := strings.Repeat("x", 1000)
	var large [][]api.Requirement // within the counts, beyond the server's 4 MiB request limit
	for i := range clustermesh.MaxSelectors {
		vals := make([]string, 2)
		for j := range vals {
			vals[j] = fmt.Sprint(i, j, bigValue)
		}
		large = append(large, appIn(vals...))
	}
	tests := []struct {
		name string
		sels [][]api.Requirement
		want string
	}{
		{"too many selectors", manySelectors, "4097 selectors, the mesh API accepts at most 4096"},
		{"too many requirements", [][]api.Requirement{appIn("a"), manyReqs}, "selector 1: selector has 65 requirements"},
		{"too many values", [][]api.Requirement{appIn(manyValues...)}, "selector 0: requirements[0]: 257 values"},
		{"request too large", large, "the mesh API server reads at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, rec := startClient(t, c2.RemoteConfig("cluster1", t.TempDir()), func(o *remote.Options) {
				o.Selectors = func() [][]api.Requirement { return tt.sels }
			})
			waitState(t, rec, "identity/131372", "identity/131373", "ipcache/10.2.1.10/32=131372", "ipcache/10.2.1.11/32=131373", "node/n1")
			eventually(t, "sync", func() bool { return client.Status().Synced })
			if st := client.Status(); st.Selectors != 0 || !strings.Contains(st.SelectorsWarning, tt.want) {
				t.Fatalf("status: selectors %d, warning %q; want 0 and a warning naming %q", st.Selectors, st.SelectorsWarning, tt.want)
			}
		})
	}
}

func TestClient_InitialViewIsDiffedAndGoesStale(t *testing.T) {
	mesh := remotetest.NewMesh(t)
	c2 := mesh.StartCluster(t, "cluster2", 2)
	populate(c2)
	first, rec := startClient(t, c2.RemoteConfig("cluster1", t.TempDir()), nil)
	waitState(t, rec, "identity/131372", "identity/131373", "ipcache/10.2.1.10/32=131372", "ipcache/10.2.1.11/32=131373", "node/n1")
	eventually(t, "sync", func() bool { return first.Status().Synced })
	held := first.Delivered() // read while it runs only because nothing changes meanwhile
	c2.DeleteEndpoint("10.2.1.11/32")

	t.Run("a reachable cluster gets only the differences", func(t *testing.T) {
		// A recorder of its own: the first client, still running, delivers the deletion too.
		next := newRecorder()
		next.Apply(held)
		n := next.batchCount()
		client, _ := startClient(t, c2.RemoteConfig("cluster1", t.TempDir()), func(o *remote.Options) {
			o.Consumer, o.Initial = next, func() remote.Changes { return held }
		})
		eventually(t, "sync", func() bool { return client.Status().Synced })
		if got, want := delivered(next.batchesSince(n)), []string{"-ipcache/10.2.1.11/32"}; !slices.Equal(got, want) {
			t.Fatalf("first sync delivered %v, want only the difference %v", got, want)
		}
	})
	t.Run("an unreachable cluster's entries go stale and are withdrawn", func(t *testing.T) {
		gone := newRecorder()
		gone.Apply(held)
		cfg := c2.RemoteConfig("cluster1", t.TempDir())
		cfg.Address = "127.0.0.1:1"
		client, _ := startClient(t, cfg, func(o *remote.Options) {
			o.Consumer, o.Initial, o.StaleGrace = gone, func() remote.Changes { return held }, 300*time.Millisecond
		})
		eventually(t, "stale", func() bool { st := client.Status(); return st.Stale && st.Identities == 2 })
		waitState(t, gone)
		gone.checkNoProblems(t)
	})
}
