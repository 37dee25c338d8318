package apiserver

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/identity"
)

// Key prefixes of the served state, relative to the kvstore prefix (DESIGN.md section 4).
const (
	ipcachePrefix = "ipcache/"
	nodesPrefix   = "nodes/"
	// HeartbeatKey is written by the mesh API server with the time, RFC 3339 with nanoseconds.
	HeartbeatKey = "heartbeat"
	// GCLeaderKey names the replica running identity garbage collection; it is attached to that
	// replica's lease, so it goes away when the replica stops or dies.
	GCLeaderKey = "mesh-apiserver/gc-leader"
)

// The values below mirror what the agent writes (agent.ipcacheEntry, agent.NodeInfo, and the
// identity allocator's master value); the bytes come from etcd and are validated.

type masterValue struct {
	Labels string `json:"labels"`
}

type ipcacheValue struct {
	Identity   uint32 `json:"identity"`
	HostIP     string `json:"hostIP"`
	Node       string `json:"node"`
	EndpointID uint32 `json:"endpointID"`
}

type nodeValue struct {
	Name     string   `json:"name"`
	Cluster  string   `json:"cluster"`
	IPs      []string `json:"ips"`
	PodCIDRs []string `json:"podCIDRs"`
}

// decodeIdentityKey reads the ID of identities/id/<id>.
func decodeIdentityKey(key string) (uint32, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(key, identity.MasterPrefix), 10, 32)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("identity key %q: not a numeric identity", key)
	}
	return uint32(n), nil
}

func decodeIdentity(key string, value []byte) (uint32, identity.Labels, error) {
	id, err := decodeIdentityKey(key)
	if err != nil {
		return 0, nil, err
	}
	var v masterValue
	if err := json.Unmarshal(value, &v); err != nil {
		return 0, nil, fmt.Errorf("identity %d: %w", id, err)
	}
	lbls, err := identity.ParseCanonical(v.Labels)
	if err != nil {
		return 0, nil, fmt.Errorf("identity %d: %w", id, err)
	}
	if len(lbls) == 0 {
		return 0, nil, fmt.Errorf("identity %d: no labels", id)
	}
	return id, lbls, nil
}

// decodeIPCacheKey reads ipcache/<ip>/<prefixlen> into its canonical prefix string.
func decodeIPCacheKey(key string) (string, error) {
	rest := strings.TrimPrefix(key, ipcachePrefix)
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		return "", fmt.Errorf("ipcache key %q: no prefix length", key)
	}
	addr, err := netip.ParseAddr(rest[:i])
	if err != nil {
		return "", fmt.Errorf("ipcache key %q: %w", key, err)
	}
	bits, err := strconv.Atoi(rest[i+1:])
	if err != nil || bits < 0 || bits > addr.BitLen() {
		return "", fmt.Errorf("ipcache key %q: bad prefix length", key)
	}
	return netip.PrefixFrom(addr, bits).Masked().String(), nil
}

func decodeIPCache(key string, value []byte) (*apiv1.MeshIPCacheEntry, error) {
	prefix, err := decodeIPCacheKey(key)
	if err != nil {
		return nil, err
	}
	var v ipcacheValue
	if err := json.Unmarshal(value, &v); err != nil {
		return nil, fmt.Errorf("ipcache entry %s: %w", prefix, err)
	}
	if v.Identity == 0 {
		return nil, fmt.Errorf("ipcache entry %s: no identity", prefix)
	}
	return &apiv1.MeshIPCacheEntry{Prefix: prefix, Identity: v.Identity, HostIp: v.HostIP, Node: v.Node}, nil
}

func decodeNodeKey(key string) (string, error) {
	name := strings.TrimPrefix(key, nodesPrefix)
	if name == "" || strings.Contains(name, "/") {
		return "", fmt.Errorf("node key %q: not a node name", key)
	}
	return name, nil
}

func decodeNode(key string, value []byte) (*apiv1.MeshNode, error) {
	name, err := decodeNodeKey(key)
	if err != nil {
		return nil, err
	}
	var v nodeValue
	if err := json.Unmarshal(value, &v); err != nil {
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	return &apiv1.MeshNode{Name: name, Ips: v.IPs, PodCidrs: v.PodCIDRs}, nil
}
