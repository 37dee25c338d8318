package playground

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// DefaultDir is where the playground keeps its state, sockets and logs.
const DefaultDir = "/run/palisade-dev"

// State is what a running playground consists of.
type State struct {
	Dir       string          `json:"dir"`
	Cluster   string          `json:"cluster"`
	ClusterID uint32          `json:"clusterID"`
	NSPrefix  string          `json:"nsPrefix"` // every namespace of the playground starts with it
	Etcd      Process         `json:"etcd"`
	Nodes     []NodeState     `json:"nodes"`
	Endpoints []EndpointState `json:"endpoints"`
}

// Process is a daemon the playground started.
type Process struct {
	PID int    `json:"pid"`
	Log string `json:"log"`
}

// NodeState is one node with its agent.
type NodeState struct {
	Name      string  `json:"name"`
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
	Node      string   `json:"node"`
	Namespace string   `json:"namespace"`
	ID        uint32   `json:"id"`
	IPv4      string   `json:"ipv4"`
	Identity  uint32   `json:"identity"`
	Labels    []string `json:"labels"`
	Server    *Process `json:"server,omitempty"`
}

// KvstoreEndpoint is the etcd URL the CLI and the agents use (a unix socket: reachable from every
// namespace).
func (s *State) KvstoreEndpoint() string {
	return "unix://" + filepath.Join(s.Dir, "etcd.sock")
}

// Node returns the node called name.
func (s *State) Node(name string) (NodeState, error) {
	for _, n := range s.Nodes {
		if n.Name == name {
			return n, nil
		}
	}
	return NodeState{}, fmt.Errorf("no node %q in the playground (nodes: %s)", name, s.nodeNames())
}

// Endpoint returns the endpoint called name.
func (s *State) Endpoint(name string) (EndpointState, error) {
	for _, e := range s.Endpoints {
		if e.Name == name {
			return e, nil
		}
	}
	return EndpointState{}, fmt.Errorf("no endpoint %q in the playground (see `palisade dev status`)", name)
}

func (s *State) nodeNames() string {
	var names []byte
	for i, n := range s.Nodes {
		if i > 0 {
			names = append(names, ", "...)
		}
		names = append(names, n.Name...)
	}
	return string(names)
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
	return &s, nil
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
