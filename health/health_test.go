package health

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type testMember struct {
	*Health
	reg  *prometheus.Registry
	logs *syncBuffer
}

// startMember runs a member on loopback with a kernel-chosen port.
func startMember(t *testing.T, name string, keys KeySet, seeds ...*testMember) *testMember {
	t.Helper()
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	h, err := New(Config{
		Meta:        Meta{Node: name, Cluster: "test", Addrs: []string{"127.0.0.1"}, Version: "v-test", Started: time.Now()},
		BindAddr:    netip.MustParseAddr("127.0.0.1"),
		BindAnyPort: true,
		Keys:        keys,
		Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer:  reg,
	})
	if err != nil {
		t.Fatalf("start member %s: %v", name, err)
	}
	t.Cleanup(func() { h.Close() })
	var addrs []string
	for _, s := range seeds {
		addrs = append(addrs, s.LocalAddr().String())
	}
	if len(addrs) > 0 {
		if _, err := h.Join(addrs); err != nil {
			t.Fatalf("%s joins: %v", name, err)
		}
	}
	return &testMember{Health: h, reg: reg, logs: logs}
}

func mustKeys(t *testing.T) KeySet {
	t.Helper()
	ks, err := NewKeySet()
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func waitState(t *testing.T, observer *testMember, name string, want State, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := observer.WaitFor(ctx, name, want); err != nil {
		t.Fatal(err)
	}
}

func TestHealth_MembersSeeEachOtherAliveWithMetadata(t *testing.T) {
	keys := mustKeys(t)
	a := startMember(t, "a", keys)
	b := startMember(t, "b", keys, a)
	c := startMember(t, "c", keys, b)
	for _, obs := range []*testMember{a, b, c} {
		for _, name := range []string{"a", "b", "c"} {
			waitState(t, obs, name, StateAlive, 5*time.Second)
		}
	}
	m, _ := a.Member("c")
	if m.Meta.Node != "c" || m.Meta.Cluster != "test" || m.Meta.Version != "v-test" || m.Meta.Started.IsZero() {
		t.Fatalf("metadata of c as seen by a: %+v", m.Meta)
	}
	if m.Addr != c.LocalAddr() {
		t.Fatalf("address of c: %s, want %s", m.Addr, c.LocalAddr())
	}
	if self, _ := a.Member("a"); !self.Local {
		t.Fatal("a does not mark itself local")
	}
	if got := metricValue(a.metrics.members.WithLabelValues("alive")); got != 3 {
		t.Fatalf("alive members gauge on a: %v, want 3", got)
	}
	if packets, streams := a.SentBytes(); packets == 0 || streams == 0 {
		t.Fatalf("a sent %d packet and %d stream bytes; both should be counted", packets, streams)
	}
	// Probes complete within a few intervals and carry an RTT.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if m, _ := a.Member("b"); m.RTT > 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("no probe RTT for b on a")
}

func TestHealth_CrashIsDeadGracefulLeaveIsLeft(t *testing.T) {
	keys := mustKeys(t)
	a := startMember(t, "a", keys)
	b := startMember(t, "b", keys, a)
	c := startMember(t, "c", keys, a)
	d := startMember(t, "d", keys, a)
	for _, n := range []string{"b", "c", "d"} {
		waitState(t, a, n, StateAlive, 5*time.Second)
	}
	recordFrom := time.Now()

	if err := b.Close(); err != nil { // crash: no goodbye
		t.Fatal(err)
	}
	bound := TunedLAN.DetectionBound(4) + time.Second
	waitState(t, a, "b", StateDead, bound)
	waitState(t, d, "b", StateDead, bound)

	if err := c.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitState(t, a, "c", StateLeft, 3*time.Second)
	waitState(t, d, "c", StateLeft, 3*time.Second)
	m, _ := a.Member("b")
	if !m.Since.After(recordFrom) {
		t.Fatalf("dead since %s, before the crash at %s", m.Since, recordFrom)
	}
}

func TestHealth_OnChangeReportsTransitionsInOrder(t *testing.T) {
	keys := mustKeys(t)
	got := make(chan Change, 64)
	logs := &syncBuffer{}
	h, err := New(Config{
		Meta:        Meta{Node: "watcher", Cluster: "test", Started: time.Now()},
		BindAddr:    netip.MustParseAddr("127.0.0.1"),
		BindAnyPort: true,
		Keys:        keys,
		Logger:      slog.New(slog.NewTextHandler(logs, nil)),
		OnChange:    func(c Change) { got <- c },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	w := &testMember{Health: h}
	peer := startMember(t, "peer", keys, w)
	want := []struct {
		name     string
		from, to State
	}{
		{"watcher", "", StateAlive},
		{"peer", "", StateAlive},
	}
	for _, step := range want {
		select {
		case c := <-got:
			if c.Member.Name != step.name || c.From != step.from || c.Member.State != step.to {
				t.Fatalf("change %+v, want %s %q->%q", c, step.name, step.from, step.to)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no change for %s", step.name)
		}
	}
	peer.Close()
	deadline := time.After(TunedLAN.DetectionBound(2) + 2*time.Second)
	for {
		select {
		case c := <-got:
			if c.Member.Name == "peer" && c.Member.State == StateDead {
				if c.From != StateAlive && c.From != StateSuspect {
					t.Fatalf("peer dead from %q", c.From)
				}
				return
			}
		case <-deadline:
			t.Fatal("peer never reported dead")
		}
	}
}

func TestHealth_WrongKeyIsRejectedAndLogged(t *testing.T) {
	a := startMember(t, "a", mustKeys(t))
	intruder := startMember(t, "intruder", mustKeys(t))
	if _, err := intruder.Join([]string{a.LocalAddr().String()}); err == nil {
		t.Fatal("a member with another key joined")
	}
	deadline := time.Now().Add(3 * time.Second)
	for metricValue(a.metrics.rejected.WithLabelValues("decrypt")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("a did not count the rejected message; log:\n%s", a.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(a.logs.String(), "rejected gossip message") {
		t.Fatalf("rejection not logged:\n%s", a.logs.String())
	}
	if _, ok := a.Member("intruder"); ok {
		t.Fatal("the intruder became a member")
	}
}

func TestHealth_OtherClusterIsRejected(t *testing.T) {
	keys := mustKeys(t)
	a := startMember(t, "a", keys)
	h, err := New(Config{
		Meta:        Meta{Node: "other", Cluster: "other-cluster", Started: time.Now()},
		BindAddr:    netip.MustParseAddr("127.0.0.1"),
		BindAnyPort: true,
		Keys:        keys,
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.Join([]string{a.LocalAddr().String()}); err == nil {
		t.Fatal("a member of another cluster joined")
	}
	if _, ok := a.Member("other"); ok {
		t.Fatal("the other cluster's member is listed")
	}
}

func TestHealth_KeyRotationWithoutRestart(t *testing.T) {
	old := mustKeys(t)
	a := startMember(t, "a", old)
	b := startMember(t, "b", old, a)
	waitState(t, a, "b", StateAlive, 5*time.Second)

	next := mustKeys(t)
	both := KeySet{Primary: old.Primary, Keys: [][]byte{old.Primary, next.Primary}}
	steps := []KeySet{both, {Primary: next.Primary, Keys: both.Keys}, next}
	for i, ks := range steps {
		for _, m := range []*testMember{a, b} {
			if err := m.SetKeys(ks); err != nil {
				t.Fatalf("step %d on %s: %v", i, m.cfg.Meta.Node, err)
			}
		}
	}
	// A member knowing only the new key joins; the old key is refused.
	c := startMember(t, "c", next, a)
	waitState(t, b, "c", StateAlive, 5*time.Second)
	if got := len(a.keyring.GetKeys()); got != 1 {
		t.Fatalf("a holds %d keys after rotation, want 1", got)
	}
	stale := startMember(t, "stale", old)
	if _, err := stale.Join([]string{c.LocalAddr().String()}); err == nil {
		t.Fatal("a member with the removed key joined")
	}
	// Invalid sets change nothing.
	if err := a.SetKeys(KeySet{Primary: []byte("short"), Keys: [][]byte{[]byte("short")}}); err == nil {
		t.Fatal("a 5-byte key was accepted")
	}
	waitState(t, a, "b", StateAlive, time.Second)
}

func TestConfig_RejectsBadInput(t *testing.T) {
	good := Config{Meta: Meta{Node: "n", Cluster: "c"}, BindAddr: netip.MustParseAddr("127.0.0.1"), BindAnyPort: true}
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"no node name", func(c *Config) { c.Meta.Node = "" }, "node name is required"},
		{"no cluster", func(c *Config) { c.Meta.Cluster = "" }, "cluster is required"},
		{"no address", func(c *Config) { c.BindAddr = netip.Addr{} }, "bind address is required"},
		{"unspecified address", func(c *Config) { c.BindAddr = netip.IPv4Unspecified() }, "bind address is required"},
		{"bad port", func(c *Config) { c.Port = 70000 }, "out of range"},
		{"bad key", func(c *Config) { c.Keys = KeySet{Primary: []byte("x"), Keys: [][]byte{[]byte("x")}} }, "want 16, 24 or 32"},
		{"timeout above interval", func(c *Config) { c.Profile = TunedLAN; c.Profile.ProbeTimeout = time.Second }, "below the probe interval"},
		{"huge meta", func(c *Config) { c.Meta.Version = strings.Repeat("v", 600) }, "more than memberlist's 512"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.mutate(&cfg)
			h, err := New(cfg)
			if err == nil {
				h.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

func TestProfile_DetectionTimes(t *testing.T) {
	tests := []struct {
		p         Profile
		n         int
		suspicion time.Duration
		bound     time.Duration
	}{
		{TunedLAN, 8, 1600 * time.Millisecond, 3600 * time.Millisecond},
		{TunedLAN, 10, 1600 * time.Millisecond, 3600 * time.Millisecond},
		{TunedLAN, 100, 3200 * time.Millisecond, 6800 * time.Millisecond},
		{TunedLAN, 1000, 4800 * time.Millisecond, 10000 * time.Millisecond},
		{DefaultLAN, 10, 4 * time.Second, 25 * time.Second},
		{DefaultLAN, 100, 8 * time.Second, 49 * time.Second},
		{DefaultLAN, 1000, 12 * time.Second, 73 * time.Second},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d", tt.p.Name, tt.n), func(t *testing.T) {
			if got := tt.p.SuspicionTimeout(tt.n).Round(time.Millisecond); got != tt.suspicion {
				t.Errorf("suspicion timeout %s, want %s", got, tt.suspicion)
			}
			if got := tt.p.DetectionBound(tt.n).Round(time.Millisecond); got != tt.bound {
				t.Errorf("detection bound %s, want %s", got, tt.bound)
			}
		})
	}
}

// metricValue reads a gauge or counter.
func metricValue(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return m.Counter.GetValue()
}

func TestNew_FailedStartLeavesTheRegistryReusable(t *testing.T) {
	reg := prometheus.NewRegistry()
	first, err := New(Config{Meta: Meta{Node: "a", Cluster: "c"}, BindAddr: netip.MustParseAddr("127.0.0.1"), BindAnyPort: true, Registerer: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	// Same port: the start fails, and must not leave metrics behind in reg.
	port := int(first.LocalAddr().Port())
	if h, err := New(Config{Meta: Meta{Node: "b", Cluster: "c"}, BindAddr: netip.MustParseAddr("127.0.0.1"), Port: port, Logger: slog.New(slog.DiscardHandler)}); err == nil {
		h.Close()
		t.Fatal("two members bound the same port")
	}
	first.Close()
	second, err := New(Config{Meta: Meta{Node: "a", Cluster: "c"}, BindAddr: netip.MustParseAddr("127.0.0.1"), BindAnyPort: true, Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	second.Close()

	// A start that fails after binding (metrics collide) releases its port and registers nothing.
	reg2 := prometheus.NewRegistry()
	reg2.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "palisade_health_probe_rtt_seconds", Help: "taken"}))
	if h, err := New(Config{Meta: Meta{Node: "c", Cluster: "c"}, BindAddr: netip.MustParseAddr("127.0.0.1"), BindAnyPort: true, Registerer: reg2, Logger: slog.New(slog.DiscardHandler)}); err == nil {
		h.Close()
		t.Fatal("colliding metrics accepted")
	}
	mfs, err := reg2.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 0 {
		for _, mf := range mfs {
			if mf.GetName() != "palisade_health_probe_rtt_seconds" {
				t.Fatalf("failed start left %s registered", mf.GetName())
			}
		}
	}
}
