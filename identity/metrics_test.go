package identity

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
)

// metricValue returns the value of the series name{label=value} (any labels when label is "").
func metricValue(t testing.TB, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if label != "" && !hasLabel(m, label, value) {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	t.Fatalf("no series %s{%s=%q}", name, label, value)
	return 0
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

func TestMetrics_CountAllocationsAndGC(t *testing.T) {
	srv := etcdtest.Start(t)
	reg := prometheus.NewRegistry()
	withReg := func(c *AllocatorConfig) { c.Registerer = reg }
	a, kv := newTestAllocator(t, srv, "node-a", withReg)
	b, _ := newTestAllocator(t, srv, "node-b", withReg) // shares the series
	ctx := testCtx(t, 20*time.Second)
	lbls := labelSet(t, 1)
	id, _, err := a.Allocate(ctx, lbls)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Allocate(ctx, lbls); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Allocate(ctx, lbls); err != nil {
		t.Fatal(err)
	}
	for outcome, want := range map[string]float64{"new": 1, "local": 1, "existing": 1, "error": 0} {
		if got := metricValue(t, reg, "palisade_identity_allocations_total", "outcome", outcome); got != want {
			t.Errorf("allocations{outcome=%s} = %v, want %v", outcome, got, want)
		}
	}
	if got := metricValue(t, reg, "palisade_identity_allocation_duration_seconds", "", ""); got != 2 {
		t.Errorf("duration samples = %v, want 2 (the two that went to etcd)", got)
	}

	for _, al := range []*Allocator{a, a, b} {
		if _, err := al.Release(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	cfg := GCConfig{Registerer: reg}
	gc := newTestGC(t, kv, cfg)
	for range 2 {
		if _, err := gc.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := metricValue(t, reg, "palisade_identity_gc_deleted_total", "kind", "identity"); got != 1 {
		t.Errorf("gc deleted = %v, want 1", got)
	}
	if got := metricValue(t, reg, "palisade_identity_gc_rounds_total", "result", "ok"); got != 2 {
		t.Errorf("gc rounds = %v, want 2", got)
	}
}
