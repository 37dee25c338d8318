package kvstore_test

import (
	"context"
	"strings"
	"testing"

	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
	"github.com/prometheus/client_golang/prometheus"
)

const metricsPrefix = "palisade_kvstore_"

func TestMetrics_CountOperationsErrorsAndLatency(t *testing.T) {
	srv := etcdtest.Start(t)
	reg := prometheus.NewRegistry()
	c := etcdtest.NewClient(t, srv, etcdtest.WithRegisterer(reg))
	ctx := context.Background()

	for range 2 {
		if err := c.Put(ctx, "m/a", []byte("x"), kvstore.NoLease); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := c.Get(ctx, "m/a"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Get(ctx, ""); err == nil {
		t.Fatal("get of the empty key succeeded")
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := c.Watch(wctx, "m/")
	for ev := range ch {
		if ev.Type == kvstore.EventSynced {
			break
		}
	}
	if err := c.Put(ctx, "m/b", []byte("y"), kvstore.NoLease); err != nil {
		t.Fatal(err)
	}
	if ev := <-ch; ev.Key != "m/b" {
		t.Fatalf("event %+v", ev)
	}

	counts := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			op := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "operation" {
					op = l.GetValue()
				}
			}
			switch mf.GetName() {
			case metricsPrefix + "operations_total":
				counts["total/"+op] = m.GetCounter().GetValue()
			case metricsPrefix + "operation_errors_total":
				counts["errors/"+op] = m.GetCounter().GetValue()
			case metricsPrefix + "operation_duration_seconds":
				counts["latency/"+op] = float64(m.GetHistogram().GetSampleCount())
			case metricsPrefix + "watch_delivery_seconds":
				counts["delivered"] = float64(m.GetHistogram().GetSampleCount())
			case metricsPrefix + "watchers":
				counts["watchers"] = m.GetGauge().GetValue()
			}
		}
	}
	// The watch's listing is a list operation; the puts include the one the watch saw.
	want := map[string]float64{
		"total/put": 3, "errors/put": 0, "latency/put": 3,
		"total/get": 2, "errors/get": 1, "latency/get": 2,
		"total/list": 1, "delivered": 1, "watchers": 1,
	}
	for k, v := range want {
		if counts[k] != v {
			t.Errorf("%s = %v, want %v", k, counts[k], v)
		}
	}
	cancel()
	for range ch {
	}
}

func TestMetrics_ClientsShareARegistererAndNilRegistersNothing(t *testing.T) {
	srv := etcdtest.Start(t)
	reg := prometheus.NewRegistry()
	a := etcdtest.NewClient(t, srv, etcdtest.WithRegisterer(reg))
	b := etcdtest.NewClient(t, srv, etcdtest.WithRegisterer(reg))
	for _, c := range []*kvstore.Client{a, b} {
		if err := c.Put(context.Background(), "k", nil, kvstore.NoLease); err != nil {
			t.Fatal(err)
		}
	}
	if got := gatherCounter(t, reg, metricsPrefix+"operations_total", "put"); got != 2 {
		t.Fatalf("puts counted through a shared registerer: %v, want 2", got)
	}

	// Without a Registerer nothing reaches the default registry.
	etcdtest.NewClient(t, srv)
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), metricsPrefix) {
			t.Fatalf("nil Registerer registered %s on the default registry", mf.GetName())
		}
	}
}

func gatherCounter(t *testing.T, g prometheus.Gatherer, name, operation string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "operation" && l.GetValue() == operation {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
