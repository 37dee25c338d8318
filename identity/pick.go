package identity

import (
	"fmt"
	"math/rand/v2"
)

// idRange is the set of cluster-scoped identities one cluster's allocators hand out: local parts
// min..max of one cluster ID.
type idRange struct {
	layout  Layout
	cluster uint32
	min     uint32
	max     uint32
}

func newIDRange(layout Layout, cluster, min, max uint32) (idRange, error) {
	if err := layout.ValidateClusterID(cluster); err != nil {
		return idRange{}, err
	}
	if min == 0 {
		min = MinLocalID
	}
	if max == 0 {
		max = layout.MaxLocalID()
	}
	if min < MinLocalID || max > layout.MaxLocalID() || min > max {
		return idRange{}, fmt.Errorf("local identity range %d..%d: must lie within %d..%d and not be empty",
			min, max, MinLocalID, layout.MaxLocalID())
	}
	return idRange{layout: layout, cluster: cluster, min: min, max: max}, nil
}

func (r idRange) size() int { return int(r.max-r.min) + 1 }

// at returns the identity with local part n, which must lie in the range.
func (r idRange) at(n uint32) ID {
	return ID(r.cluster<<r.layout.localBits() | n)
}

func (r idRange) contains(id ID) bool {
	if r.layout.KindOf(id) != KindCluster || r.layout.ClusterOf(id) != r.cluster {
		return false
	}
	n := r.layout.LocalPart(id)
	return n >= r.min && n <= r.max
}

func (r idRange) String() string {
	return fmt.Sprintf("%d..%d (local parts %d..%d of cluster %d)", r.at(r.min), r.at(r.max), r.min, r.max, r.cluster)
}

// randomProbes is how many random guesses pickFree makes before it scans. With the space mostly
// free a guess almost always lands; scanning from a random point keeps a nearly full space correct.
const randomProbes = 8

// pickFree returns an identity of r for which taken is false: a few random probes, then a scan from a
// random start. Random choice keeps concurrent allocators on different nodes from racing for the
// same number; the scan finds the last free numbers of a nearly full range. ok is false when every
// identity of r is taken.
func pickFree(r idRange, taken func(ID) bool) (id ID, ok bool) {
	size := uint32(r.size())
	for range randomProbes {
		id := r.at(r.min + rand.Uint32N(size))
		if !taken(id) {
			return id, true
		}
	}
	start := rand.Uint32N(size)
	for i := range size {
		id := r.at(r.min + (start+i)%size)
		if !taken(id) {
			return id, true
		}
	}
	return 0, false
}
