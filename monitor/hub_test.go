package monitor

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestHub_FilterByTypeAndIdentity(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := NewHub()
	drops := h.Subscribe(ctx, Filter{Types: []Type{TypeDrop}, FromIdentity: 65793}, 10)
	all := h.Subscribe(ctx, Filter{}, 10)

	h.Publish(Event{Type: TypeDrop, Source: Peer{Identity: 65793}})
	h.Publish(Event{Type: TypeDrop, Source: Peer{Identity: 65794}})
	h.Publish(Event{Type: TypeL7, Source: Peer{Identity: 65793}})

	if got := len(drops.C); got != 1 {
		t.Fatalf("filtered subscriber got %d events, want 1", got)
	}
	if got := len(all.C); got != 3 {
		t.Fatalf("unfiltered subscriber got %d events, want 3", got)
	}
}

func TestHub_SlowSubscriberLosesEventsWithoutBlocking(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := NewHub()
	slow := h.Subscribe(ctx, Filter{}, 2)
	done := make(chan struct{})
	go func() {
		for i := 0; i < 100; i++ {
			h.Publish(Event{Type: TypeTrace})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Publish blocked on a slow subscriber")
	}
	if slow.Lost() != 98 {
		t.Fatalf("Lost() = %d, want 98", slow.Lost())
	}
}

func TestHub_CancelClosesFeedAndUnsubscribes(t *testing.T) {
	h := NewHub()
	ctx, cancel := context.WithCancel(context.Background())
	s := h.Subscribe(ctx, Filter{}, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range s.C {
		}
	}()
	cancel()
	wg.Wait()
	if n := h.Subscribers(); n != 0 {
		t.Fatalf("%d subscribers left after cancel", n)
	}
	h.Publish(Event{Type: TypeDrop}) // must not panic on a closed feed
}

func TestEvent_String(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 6_000_000, time.UTC)
	cases := []struct {
		name string
		ev   Event
		want string
	}{
		{
			name: "drop",
			ev: Event{Time: ts, Type: TypeDrop, Verdict: VerdictDenied, Reason: "no policy", Protocol: "TCP", Direction: "ingress",
				Source: Peer{Identity: 65793, Addr: netip.MustParseAddrPort("10.1.0.5:40000")},
				Dest:   Peer{Identity: 65792, Addr: netip.MustParseAddrPort("10.1.1.7:80"), Endpoint: 12}},
			want: "03:04:05.006 drop denied (no policy) identity 65793 10.1.0.5:40000 -> identity 65792 10.1.1.7:80 (endpoint 12) TCP ingress",
		},
		{
			name: "l7",
			ev: Event{Time: ts, Type: TypeL7, Verdict: VerdictDenied, Source: Peer{Identity: 65793, Cluster: "cluster2"}, Dest: Peer{Identity: 65792},
				L7: &L7{Protocol: "http", Method: "PUT", Host: "deathstar", Path: "/v1/exhaust-port", Status: 403, Latency: 1500 * time.Microsecond}},
			want: "03:04:05.006 l7 denied cluster2/identity 65793 -> identity 65792 http PUT deathstar/v1/exhaust-port => 403 (1.5ms)",
		},
		{
			name: "generic l7 fields sorted",
			ev: Event{Time: ts, Type: TypeL7, Verdict: VerdictAllowed, Source: Peer{Identity: 1}, Dest: Peer{Identity: 2},
				L7: &L7{Protocol: "r2d2", Fields: map[string]string{"file": "/etc/motd", "cmd": "READ"}}},
			want: "03:04:05.006 l7 allowed identity 1 -> identity 2 r2d2 cmd=READ file=/etc/motd",
		},
		{name: "agent", ev: Event{Time: ts, Type: TypeAgent, Message: "node n2 is dead"}, want: "03:04:05.006 agent: node n2 is dead"},
	}
	for _, c := range cases {
		if got := c.ev.String(); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
		if _, err := json.Marshal(c.ev); err != nil {
			t.Errorf("%s: json: %v", c.name, err)
		}
	}
}

func TestParseType(t *testing.T) {
	if _, err := ParseType("drop"); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseType("dorp"); err == nil || !strings.Contains(err.Error(), "valid:") {
		t.Fatalf("ParseType(dorp) = %v", err)
	}
}
