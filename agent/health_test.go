package agent

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/health"
)

func startLoopbackMember(t *testing.T, name string, keys health.KeySet) *health.Health {
	t.Helper()
	h, err := health.New(health.Config{
		Meta:        health.Meta{Node: name, Cluster: "c1", Addrs: []string{"127.0.0.1"}, Version: "v9", Started: time.Now()},
		BindAddr:    netip.MustParseAddr("127.0.0.1"),
		BindAnyPort: true,
		Keys:        keys,
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func TestWithHealth_MergesGossipIntoTheRegistry(t *testing.T) {
	keys, err := health.NewKeySet()
	if err != nil {
		t.Fatal(err)
	}
	self := startLoopbackMember(t, "n1", keys)
	peer := startLoopbackMember(t, "n3", keys)
	if _, err := peer.Join([]string{self.LocalAddr().String()}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := self.WaitFor(ctx, "n3", health.StateAlive); err != nil {
		t.Fatal(err)
	}
	a := &Agent{cfg: Config{NodeName: "n1"}}
	a.health.h = self

	// n1 registered and in gossip, n2 registered only, n3 in gossip only (lease expired).
	nodes := a.withHealth([]*apiv1.Node{
		{Name: "n2", State: "registered"},
		{Name: "n1", State: "registered", Local: true},
	})
	got := map[string]*apiv1.Node{}
	var order []string
	for _, n := range nodes {
		got[n.Name] = n
		order = append(order, n.Name)
	}
	if len(order) != 3 || order[0] != "n1" || order[1] != "n2" || order[2] != "n3" {
		t.Fatalf("nodes %v, want n1 n2 n3", order)
	}
	if got["n1"].State != "alive" || got["n1"].Since == nil {
		t.Errorf("n1: %+v", got["n1"])
	}
	if got["n2"].State != "unknown" {
		t.Errorf("n2 registered but not in gossip: %q, want unknown", got["n2"].State)
	}
	if n := got["n3"]; n.State != "alive" || n.Cluster != "c1" || n.Version != "v9" || len(n.Addresses) != 1 {
		t.Errorf("n3 from gossip metadata: %+v", n)
	}
}

func TestHealthStatus_ReportsWhyGossipIsDown(t *testing.T) {
	a := &Agent{}
	if st := a.healthStatus(context.Background()); st.Ok || st.Message != "gossip: starting" {
		t.Fatalf("before start: %+v", st)
	}
}
