package apiserver

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/certs"
	"github.com/palisade-mesh/palisade/clustermesh"
	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/policy/api"
)

const waitFor = 10 * time.Second

// seed writes two identities (an empire tiefighter and an alliance xwing), an address for each,
// and a node.
func seed(t *testing.T, kv *kvstore.Client) {
	putIdentity(t, kv, 1001, labels(t, "k8s:org=empire", "k8s:class=tiefighter"))
	putIdentity(t, kv, 1002, labels(t, "k8s:org=alliance", "k8s:class=xwing"))
	putIPCache(t, kv, "10.100.1.1/32", 1001, "node1")
	putIPCache(t, kv, "10.100.1.2/32", 1002, "node1")
	putNode(t, kv, "node1", "192.168.0.1", "10.100.1.0/24")
}

func empireSelector() *apiv1.MeshSelector {
	return clustermesh.SelectorToProto([]api.Requirement{{Source: "k8s", Key: "org", Op: api.OpIn, Values: []string{"empire"}}})
}

func TestWatch_FullWatchSendsStateThenSyncDoneThenChanges(t *testing.T) {
	kv := startEtcd(t)
	seed(t, kv)
	p := newPKI(t)
	srv := startServer(t, kv, p, nil)
	client := dial(t, srv, p.source(t, p.ca, "cluster2", certs.RoleAgent), p.token(t, "cluster2"))

	w := openWatch(t, client, &apiv1.MeshWatchRequest{})
	w.recvUntil("initial sync", waitFor, func(m *mirror) bool { return m.synced })
	want := []string{"identity/1001", "identity/1002", "ipcache/10.100.1.1/32", "ipcache/10.100.1.2/32", "node/node1"}
	if got := w.m.keys(); !slices.Equal(got, want) {
		t.Fatalf("state at sync_done = %v, want %v", got, want)
	}
	if w.m.state["ipcache/10.100.1.1/32"] != "1001@node1" || w.m.state["node/node1"] != "192.168.0.1|10.100.1.0/24" {
		t.Fatalf("wrong values: %v", w.m.state)
	}

	steps := []struct {
		name  string
		write func()
		cond  func(*mirror) bool
	}{
		{"identity added", func() { putIdentity(t, kv, 1003, labels(t, "k8s:org=empire", "k8s:class=deathstar")) }, has("identity/1003")},
		{"ipcache added", func() { putIPCache(t, kv, "10.100.2.3/32", 1003, "node2") }, has("ipcache/10.100.2.3/32")},
		{"node added", func() { putNode(t, kv, "node2", "192.168.0.2", "10.100.2.0/24") }, has("node/node2")},
		{"ipcache moved", func() { putIPCache(t, kv, "10.100.2.3/32", 1001, "node2") }, func(m *mirror) bool { return m.state["ipcache/10.100.2.3/32"] == "1001@node2" }},
		{"ipcache deleted", func() { del(t, kv, ipKey("10.100.2.3/32")) }, lacks("ipcache/10.100.2.3/32")},
		{"identity deleted", func() { del(t, kv, identityKey(1003)) }, lacks("identity/1003")},
		{"node deleted", func() { del(t, kv, nodesPrefix+"node2") }, lacks("node/node2")},
	}
	for _, st := range steps {
		st.write()
		w.recvUntil(st.name, waitFor, st.cond)
	}
	if len(w.m.dupes) > 0 {
		t.Fatalf("duplicates or unknown deletes: %v", w.m.dupes)
	}
}

func TestWatch_SelectorScopedGetsOnlyMatchingIdentitiesAndTheirAddresses(t *testing.T) {
	kv := startEtcd(t)
	seed(t, kv)
	p := newPKI(t)
	srv := startServer(t, kv, p, nil)
	client := dial(t, srv, p.source(t, p.ca, "cluster2", certs.RoleAgent), p.token(t, "cluster2"))

	w := openWatch(t, client, &apiv1.MeshWatchRequest{Selectors: []*apiv1.MeshSelector{empireSelector()}})
	w.recvUntil("initial sync", waitFor, func(m *mirror) bool { return m.synced })
	want := []string{"identity/1001", "ipcache/10.100.1.1/32", "node/node1"}
	if got := w.m.keys(); !slices.Equal(got, want) {
		t.Fatalf("state at sync_done = %v, want %v", got, want)
	}

	// An alliance address, then an empire one: the stream is ordered per kind, so when the empire
	// address arrives the alliance one would have arrived before it.
	putIPCache(t, kv, "10.100.1.20/32", 1002, "node1")
	putIPCache(t, kv, "10.100.1.10/32", 1001, "node1")
	w.recvUntil("empire address", waitFor, has("ipcache/10.100.1.10/32"))
	if _, ok := w.m.state["ipcache/10.100.1.20/32"]; ok {
		t.Fatal("an alliance address reached a stream that selects only the empire")
	}

	// The address comes before its identity (two watches, no order between them): it is sent
	// when the identity turns out to match.
	putIPCache(t, kv, "10.100.1.30/32", 1030, "node1")
	putIdentity(t, kv, 1031, labels(t, "k8s:org=alliance"))
	putIdentity(t, kv, 1030, labels(t, "k8s:org=empire", "k8s:class=shuttle"))
	w.recvUntil("late identity with its address", waitFor, has("identity/1030", "ipcache/10.100.1.30/32"))

	// An address moving from a selected identity to an unselected one goes away.
	putIPCache(t, kv, "10.100.1.10/32", 1002, "node1")
	w.recvUntil("moved address", waitFor, lacks("ipcache/10.100.1.10/32"))

	// A deleted identity takes its addresses with it.
	del(t, kv, identityKey(1030))
	w.recvUntil("identity deleted", waitFor, lacks("identity/1030", "ipcache/10.100.1.30/32"))

	if _, ok := w.m.state["identity/1031"]; ok {
		t.Fatal("alliance identity 1031 sent to an empire-only stream")
	}
	if len(w.m.dupes) > 0 {
		t.Fatalf("duplicates or unknown deletes: %v", w.m.dupes)
	}
}

func TestWatch_KindsFilterWhatIsSent(t *testing.T) {
	kv := startEtcd(t)
	seed(t, kv)
	p := newPKI(t)
	srv := startServer(t, kv, p, nil)
	client := dial(t, srv, p.source(t, p.ca, "cluster2", certs.RoleAgent), p.token(t, "cluster2"))

	for _, tc := range []struct {
		name  string
		kinds []apiv1.MeshKind
		sels  []*apiv1.MeshSelector
		want  []string
	}{
		{"nodes only", []apiv1.MeshKind{apiv1.MeshKind_MESH_KIND_NODES}, nil, []string{"node/node1"}},
		{"identities only", []apiv1.MeshKind{apiv1.MeshKind_MESH_KIND_IDENTITIES}, nil, []string{"identity/1001", "identity/1002"}},
		{"ipcache of selected identities", []apiv1.MeshKind{apiv1.MeshKind_MESH_KIND_IPCACHE}, []*apiv1.MeshSelector{empireSelector()}, []string{"ipcache/10.100.1.1/32"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := openWatch(t, client, &apiv1.MeshWatchRequest{Kinds: tc.kinds, Selectors: tc.sels})
			w.recvUntil("initial sync", waitFor, func(m *mirror) bool { return m.synced })
			if got := w.m.keys(); !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestResolveSelector_AnswersMatchingIdentities(t *testing.T) {
	kv := startEtcd(t)
	seed(t, kv)
	p := newPKI(t)
	srv := startServer(t, kv, p, nil)
	client := dial(t, srv, p.source(t, p.ca, "cluster2", certs.RoleAgent), p.token(t, "cluster2"))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()

	for _, tc := range []struct {
		name string
		sel  *apiv1.MeshSelector
		want []uint32
	}{
		{"org=empire", empireSelector(), []uint32{1001}},
		{"empty matches all", &apiv1.MeshSelector{}, []uint32{1001, 1002}},
		{"class NotIn xwing", clustermesh.SelectorToProto([]api.Requirement{{Source: "any", Key: "class", Op: api.OpNotIn, Values: []string{"xwing"}}}), []uint32{1001}},
		{"nothing", clustermesh.SelectorToProto([]api.Requirement{{Source: "k8s", Key: "org", Op: api.OpIn, Values: []string{"rebels"}}}), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := client.ResolveSelector(ctx, &apiv1.ResolveSelectorRequest{Selector: tc.sel})
			if err != nil {
				t.Fatal(err)
			}
			var got []uint32
			for _, id := range resp.Identities {
				got = append(got, id.Id)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}

	info, err := client.Info(ctx, &apiv1.MeshInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Cluster != servedCluster || info.ClusterId != servedID || info.MaxConnectedClusters != 255 ||
		!slices.Contains(info.Capabilities, clustermesh.CapabilityWatchSelectors) || info.Heartbeat == nil {
		t.Fatalf("Info = %v", info)
	}
}

func TestWatch_RejectsBadRequests(t *testing.T) {
	kv := startEtcd(t)
	p := newPKI(t)
	srv := startServer(t, kv, p, nil)
	client := dial(t, srv, p.source(t, p.ca, "cluster2", certs.RoleAgent), p.token(t, "cluster2"))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()

	tooMany := make([]*apiv1.MeshSelector, clustermesh.MaxSelectors+1)
	for i := range tooMany {
		tooMany[i] = empireSelector()
	}
	for _, tc := range []struct {
		name string
		req  *apiv1.MeshWatchRequest
		want string
	}{
		{"unknown operator", &apiv1.MeshWatchRequest{Selectors: []*apiv1.MeshSelector{{Requirements: []*apiv1.SelectorRequirement{{Key: "org", Operator: "Like", Values: []string{"x"}}}}}}, "selectors[0]: requirements[0]: unknown operator"},
		{"too many selectors", &apiv1.MeshWatchRequest{Selectors: tooMany}, "4097 selectors, at most 4096"},
		{"unspecified kind", &apiv1.MeshWatchRequest{Kinds: []apiv1.MeshKind{apiv1.MeshKind_MESH_KIND_NODES, 0}}, "kinds[1]: MESH_KIND_UNSPECIFIED is not a kind"},
		{"unknown kind", &apiv1.MeshWatchRequest{Kinds: []apiv1.MeshKind{42}}, "kinds[0]: 42 is not a kind"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := client.Watch(ctx, tc.req)
			if err == nil {
				_, err = s.Recv()
			}
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.want) {
				t.Fatalf("Watch: %v, want InvalidArgument saying %q", err, tc.want)
			}
		})
	}
	_, err := client.ResolveSelector(ctx, &apiv1.ResolveSelectorRequest{})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "no selector") {
		t.Fatalf("ResolveSelector without selector: %v", err)
	}
}
