package agent

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/bpf"
	"github.com/palisade-mesh/palisade/monitor"
)

func TestParseIPCacheKey(t *testing.T) {
	cases := []struct {
		key     string
		want    string
		wantErr bool
	}{
		{key: "ipcache/10.100.1.2/32", want: "10.100.1.2/32"},
		{key: "ipcache/10.0.0.0/8", want: "10.0.0.0/8"},
		{key: "ipcache/fd00::1/128", want: "fd00::1/128"},
		{key: "ipcache/10.1.1.1", wantErr: true},
		{key: "ipcache/10.1.1.1/33", wantErr: true},
		{key: "ipcache/nope/32", wantErr: true},
	}
	for _, c := range cases {
		got, err := parseIPCacheKey(c.key)
		if c.wantErr != (err != nil) {
			t.Errorf("parseIPCacheKey(%q) err = %v", c.key, err)
			continue
		}
		if err == nil && got.String() != c.want {
			t.Errorf("parseIPCacheKey(%q) = %s, want %s", c.key, got, c.want)
		}
		if err == nil && ipcacheKey(got) != c.key {
			t.Errorf("ipcacheKey(%s) = %q, want %q", got, ipcacheKey(got), c.key)
		}
	}
}

func TestParseLabels_BareKeysAreKubernetesLabels(t *testing.T) {
	ls, err := parseLabels([]string{"org=empire", "container:role=db", "app.kubernetes.io/name=deathstar"})
	if err != nil {
		t.Fatal(err)
	}
	want := "container:role=db;k8s:app.kubernetes.io/name=deathstar;k8s:org=empire"
	if ls.String() != want {
		t.Fatalf("got %q, want %q", ls, want)
	}
	if _, err := parseLabels([]string{"bad key=x"}); err == nil {
		t.Fatal("invalid label accepted")
	}
}

func TestConfig_Validate(t *testing.T) {
	good := Config{
		ClusterName: "cluster1", ClusterID: 1, NodeName: "n1",
		PodCIDR: netip.MustParsePrefix("10.100.1.0/24"),
	}.WithDefaults()
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	cases := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"no cluster name", func(c *Config) { c.ClusterName = "" }, "--cluster-name is required"},
		{"cluster ID out of range", func(c *Config) { c.ClusterID = 256 }, "cluster ID 256 out of range 1..255"},
		{"511 mode allows 300", func(c *Config) { c.ClusterID = 300; c.MaxConnectedClusters = 511 }, ""},
		{"no pod CIDR", func(c *Config) { c.PodCIDR = netip.Prefix{} }, "--pod-cidr is required"},
		{"IPv6 pod CIDR", func(c *Config) { c.PodCIDR = netip.MustParsePrefix("fd00::/64") }, "only IPv4"},
		{"short lease", func(c *Config) { c.LeaseTTL = time.Second }, "at least 2s"},
		{"relative state dir", func(c *Config) { c.StateDir = "state" }, "absolute path"},
		{"bad label pattern", func(c *Config) { c.LabelPatterns = []string{"("} }, "--labels"},
	}
	for _, c := range cases {
		cfg := good
		c.mutate(&cfg)
		err := cfg.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want containing %q", c.name, err, c.want)
		}
	}
}

func TestLoadConfigFile_Strict(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "agent.yaml")
	os.WriteFile(good, []byte("clusterName: cluster1\nclusterID: 2\npodCIDR: 10.100.2.0/24\nkvstoreEndpoints: [unix:///run/etcd.sock]\n"), 0o600)
	cfg, err := LoadConfigFile(good)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ClusterID != 2 || cfg.PodCIDR.String() != "10.100.2.0/24" || cfg.KvstoreEndpoints[0] != "unix:///run/etcd.sock" {
		t.Fatalf("loaded %+v", cfg)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("clusterName: c\nclusterNmae: typo\n"), 0o600)
	if _, err := LoadConfigFile(bad); err == nil || !strings.Contains(err.Error(), "clusterNmae") {
		t.Fatalf("unknown field: %v", err)
	}
}

func TestStateStore_RoundTripAndBadFiles(t *testing.T) {
	s, err := newStateStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rec := endpointRecord{ID: 3, Name: "web", Namespace: "default", NetnsPath: "/var/run/netns/web", HostIfName: "lxcabc", IPv4: netip.MustParseAddr("10.1.0.5"), Labels: []string{"app=web"}, Identity: 65800}
	if err := s.save(rec); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(s.dir, "9.json"), []byte("{torn"), 0o600)
	recs, errs := s.load()
	if len(recs) != 1 || recs[0].ID != 3 || recs[0].IPv4 != rec.IPv4 || len(errs) != 1 {
		t.Fatalf("load = %+v, %v", recs, errs)
	}
	if err := s.remove(3); err != nil {
		t.Fatal(err)
	}
	if err := s.remove(3); err != nil {
		t.Fatalf("second remove: %v", err)
	}
}

func TestMonitorEvent_Verdicts(t *testing.T) {
	a := &Agent{cfg: Config{NodeName: "n1"}}
	cases := []struct {
		ev        bpf.Event
		typ       monitor.Type
		verdict   monitor.Verdict
		reason    string
		dstEndpnt uint16
		srcEndpnt uint16
	}{
		{bpf.Event{Verdict: bpf.VerdictDenied, Reason: bpf.ReasonNoPolicy, Direction: bpf.Ingress, Endpoint: 3}, monitor.TypeDrop, monitor.VerdictDenied, bpf.ReasonNoPolicy.String(), 3, 0},
		{bpf.Event{Verdict: bpf.VerdictAllowed, Match: bpf.MatchIdentityPort, Direction: bpf.Egress, Endpoint: 4}, monitor.TypePolicy, monitor.VerdictAllowed, "matched identity+port", 0, 4},
		{bpf.Event{Verdict: bpf.VerdictRedirected, Match: bpf.MatchIdentityPort, ProxyPort: 15001, Direction: bpf.Ingress, Endpoint: 5}, monitor.TypePolicy, monitor.VerdictRedirected, "matched identity+port, to proxy port 15001", 5, 0},
	}
	for _, c := range cases {
		got := a.monitorEvent(c.ev)
		if got.Type != c.typ || got.Verdict != c.verdict || got.Reason != c.reason || got.Dest.Endpoint != c.dstEndpnt || got.Source.Endpoint != c.srcEndpnt || got.Node != "n1" {
			t.Errorf("monitorEvent(%v) = %+v", c.ev, got)
		}
	}
}
