package policy

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/policy/api"
)

// The benchmark world of issue 4: 10,000 identities and 1,000 rules.
//   - 1,000 apps, each in namespace ns-(app%50), each with 10 identities (version v0..v9), tier
//     t0..t4: 10,000 identities;
//   - one CiliumNetworkPolicy per app (1,000 rules): ingress from another app of another namespace
//     on 8080, from its namespace's tier on 9090 (HTTP rules for one app in ten), egress to a third
//     app on 5432 and, for one app in ten, to a /16;
//   - the first 100 policies also admit, on port 7000, peers labelled hot=h<i> or hot=all in any
//     namespace: 100 distinct selectors that a new identity labelled hot=all matches.
const (
	benchApps       = 1000
	benchVersions   = 10
	benchNamespaces = 50
	benchHotRules   = 100
)

func benchNamespace(app int) string { return fmt.Sprintf("ns-%d", app%benchNamespaces) }

func benchPolicies(tb testing.TB) []*api.Policy {
	var out []*api.Policy
	for a := range benchApps {
		b, c := (a+7)%benchApps, (a+13)%benchApps
		doc := fmt.Sprintf(`apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: app-%d, namespace: %s}
spec:
  endpointSelector: {matchLabels: {app: app-%d}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: app-%d, k8s:io.kubernetes.pod.namespace: %s}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
  - fromEndpoints: [{matchLabels: {tier: t%d}}]
    toPorts: [{ports: [{port: "9090", protocol: TCP}]%s}]
`, a, benchNamespace(a), a, b, benchNamespace(b), a%5, benchL7(a))
		if a < benchHotRules {
			doc += fmt.Sprintf(`  - fromEndpoints: [{matchExpressions: [{key: hot, operator: In, values: [h%d, all]}, {key: io.kubernetes.pod.namespace, operator: Exists}]}]
    toPorts: [{ports: [{port: "7000", protocol: TCP}]}]
`, a)
		}
		doc += fmt.Sprintf(`  egress:
  - toEndpoints: [{matchLabels: {app: app-%d, k8s:io.kubernetes.pod.namespace: %s}}]
    toPorts: [{ports: [{port: "5432", protocol: TCP}]}]
`, c, benchNamespace(c))
		if a%10 == 0 {
			doc += fmt.Sprintf("  - toCIDR: [10.%d.0.0/16]\n", a/10)
		}
		ps, _, err := api.Decode([]byte(doc), api.DecodeOptions{})
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, ps...)
	}
	return out
}

func benchL7(a int) string {
	if a%10 != 0 {
		return ""
	}
	return `, rules: {http: [{method: GET, path: "/v1/.*"}]}`
}

func benchIdentities(tb testing.TB) map[identity.ID]identity.Labels {
	ids := make(map[identity.ID]identity.Labels, benchApps*benchVersions)
	for a := range benchApps {
		for v := range benchVersions {
			lbls, err := identity.EndpointLabels(map[string]string{
				"app": fmt.Sprintf("app-%d", a), "version": fmt.Sprintf("v%d", v), "tier": fmt.Sprintf("t%d", a%5),
			}, benchNamespace(a), nil, "cluster1")
			if err != nil {
				tb.Fatal(err)
			}
			ids[benchID(a, v)] = lbls
		}
	}
	return ids
}

func benchID(app, version int) identity.ID {
	return identity.ID(1<<16 | uint32(identity.MinLocalID+app*benchVersions+version))
}

func benchEngine(tb testing.TB) *Engine {
	e, err := NewEngine(Options{ClusterName: "cluster1"})
	if err != nil {
		tb.Fatal(err)
	}
	e.UpdateIdentities(benchIdentities(tb), nil)
	if _, _, err := e.ReplacePolicies(benchPolicies(tb), nil); err != nil {
		tb.Fatal(err)
	}
	return e
}

// BenchmarkComputeEndpoint is the full computation of one endpoint's MapState from scratch, over
// the 1,000 endpoints (one per app).
func BenchmarkComputeEndpoint(b *testing.B) {
	e := benchEngine(b)
	entries := 0
	i := 0
	for b.Loop() {
		ms, err := e.ComputeMapState(benchID(i%benchApps, 0))
		if err != nil {
			b.Fatal(err)
		}
		entries += len(ms)
		i++
	}
	b.ReportMetric(float64(entries)/float64(i), "entries/endpoint")
}

// BenchmarkRegister1000Endpoints registers (computes and subscribes) all 1,000 endpoints.
func BenchmarkRegister1000Endpoints(b *testing.B) {
	e := benchEngine(b)
	for b.Loop() {
		for a := range benchApps {
			if _, err := e.AddEndpoint(benchID(a, 0)); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		for a := range benchApps {
			e.RemoveEndpoint(benchID(a, 0))
		}
		b.StartTimer()
	}
}

// BenchmarkNewIdentity adds one identity matched by 100 selectors while 1,000 endpoints are
// registered. "incremental" is the engine's delta; "recompute-affected" is the baseline: computing
// from scratch the endpoints the delta touched.
func BenchmarkNewIdentity(b *testing.B) {
	e := benchEngine(b)
	for a := range benchApps {
		if _, err := e.AddEndpoint(benchID(a, 0)); err != nil {
			b.Fatal(err)
		}
	}
	hot, err := identity.EndpointLabels(map[string]string{"app": "newcomer", "hot": "all"}, "ns-new", nil, "cluster1")
	if err != nil {
		b.Fatal(err)
	}
	newID := identity.ID(2<<16 | 60000)
	deltas := e.UpdateIdentities(map[identity.ID]identity.Labels{newID: hot}, nil)
	if len(deltas) != benchHotRules {
		b.Fatalf("%d endpoints changed, want %d", len(deltas), benchHotRules)
	}
	affected := make([]identity.ID, 0, len(deltas))
	for _, d := range deltas {
		affected = append(affected, d.Identity)
	}
	e.UpdateIdentities(nil, []identity.ID{newID})

	b.Run("incremental", func(b *testing.B) {
		changed := 0
		for b.Loop() {
			deltas := e.UpdateIdentities(map[identity.ID]identity.Labels{newID: hot}, nil)
			b.StopTimer()
			for _, d := range deltas {
				changed += len(d.Upserts)
			}
			e.UpdateIdentities(nil, []identity.ID{newID})
			b.StartTimer()
		}
		b.ReportMetric(float64(changed)/float64(b.N), "entries/op")
	})
	b.Run("recompute-affected", func(b *testing.B) {
		e.UpdateIdentities(map[identity.ID]identity.Labels{newID: hot}, nil)
		defer e.UpdateIdentities(nil, []identity.ID{newID})
		for b.Loop() {
			for _, id := range affected {
				if _, err := e.ComputeMapState(id); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}

// BenchmarkSelectorCacheMemory reports the heap the engine holds for 10,000 identities and 1,000
// rules (selector cache and repository), and what the 1,000 endpoints' computed policies add.
func BenchmarkSelectorCacheMemory(b *testing.B) {
	for b.Loop() {
		before := heapInUse()
		e := benchEngine(b)
		cached := heapInUse()
		for a := range benchApps {
			if _, err := e.AddEndpoint(benchID(a, 0)); err != nil {
				b.Fatal(err)
			}
		}
		registered := heapInUse()
		ids, sels := e.SelectorCache().Len()
		b.ReportMetric(float64(cached-before)/(1<<20), "MB-cache+repo")
		b.ReportMetric(float64(registered-cached)/(1<<20), "MB-1000-endpoints")
		b.ReportMetric(float64(ids), "identities")
		b.ReportMetric(float64(sels), "selectors")
		runtime.KeepAlive(e)
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestBench_TargetsHold keeps the targets from regressing unnoticed: generous bounds (the
// race detector and a shared machine slow things down), checked on the real benchmark world.
func TestBench_TargetsHold(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("timing check: builds the 10,000-identity world; meaningless under -race")
	}
	e := benchEngine(t)
	for a := range benchApps {
		if _, err := e.AddEndpoint(benchID(a, 0)); err != nil {
			t.Fatal(err)
		}
	}
	hot, _ := identity.EndpointLabels(map[string]string{"hot": "all"}, "ns-new", nil, "cluster1")
	start := time.Now()
	deltas := e.UpdateIdentities(map[identity.ID]identity.Labels{identity.ID(2<<16 | 60000): hot}, nil)
	incremental := time.Since(start)
	if len(deltas) != benchHotRules {
		t.Fatalf("%d endpoint deltas, want %d", len(deltas), benchHotRules)
	}
	start = time.Now()
	if _, err := e.ComputeMapState(benchID(0, 0)); err != nil {
		t.Fatal(err)
	}
	full := time.Since(start)
	if incremental > 50*time.Millisecond || full > 200*time.Millisecond {
		t.Fatalf("incremental %v, full %v: far above the 1 ms / 10 ms targets", incremental, full)
	}
}
