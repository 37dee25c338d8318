package policy

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/policy/api"
)

// mesh is a test world: an engine for the local cluster and named endpoints with identities.
type mesh struct {
	t        testing.TB
	e        *Engine
	alloc    *LocalCIDRAllocator
	ids      map[string]identity.ID
	clusters map[string]uint32
	next     map[uint32]uint32
}

func newMesh(t testing.TB, opts Options) *mesh {
	t.Helper()
	if opts.ClusterName == "" {
		opts.ClusterName = "cluster1"
	}
	alloc := NewLocalCIDRAllocator()
	if opts.CIDRAllocator == nil {
		opts.CIDRAllocator = alloc
	}
	e, err := NewEngine(opts)
	if err != nil {
		t.Fatal(err)
	}
	m := &mesh{t: t, e: e, alloc: alloc, ids: map[string]identity.ID{}, clusters: map[string]uint32{opts.ClusterName: 1}, next: map[uint32]uint32{}}
	for _, id := range identity.ReservedIDs() {
		m.ids[id.String()] = id
	}
	return m
}

// endpoint gives a workload an identity: name, namespace, cluster ("" = local), then k=v labels;
// "ns:k=v" labels are namespace labels.
func (m *mesh) endpoint(name, namespace, cluster string, labels ...string) identity.ID {
	m.t.Helper()
	if cluster == "" {
		cluster = m.e.opts.ClusterName
	}
	pod, nsLabels := map[string]string{}, map[string]string{}
	for _, l := range labels {
		target := pod
		if rest, ok := strings.CutPrefix(l, "ns:"); ok {
			target, l = nsLabels, rest
		}
		k, v, _ := strings.Cut(l, "=")
		target[k] = v
	}
	lbls, err := identity.EndpointLabels(pod, namespace, nsLabels, cluster)
	if err != nil {
		m.t.Fatal(err)
	}
	cid, ok := m.clusters[cluster]
	if !ok {
		cid = uint32(len(m.clusters) + 1)
		m.clusters[cluster] = cid
	}
	n := m.next[cid] + identity.MinLocalID
	m.next[cid]++
	id, err := identity.DefaultLayout.ClusterScoped(cid, n)
	if err != nil {
		m.t.Fatal(err)
	}
	m.e.UpdateIdentities(map[identity.ID]identity.Labels{id: lbls}, nil)
	m.ids[name] = id
	return id
}

// addr names the identity an address resolves to (for CIDR peers).
func (m *mesh) addr(ip string) identity.ID {
	return m.alloc.Resolve(netip.MustParseAddr(ip))
}

func (m *mesh) id(name string) identity.ID {
	m.t.Helper()
	if id, ok := m.ids[name]; ok {
		return id
	}
	if strings.Count(name, ".") == 3 || strings.Contains(name, ":") {
		return m.addr(name)
	}
	m.t.Fatalf("unknown endpoint %q", name)
	return 0
}

func decodeFile(t testing.TB, name string) []*api.Policy {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	base := strings.TrimSuffix(filepath.Base(name), filepath.Ext(name))
	ps, _, err := api.Decode(data, api.DecodeOptions{Name: base})
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func decodeString(t testing.TB, doc string) []*api.Policy {
	t.Helper()
	ps, _, err := api.Decode([]byte(doc), api.DecodeOptions{Name: "inline"})
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func (m *mesh) apply(ps ...*api.Policy) []EndpointDelta {
	m.t.Helper()
	_, deltas, err := m.e.ReplacePolicies(ps, nil)
	if err != nil {
		m.t.Fatal(err)
	}
	return deltas
}

func (m *mesh) load(files ...string) {
	m.t.Helper()
	for _, f := range files {
		m.apply(decodeFile(m.t, f)...)
	}
}

func (m *mesh) remove(keys ...api.Key) {
	m.t.Helper()
	if _, _, err := m.e.ReplacePolicies(nil, keys); err != nil {
		m.t.Fatal(err)
	}
}

// flowCase is one row of a truth table.
type flowCase struct {
	from, to string
	port     uint16
	proto    uint8  // 0: TCP
	http     string // "METHOD /path"
	l7       map[string]string
	l7proto  string
	want     Verdict
}

func (m *mesh) check(t *testing.T, cases []flowCase) {
	t.Helper()
	for _, c := range cases {
		proto := c.proto
		if proto == 0 {
			proto = ProtoTCP
		}
		f := Flow{Src: m.id(c.from), Dst: m.id(c.to), Proto: proto, Port: c.port}
		if c.http != "" {
			method, path, _ := strings.Cut(c.http, " ")
			f.HTTP = &HTTPRequest{Method: method, Path: path}
		}
		if c.l7 != nil {
			f.L7 = &L7Request{Proto: c.l7proto, Fields: c.l7}
		}
		tr, err := m.e.Decide(f)
		if err != nil {
			t.Fatalf("%s -> %s: %v", c.from, c.to, err)
		}
		if tr.Verdict != c.want {
			t.Errorf("%s -> %s %d/%s %s: got %s, want %s\n%s", c.from, c.to, c.port, ProtoName(proto), c.http, tr.Verdict, c.want, tr)
		}
		m.checkMapStateAgrees(t, f, tr)
	}
}

// checkMapStateAgrees checks that MapState.Lookup, what the datapath implements, reaches the same
// L3/L4 decision as Decide for each evaluated side.
func (m *mesh) checkMapStateAgrees(t *testing.T, f Flow, tr Trace) {
	t.Helper()
	for _, side := range []struct {
		dt   DirectionTrace
		self identity.ID
		peer identity.ID
	}{{tr.Egress, f.Src, f.Dst}, {tr.Ingress, f.Dst, f.Src}} {
		if !side.dt.Evaluated {
			continue
		}
		ms, err := m.e.ComputeMapState(side.self)
		if err != nil {
			t.Fatal(err)
		}
		v, ok := ms.Lookup(side.peer, side.dt.Direction, f.Proto, f.Port)
		l4Allowed := ok && !v.Deny
		wantL4 := side.dt.Verdict != Drop
		if l4Allowed != wantL4 {
			t.Errorf("%s of %d from %d: MapState says allowed=%v (%v), Decide says %s", side.dt.Direction, side.self, side.peer, l4Allowed, v, side.dt.Verdict)
		}
		if wantL4 && v.Redirect != (len(side.dt.Allowed) == 0 && len(side.dt.Redirected) > 0) {
			t.Errorf("%s of %d from %d: MapState redirect=%v disagrees with Decide %+v", side.dt.Direction, side.self, side.peer, v.Redirect, side.dt)
		}
	}
}
