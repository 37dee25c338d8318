package playground

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func meshState() *State {
	return &State{
		Dir: "/run/x",
		Clusters: []ClusterState{
			{Name: "cluster1", ID: 1, EtcdSocket: "/run/x/cluster1-etcd.sock", Nodes: []NodeState{{Name: "c1n1", Cluster: "cluster1"}}},
			{Name: "cluster2", ID: 2, EtcdSocket: "/run/x/cluster2-etcd.sock", Nodes: []NodeState{{Name: "c2n1", Cluster: "cluster2"}, {Name: "c2n2", Cluster: "cluster2"}}},
		},
		Endpoints: []EndpointState{
			{Name: "deathstar", Cluster: "cluster1", IPv4: "10.0.0.1"},
			{Name: "tiefighter", Cluster: "cluster1", IPv4: "10.0.0.2"},
			{Name: "tiefighter", Cluster: "cluster2", IPv4: "10.0.0.3"},
		},
	}
}

func TestState_EndpointByBareOrQualifiedName(t *testing.T) {
	s := meshState()
	cases := []struct {
		name, wantIP, wantErr string
	}{
		{"deathstar", "10.0.0.1", ""},
		{"cluster1/deathstar", "10.0.0.1", ""},
		{"cluster2/tiefighter", "10.0.0.3", ""},
		{"tiefighter", "", "used in several clusters: say which (cluster1/tiefighter, cluster2/tiefighter)"},
		{"cluster2/deathstar", "", `no endpoint "cluster2/deathstar"`},
		{"xwing", "", `no endpoint "xwing"`},
	}
	for _, c := range cases {
		e, err := s.Endpoint(c.name)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("Endpoint(%q): error %v, want one containing %q", c.name, err, c.wantErr)
			}
			continue
		}
		if err != nil || e.IPv4 != c.wantIP {
			t.Errorf("Endpoint(%q) = %s, %v; want %s", c.name, e.IPv4, err, c.wantIP)
		}
	}
}

func TestState_ClusterAndNodeLookupDefaultToTheFirst(t *testing.T) {
	s := meshState()
	if c, err := s.Cluster(""); err != nil || c.Name != "cluster1" {
		t.Errorf(`Cluster("") = %s, %v`, c.Name, err)
	}
	if c, err := s.Cluster("cluster2"); err != nil || c.KvstoreEndpoint() != "unix:///run/x/cluster2-etcd.sock" {
		t.Errorf(`Cluster("cluster2") = %+v, %v`, c, err)
	}
	if _, err := s.Cluster("cluster9"); err == nil || !strings.Contains(err.Error(), "clusters: cluster1, cluster2") {
		t.Errorf(`Cluster("cluster9"): %v`, err)
	}
	if n, err := s.Node("c2n2"); err != nil || n.Cluster != "cluster2" {
		t.Errorf(`Node("c2n2") = %+v, %v`, n, err)
	}
	if n, err := s.Node(""); err != nil || n.Name != "c1n1" {
		t.Errorf(`Node("") = %+v, %v`, n, err)
	}
	if _, err := s.Node("node1"); err == nil || !strings.Contains(err.Error(), "nodes: c1n1, c2n1, c2n2") {
		t.Errorf(`Node("node1"): %v`, err)
	}
	if !s.Mesh() || s.file(s.Clusters[1], "etcd.sock") != "/run/x/cluster2-etcd.sock" {
		t.Errorf("a mesh's per-cluster files are not named after the cluster: %s", s.file(s.Clusters[1], "etcd.sock"))
	}
	single := &State{Dir: "/run/x", Clusters: s.Clusters[:1]}
	if single.Mesh() || single.file(single.Clusters[0], "etcd.sock") != "/run/x/etcd.sock" {
		t.Errorf("a single cluster's etcd socket moved: %s", single.file(single.Clusters[0], "etcd.sock"))
	}
}

func TestOptions_RejectBadShapes(t *testing.T) {
	cases := []struct {
		opts    Options
		wantErr string
	}{
		{Options{Clusters: 9}, "--clusters 9: between 1 and 8"},
		{Options{Clusters: -1}, "--clusters -1"},
		{Options{Nodes: 9}, "--nodes 9: between 1 and 8"},
		{Options{Clusters: 3, Cluster: "c1"}, "drop --cluster-name and --cluster-id"},
		{Options{Clusters: 2, ClusterID: 4}, "drop --cluster-name and --cluster-id"},
	}
	for _, c := range cases {
		if _, err := c.opts.withDefaults(); err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("%+v: error %v, want one containing %q", c.opts, err, c.wantErr)
		}
	}
	o, err := Options{Binary: "/bin/true"}.withDefaults()
	if err != nil || o.Clusters != 1 || o.Nodes != 2 || o.Cluster != "playground" || o.ClusterID != 1 || o.Dir != DefaultDir {
		t.Errorf("defaults: %+v, %v", o, err)
	}
}

func TestAlive_ZombiesAreNotAlive(t *testing.T) {
	if alive(0) || alive(-1) {
		t.Error("pid 0 or -1 alive")
	}
	if !alive(os.Getpid()) {
		t.Error("this process is not alive")
	}
	// A child that exited and is not waited for yet is a zombie: kill(pid, 0) still succeeds.
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Wait() }()
	deadline := time.Now().Add(5 * time.Second)
	for alive(cmd.Process.Pid) {
		if time.Now().After(deadline) {
			t.Fatalf("an exited child (pid %d) still counts as alive", cmd.Process.Pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := syscall.Kill(cmd.Process.Pid, 0); err != nil {
		t.Fatalf("the child was reaped already (%v): the test shows nothing", err)
	}
}

func TestLock_SecondHolderWaitsForTheFirst(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{})
	go func() {
		unlock2, err := lock(dir)
		if err != nil {
			t.Error(err)
		} else {
			unlock2()
		}
		close(got)
	}()
	select {
	case <-got:
		t.Fatal("a second lock was granted while the first was held")
	case <-time.After(200 * time.Millisecond):
	}
	unlock()
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("the second lock was not granted after the first was released")
	}
}

func TestLoad_ReadsASingleClusterStateOfOlderVersions(t *testing.T) {
	dir := t.TempDir()
	old := `{"dir":"` + dir + `","cluster":"playground","clusterID":1,"nsPrefix":"pdev-abc-",
		"etcd":{"pid":101,"log":"e.log"},
		"nodes":[{"name":"node1","pinDir":"/sys/fs/bpf/pdev-abc-node1","agent":{"pid":102}}],"endpoints":[]}`
	if err := os.WriteFile(statePath(dir), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Clusters) != 1 || s.Clusters[0].Etcd.PID != 101 || len(s.Nodes()) != 1 || s.Nodes()[0].Agent.PID != 102 ||
		s.KvstoreEndpoint() != "unix://"+dir+"/etcd.sock" {
		t.Fatalf("older state read as %+v", s)
	}
}
