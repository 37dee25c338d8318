package identity

import (
	"fmt"
	"strconv"
)

// ID is a numeric security identity, the number the datapath enforces policy on.
type ID uint32

// Reserved identities.
const (
	IDUnknown       ID = 0 // also the wildcard in policy map keys
	IDHost          ID = 1
	IDWorld         ID = 2
	IDUnmanaged     ID = 3
	IDHealth        ID = 4
	IDInit          ID = 5
	IDRemoteNode    ID = 6
	IDKubeAPIServer ID = 7
	IDIngress       ID = 8
	IDWorldIPv4     ID = 9
	IDWorldIPv6     ID = 10
)

var reservedNames = map[ID]string{
	IDHost:          "host",
	IDWorld:         "world",
	IDUnmanaged:     "unmanaged",
	IDHealth:        "health",
	IDInit:          "init",
	IDRemoteNode:    "remote-node",
	IDKubeAPIServer: "kube-apiserver",
	IDIngress:       "ingress",
	IDWorldIPv4:     "world-ipv4",
	IDWorldIPv6:     "world-ipv6",
}

// ReservedIDs lists the reserved identities in numeric order.
func ReservedIDs() []ID {
	return []ID{IDHost, IDWorld, IDUnmanaged, IDHealth, IDInit, IDRemoteNode, IDKubeAPIServer, IDIngress, IDWorldIPv4, IDWorldIPv6}
}

// ReservedByName returns the reserved identity called name ("host", "world", ...).
func ReservedByName(name string) (ID, bool) {
	for id, n := range reservedNames {
		if n == name {
			return id, true
		}
	}
	return 0, false
}

// ReservedLabels returns the labels of a reserved identity ("reserved:host").
func ReservedLabels(id ID) (Labels, bool) {
	name, ok := reservedNames[id]
	if !ok {
		return nil, false
	}
	return Labels{{Source: SourceReserved, Key: name}}, true
}

const (
	// MinLocalID and the layout's MaxLocalID bound the per-cluster part of a cluster-scoped ID.
	MinLocalID = 256
	// LocalCIDRFlag marks node-local CIDR identities: 1<<24 | n. They never leave the node.
	LocalCIDRFlag    ID = 1 << 24
	maxLocalCIDRPart    = 1<<24 - 1
)

// Kind tells what an identity number stands for.
type Kind int

const (
	KindInvalid Kind = iota
	KindUnknown
	KindReserved
	KindCluster
	KindLocalCIDR
)

func (k Kind) String() string {
	switch k {
	case KindUnknown:
		return "unknown"
	case KindReserved:
		return "reserved"
	case KindCluster:
		return "cluster"
	case KindLocalCIDR:
		return "local-cidr"
	}
	return "invalid"
}

// Layout fixes how a cluster-scoped ID splits into cluster ID and local part. It is chosen when a
// cluster is created and must be the same in every connected cluster.
type Layout struct {
	// MaxConnectedClusters is 255 (cluster IDs 1..255, local parts 256..65535) or 511 (cluster IDs
	// 1..511, local parts 256..32767).
	MaxConnectedClusters int
}

// DefaultLayout is the layout of a cluster that does not ask for 511 clusters.
var DefaultLayout = Layout{MaxConnectedClusters: 255}

// NewLayout validates maxConnectedClusters.
func NewLayout(maxConnectedClusters int) (Layout, error) {
	switch maxConnectedClusters {
	case 255, 511:
		return Layout{MaxConnectedClusters: maxConnectedClusters}, nil
	}
	return Layout{}, fmt.Errorf("max connected clusters %d: must be 255 or 511", maxConnectedClusters)
}

func (l Layout) localBits() uint {
	if l.MaxConnectedClusters == 511 {
		return 15
	}
	return 16
}

// MaxClusterID is the largest valid cluster ID.
func (l Layout) MaxClusterID() uint32 { return uint32(1)<<(24-l.localBits()) - 1 }

// MaxLocalID is the largest local part of a cluster-scoped ID.
func (l Layout) MaxLocalID() uint32 { return uint32(1)<<l.localBits() - 1 }

// ValidateClusterID checks that id is a usable cluster ID under this layout.
func (l Layout) ValidateClusterID(id uint32) error {
	if id < 1 || id > l.MaxClusterID() {
		return fmt.Errorf("cluster ID %d out of range 1..%d", id, l.MaxClusterID())
	}
	return nil
}

// ClusterScoped composes the identity of local part n in cluster clusterID.
func (l Layout) ClusterScoped(clusterID, n uint32) (ID, error) {
	if err := l.ValidateClusterID(clusterID); err != nil {
		return 0, err
	}
	if n < MinLocalID || n > l.MaxLocalID() {
		return 0, fmt.Errorf("local identity %d out of range %d..%d", n, MinLocalID, l.MaxLocalID())
	}
	return ID(clusterID<<l.localBits() | n), nil
}

// ClusterOf returns the cluster ID of a cluster-scoped identity, 0 for any other kind.
func (l Layout) ClusterOf(id ID) uint32 {
	if l.KindOf(id) != KindCluster {
		return 0
	}
	return uint32(id) >> l.localBits()
}

// LocalPart returns the per-cluster part of a cluster-scoped identity.
func (l Layout) LocalPart(id ID) uint32 {
	return uint32(id) & l.MaxLocalID()
}

// KindOf classifies an identity number.
func (l Layout) KindOf(id ID) Kind {
	switch {
	case id == IDUnknown:
		return KindUnknown
	case id < MinLocalID:
		if _, ok := reservedNames[id]; ok {
			return KindReserved
		}
		return KindInvalid
	case id&LocalCIDRFlag != 0:
		if id>>25 != 0 || id == LocalCIDRFlag {
			return KindInvalid
		}
		return KindLocalCIDR
	}
	cluster := uint32(id) >> l.localBits()
	if cluster == 0 || l.LocalPart(id) < MinLocalID {
		return KindInvalid
	}
	return KindCluster
}

// LocalCIDR returns the node-local CIDR identity number n (1..2^24-1).
func LocalCIDR(n uint32) (ID, error) {
	if n < 1 || n > maxLocalCIDRPart {
		return 0, fmt.Errorf("local CIDR identity %d out of range 1..%d", n, maxLocalCIDRPart)
	}
	return LocalCIDRFlag | ID(n), nil
}

// String returns the number, or the reserved name for reserved identities.
func (id ID) String() string {
	if name, ok := reservedNames[id]; ok {
		return name
	}
	return strconv.FormatUint(uint64(id), 10)
}

// ParseID accepts a number or a reserved identity name.
func ParseID(s string) (ID, error) {
	if id, ok := ReservedByName(s); ok {
		return id, nil
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("identity %q: not a number or reserved name", s)
	}
	return ID(n), nil
}
