package policy

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/policy/api"
)

func TestIncremental_NewIdentityChangesOnlyItsEntries(t *testing.T) {
	m := features(t, Options{})
	m.apply(decodeString(t, cnp+`specs:
- endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEndpoints: [{matchLabels: {tier: back}}]
    toPorts: [{ports: [{port: "5432", protocol: TCP}]}]
  - fromEndpoints: [{matchLabels: {app: web}}]
- endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEndpoints: [{matchLabels: {tier: back}}]
`)...)
	for _, name := range []string{"db", "web", "api"} {
		if _, err := m.e.AddEndpoint(m.id(name)); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := m.e.MapState(m.id("db"))
	if in, eg, ok := m.e.Enforcement(m.id("db")); !ok || !in || eg {
		t.Fatalf("db enforcement = ingress %v, egress %v, registered %v", in, eg, ok)
	}
	if in, eg, _ := m.e.Enforcement(m.id("web")); in || !eg {
		t.Fatalf("web enforcement = ingress %v, egress %v", in, eg)
	}
	lbls, _ := identity.EndpointLabels(map[string]string{"app": "worker", "tier": "back"}, "prod", nil, "cluster1")
	worker := identity.ID(1<<16 | 5000)
	deltas := m.e.UpdateIdentities(map[identity.ID]identity.Labels{worker: lbls}, nil)
	if m.e.recomputes != 0 {
		t.Fatalf("a new identity recomputed %d endpoints from scratch", m.e.recomputes)
	}
	// Deltas come sorted by identity: web was numbered before db.
	if len(deltas) != 2 || deltas[0].Identity != m.id("web") || deltas[1].Identity != m.id("db") {
		t.Fatalf("deltas = %+v, want one for web and one for db", deltas)
	}
	for _, d := range deltas {
		if len(d.Deletes) != 0 || len(d.Upserts) != 1 {
			t.Fatalf("delta %+v: want exactly one new entry", d)
		}
		for k := range d.Upserts {
			if k.Identity != worker {
				t.Fatalf("delta touches %v", k)
			}
		}
	}
	after, _ := m.e.MapState(m.id("db"))
	if len(after) != len(before)+1 {
		t.Fatalf("db MapState grew from %d to %d entries", len(before), len(after))
	}
	// Deleting it removes exactly that entry again.
	deltas = m.e.UpdateIdentities(nil, []identity.ID{worker})
	if len(deltas) != 2 || len(deltas[0].Deletes) != 1 || deltas[0].Deletes[0].Identity != worker {
		t.Fatalf("deltas after delete = %+v", deltas)
	}
}

func TestIncremental_EndpointsShareByIdentity(t *testing.T) {
	m := features(t, Options{})
	id := m.id("db")
	for range 2 {
		if _, err := m.e.AddEndpoint(id); err != nil {
			t.Fatal(err)
		}
	}
	m.e.RemoveEndpoint(id)
	if _, ok := m.e.MapState(id); !ok {
		t.Fatal("endpoint gone after one of two removals")
	}
	m.e.RemoveEndpoint(id)
	if _, ok := m.e.MapState(id); ok {
		t.Fatal("endpoint still registered")
	}
	if _, err := m.e.AddEndpoint(identity.ID(1<<16 | 4242)); err == nil {
		t.Fatal("AddEndpoint accepted an unknown identity")
	}
}

// TestIncremental_DeltasMatchFullComputation drives random identity and policy changes and checks
// after each that every registered endpoint's MapState, kept up to date only by applying the
// returned deltas, equals a computation from scratch.
func TestIncremental_DeltasMatchFullComputation(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	m := newMesh(t, Options{})
	apps := []string{"a", "b", "c", "d"}
	namespaces := []string{"n1", "n2"}
	policies := []string{
		cnp + "spec:\n  endpointSelector: {matchLabels: {app: a}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {app: b}}]\n    toPorts: [{ports: [{port: \"80\", protocol: TCP}], rules: {http: [{method: GET}]}}]\n  - fromEndpoints: [{matchLabels: {app: c}}]\n    toPorts: [{ports: [{port: \"80\", protocol: TCP}]}]\n",
		ccnp + "spec:\n  endpointSelector: {matchExpressions: [{key: app, operator: In, values: [a, b]}]}\n  egress:\n  - toEndpoints: [{matchExpressions: [{key: app, operator: NotIn, values: [a]}]}]\n  - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]\n  egressDeny:\n  - toEndpoints: [{matchLabels: {app: d}}]\n    toPorts: [{ports: [{port: \"22\"}]}]\n",
		"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: n2}\nspec:\n  podSelector: {}\n  ingress:\n  - from: [{namespaceSelector: {}}, {ipBlock: {cidr: 10.0.0.0/8}}]\n    ports: [{port: 443}]\n",
		ccnp + "spec:\n  endpointSelector: {}\n  ingress:\n  - fromRequires: [{matchLabels: {io.kubernetes.pod.namespace: n1}}]\n  - fromEndpoints: [{}]\n    toPorts: [{ports: [{port: \"9000\", endPort: 9010}]}]\n",
		// The same key from an FQDN peer (plain) and a CIDR peer (L7): the FQDN selections change
		// alone, so an entry loses one contribution and keeps the other.
		ccnp + "spec:\n  endpointSelector: {matchLabels: {app: a}}\n  egress:\n  - toFQDNs: [{matchName: x.com}]\n    toPorts: [{ports: [{port: \"443\", protocol: TCP}]}]\n  - toCIDR: [10.0.0.0/8]\n    toPorts: [{ports: [{port: \"443\", protocol: TCP}], rules: {http: [{method: GET}]}}]\n",
	}
	var fqdnIDs []identity.ID
	for i := range 4 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 9, 9, byte(i)}), 32)
		id, _ := identity.LocalCIDR(uint32(1000 + i))
		m.e.UpdateIdentities(map[identity.ID]identity.Labels{id: CIDRLabels(p)}, nil)
		fqdnIDs = append(fqdnIDs, id)
	}
	decoded := make([][]*api.Policy, len(policies))
	for i, p := range policies {
		decoded[i] = decodeString(t, p)
		// Same names would replace each other: make each distinct.
		for _, d := range decoded[i] {
			d.Name = fmt.Sprintf("%s-%d", d.Name, i)
		}
	}
	tracked := map[identity.ID]MapState{}
	apply := func(deltas []EndpointDelta) {
		for _, d := range deltas {
			ms, ok := tracked[d.Identity]
			if !ok {
				t.Fatalf("delta for unregistered identity %d", d.Identity)
			}
			d.Apply(ms)
		}
	}
	var live []identity.ID
	next := uint32(identity.MinLocalID)
	for step := range 400 {
		switch op := rng.IntN(10); {
		case op < 4: // new identity
			lbls, _ := identity.EndpointLabels(map[string]string{"app": apps[rng.IntN(len(apps))]}, namespaces[rng.IntN(2)], nil, []string{"cluster1", "cluster2"}[rng.IntN(2)])
			id := identity.ID(1<<16 | next)
			next++
			live = append(live, id)
			apply(m.e.UpdateIdentities(map[identity.ID]identity.Labels{id: lbls}, nil))
			if rng.IntN(3) == 0 {
				ms, err := m.e.AddEndpoint(id)
				if err != nil {
					t.Fatal(err)
				}
				tracked[id] = ms
			}
		case op < 5 && rng.IntN(2) == 0: // the DNS proxy learns other addresses for x.com
			var ids []identity.ID
			for _, id := range fqdnIDs {
				if rng.IntN(2) == 0 {
					ids = append(ids, id)
				}
			}
			apply(m.e.SetFQDNSelections(api.FQDNSelector{MatchName: "x.com"}, ids))
		case op < 5 && rng.IntN(2) == 0 && len(live) > 0: // an identity's labels are replaced
			id := live[rng.IntN(len(live))]
			lbls, _ := identity.EndpointLabels(map[string]string{"app": apps[rng.IntN(len(apps))]}, namespaces[rng.IntN(2)], nil, "cluster1")
			apply(m.e.UpdateIdentities(map[identity.ID]identity.Labels{id: lbls}, nil))
		case op < 5 && len(live) > 0: // identity goes away
			i := rng.IntN(len(live))
			id := live[i]
			live = slices.Delete(live, i, i+1)
			if _, ok := tracked[id]; ok {
				m.e.RemoveEndpoint(id)
				delete(tracked, id)
			}
			apply(m.e.UpdateIdentities(nil, []identity.ID{id}))
		case op < 8: // a policy is imported (again)
			_, deltas, err := m.e.ReplacePolicies(decoded[rng.IntN(len(decoded))], nil)
			if err != nil {
				t.Fatal(err)
			}
			apply(deltas)
		default: // a policy is deleted
			p := decoded[rng.IntN(len(decoded))][0]
			_, deltas, err := m.e.ReplacePolicies(nil, []api.Key{p.Key()})
			if err != nil {
				t.Fatal(err)
			}
			apply(deltas)
		}
		for id, ms := range tracked {
			want, err := m.e.ComputeMapState(id)
			if err != nil {
				t.Fatal(err)
			}
			if diff := diffMapStates(ms, want); diff != "" {
				t.Fatalf("step %d: identity %d: incremental MapState differs from full computation:\n%s", step, id, diff)
			}
		}
	}
	if len(tracked) == 0 {
		t.Fatal("no endpoint was tracked")
	}
}

func diffMapStates(got, want MapState) string {
	var out string
	for _, k := range want.Keys() {
		if v, ok := got[k]; !ok || !v.Equal(want[k]) {
			out += fmt.Sprintf("  %v: got %v (present %v), want %v\n", k, v, ok, want[k])
		}
	}
	for _, k := range got.Keys() {
		if _, ok := want[k]; !ok {
			out += fmt.Sprintf("  %v: extra %v\n", k, got[k])
		}
	}
	return out
}

type failingAllocator struct {
	*LocalCIDRAllocator
	fail netip.Prefix
}

func (f failingAllocator) AllocateCIDR(p netip.Prefix) (identity.ID, error) {
	if p == f.fail {
		return 0, errors.New("allocator unavailable")
	}
	return f.LocalCIDRAllocator.AllocateCIDR(p)
}

func TestRepository_ReplaceIsAtomic(t *testing.T) {
	m := features(t, Options{CIDRAllocator: failingAllocator{NewLocalCIDRAllocator(), netip.MustParsePrefix("192.0.2.0/24")}})
	good := decodeString(t, cnp+"spec:\n  endpointSelector: {matchLabels: {app: web}}\n  egress:\n  - toCIDR: [10.0.0.0/8]\n")
	rev, _, err := m.e.ReplacePolicies(good, nil)
	if err != nil || rev != 1 {
		t.Fatalf("ReplacePolicies = %d, %v", rev, err)
	}
	if _, err := m.e.AddEndpoint(m.id("web")); err != nil {
		t.Fatal(err)
	}
	_, selectorsBefore := m.e.SelectorCache().Len()
	before, _ := m.e.MapState(m.id("web"))

	other := decodeString(t, ccnp+"spec:\n  endpointSelector: {matchLabels: {app: web}}\n  egress:\n  - toCIDR: [198.51.100.0/24]\n")
	bad := decodeString(t, cnp+"spec:\n  endpointSelector: {matchLabels: {app: web}}\n  egress:\n  - toCIDR: [192.0.2.0/24]\n")
	_, deltas, err := m.e.ReplacePolicies(append(other, bad...), nil)
	if err == nil || len(deltas) != 0 {
		t.Fatalf("ReplacePolicies = %v, %v; want an error and no delta", deltas, err)
	}
	if m.e.Revision() != 1 || len(m.e.Policies()) != 1 {
		t.Fatalf("revision %d, %d policies after a failed replace", m.e.Revision(), len(m.e.Policies()))
	}
	if _, ok := m.e.CIDRIdentity(netip.MustParsePrefix("198.51.100.0/24")); ok {
		t.Fatal("CIDR identity of the failed replace kept")
	}
	if _, selectors := m.e.SelectorCache().Len(); selectors != selectorsBefore {
		t.Fatalf("selectors %d -> %d after a failed replace", selectorsBefore, selectors)
	}
	after, _ := m.e.MapState(m.id("web"))
	if diff := diffMapStates(after, before); diff != "" {
		t.Fatalf("MapState changed:\n%s", diff)
	}

	// Deleting releases selectors and CIDR identities.
	rev, deltas, err = m.e.ReplacePolicies(nil, []api.Key{good[0].Key()})
	if err != nil || rev != 2 || len(deltas) != 1 {
		t.Fatalf("delete = %d, %v, %v", rev, deltas, err)
	}
	if _, ok := m.e.CIDRIdentity(netip.MustParsePrefix("10.0.0.0/8")); ok {
		t.Fatal("CIDR identity kept after its policy was deleted")
	}
}

type recordingUser struct{ added, removed []identity.ID }

func (r *recordingUser) SelectionsChanged(_ *CachedSelector, added, removed []identity.ID) {
	r.added = append(r.added, added...)
	r.removed = append(r.removed, removed...)
}

func TestSelectorCache_IncrementalSelections(t *testing.T) {
	c := NewSelectorCache()
	lbl := func(s ...string) identity.Labels {
		ls, err := identity.ParseLabels(s...)
		if err != nil {
			t.Fatal(err)
		}
		return ls
	}
	c.UpdateIdentities(map[identity.ID]identity.Labels{
		300: lbl("k8s:app=web", "k8s:env=prod"),
		301: lbl("k8s:app=db"),
	}, nil)
	web := c.add(newLabelSelector([]api.Requirement{{Source: identity.SourceAny, Key: "app", Op: api.OpIn, Values: []string{"web"}}}))
	noEnv := c.add(newLabelSelector([]api.Requirement{{Source: identity.SourceK8s, Key: "env", Op: api.OpDoesNotExist}}))
	again := c.add(newLabelSelector([]api.Requirement{{Source: identity.SourceAny, Key: "app", Op: api.OpIn, Values: []string{"web"}}}))
	if again != web {
		t.Fatal("equal selectors got two cache entries")
	}
	if !slices.Equal(c.Selections(web), []identity.ID{300}) || !slices.Equal(c.Selections(noEnv), []identity.ID{301}) {
		t.Fatalf("selections: web %v, noEnv %v", c.Selections(web), c.Selections(noEnv))
	}
	u := &recordingUser{}
	c.subscribe(web, u)
	if n := c.UpdateIdentities(map[identity.ID]identity.Labels{302: lbl("container:app=web")}, []identity.ID{300}); n != 2 {
		t.Fatalf("%d selectors changed, want 2", n)
	}
	if !slices.Equal(u.added, []identity.ID{302}) || !slices.Equal(u.removed, []identity.ID{300}) {
		t.Fatalf("user heard added %v removed %v", u.added, u.removed)
	}
	if !slices.Equal(c.Selections(noEnv), []identity.ID{301, 302}) {
		t.Fatalf("noEnv = %v", c.Selections(noEnv))
	}
	c.release(web)
	c.release(again)
	c.release(noEnv)
	if _, n := c.Len(); n != 0 {
		t.Fatalf("%d selectors left after release", n)
	}
}
