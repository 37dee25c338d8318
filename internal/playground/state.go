package playground

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// DefaultDir is where the playground keeps its state, sockets and logs.
const DefaultDir = "/run/palisade-dev"

// State is what a running playground consists of.
type State struct {
	Dir      string `json:"dir"`
	NSPrefix string `json:"nsPrefix"` // every namespace of the playground starts with it
	// CADir holds the mesh CA when the playground runs several clusters.
	CADir     string          `json:"caDir,omitempty"`
	Clusters  []ClusterState  `json:"clusters"`
	Endpoints []EndpointState `json:"endpoints"`
}

// ClusterState is one cluster: its etcd and, in a mesh, its mesh API server, both in the
// cluster's control-plane namespace, and its nodes.
type ClusterState struct {
	Name string `json:"name"`
	ID   uint32 `json:"id"`
	// ControlPlane is the control-plane namespace and ControlPlaneIP its fabric address.
	ControlPlane   string  `json:"controlPlane"`
	ControlPlaneIP string  `json:"controlPlaneIP"`
	EtcdSocket     string  `json:"etcdSocket"`
	Etcd           Process `json:"etcd"`
	// MeshDir is the cluster directory (palisade clustermesh init), MeshAddress where its mesh
	// API server listens; both empty in a single-cluster playground.
	MeshDir       string      `json:"meshDir,omitempty"`
	MeshAddress   string      `json:"meshAddress,omitempty"`
	MeshAPIServer *Process    `json:"meshAPIServer,omitempty"`
	Nodes         []NodeState `json:"nodes"`
}

// Process is a daemon the playground started.
type Process struct {
	PID int    `json:"pid"`
	Log string `json:"log"`
}

// NodeState is one node with its agent.
type NodeState struct {
	Name      string  `json:"name"`
	Cluster   string  `json:"cluster"`
	Namespace string  `json:"namespace"`
	FabricIP  string  `json:"fabricIP"`
	PodCIDR   string  `json:"podCIDR"`
	Socket    string  `json:"socket"`
	PinDir    string  `json:"pinDir"`
	Agent     Process `json:"agent"`
}

// EndpointState is one endpoint and the workload it runs.
type EndpointState struct {
	Name      string   `json:"name"`
	Cluster   string   `json:"cluster"`
	Node      string   `json:"node"`
	Namespace string   `json:"namespace"`
	ID        uint32   `json:"id"`
	IPv4      string   `json:"ipv4"`
	Identity  uint32   `json:"identity"`
	Labels    []string `json:"labels"`
	Server    *Process `json:"server,omitempty"`
}

// QualifiedName is cluster/name, which names the endpoint in any playground.
func (e EndpointState) QualifiedName() string { return e.Cluster + "/" + e.Name }

// KvstoreEndpoint is the etcd URL the CLI and the agents use (a unix socket: reachable from every
// namespace).
func (c ClusterState) KvstoreEndpoint() string { return "unix://" + c.EtcdSocket }

// Mesh reports whether the playground runs several clusters connected in a mesh.
func (s *State) Mesh() bool { return len(s.Clusters) > 1 }

// KvstoreEndpoint is the etcd URL of the first (in a single-cluster playground: the only) cluster.
func (s *State) KvstoreEndpoint() string {
	if len(s.Clusters) == 0 {
		return ""
	}
	return s.Clusters[0].KvstoreEndpoint()
}

// Cluster returns the cluster called name; "" means the first one.
func (s *State) Cluster(name string) (ClusterState, error) {
	for _, c := range s.Clusters {
		if c.Name == name || name == "" {
			return c, nil
		}
	}
	names := make([]string, len(s.Clusters))
	for i, c := range s.Clusters {
		names[i] = c.Name
	}
	return ClusterState{}, fmt.Errorf("no cluster %q in the playground (clusters: %s)", name, strings.Join(names, ", "))
}

// Nodes lists the nodes of every cluster.
func (s *State) Nodes() []NodeState {
	var out []NodeState
	for _, c := range s.Clusters {
		out = append(out, c.Nodes...)
	}
	return out
}

// Node returns the node called name ("" means the first node); node names are unique across
// clusters.
func (s *State) Node(name string) (NodeState, error) {
	nodes := s.Nodes()
	for _, n := range nodes {
		if n.Name == name || name == "" {
			return n, nil
		}
	}
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name
	}
	return NodeState{}, fmt.Errorf("no node %q in the playground (nodes: %s)", name, strings.Join(names, ", "))
}

// Endpoint returns the endpoint called name: either cluster/name, or a bare name when only one
// cluster has an endpoint of that name.
func (s *State) Endpoint(name string) (EndpointState, error) {
	cluster, bare, qualified := strings.Cut(name, "/")
	if !qualified {
		bare, cluster = cluster, ""
	}
	var found []EndpointState
	for _, e := range s.Endpoints {
		if e.Name == bare && (cluster == "" || e.Cluster == cluster) {
			found = append(found, e)
		}
	}
	switch len(found) {
	case 0:
		return EndpointState{}, fmt.Errorf("no endpoint %q in the playground (see `palisade dev status`)", name)
	case 1:
		return found[0], nil
	}
	names := make([]string, len(found))
	for i, e := range found {
		names[i] = e.QualifiedName()
	}
	return EndpointState{}, fmt.Errorf("endpoint name %q is used in several clusters: say which (%s)", name, strings.Join(names, ", "))
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

// Load reads the state of the playground in dir.
func Load(dir string) (*State, error) {
	raw, err := os.ReadFile(statePath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no playground in %s: start one with `palisade dev up`", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("read playground state: %w", err)
	}
	var s State
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("playground state %s: %w", statePath(dir), err)
	}
	if len(s.Clusters) == 0 {
		// Written before playgrounds had several clusters: one cluster at the top level. Read it
		// so that `dev down` of a newer binary still stops its daemons.
		var old struct {
			Cluster   string      `json:"cluster"`
			ClusterID uint32      `json:"clusterID"`
			Etcd      Process     `json:"etcd"`
			Nodes     []NodeState `json:"nodes"`
		}
		if err := json.Unmarshal(raw, &old); err == nil && (old.Etcd.PID != 0 || len(old.Nodes) > 0) {
			s.Clusters = []ClusterState{{Name: old.Cluster, ID: old.ClusterID, Etcd: old.Etcd, Nodes: old.Nodes,
				EtcdSocket: filepath.Join(dir, "etcd.sock")}}
		}
	}
	return &s, nil
}

// lock serialises the commands that change a running playground's state file (two `dev
// endpoint add` at once would otherwise each save a state without the other's endpoint).
func lock(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, "state.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock the playground state: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock the playground state: %w", err)
	}
	return func() { f.Close() }, nil
}

// reload replaces s with what its state file says now; call it holding the lock.
func (s *State) reload() error {
	fresh, err := Load(s.Dir)
	if err != nil {
		return err
	}
	*s = *fresh
	return nil
}

func (s *State) save() error {
	raw, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := statePath(s.Dir) + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return fmt.Errorf("save playground state: %w", err)
	}
	return os.Rename(tmp, statePath(s.Dir))
}
