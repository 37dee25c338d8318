package policy

import (
	"slices"
	"strings"

	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/policy/api"
)

// Matches reports whether labels satisfy every requirement: the label-selector semantics the
// engine uses, for callers that filter identities outside a SelectorCache (the mesh API server).
func Matches(reqs []api.Requirement, lbls identity.Labels) bool {
	for _, r := range reqs {
		if !requirementHolds(r, lbls) {
			return false
		}
	}
	return true
}

// SelectorsFor returns the label selectors in use that may select an identity of the given
// (remote) cluster, each as its requirements, in canonical order. A selector qualifies when its
// terms on io.cilium.k8s.policy.cluster admit that cluster; with Options.AllClusters a selector
// that names no cluster also qualifies. An agent asks a remote cluster only for identities these
// select, so what it imports grows with what its policies use, not with the remote cluster.
func (e *Engine) SelectorsFor(cluster string) [][]api.Requirement {
	e.cache.mu.RLock()
	defer e.cache.mu.RUnlock()
	keys := make([]string, 0, len(e.cache.selectors))
	for k, cs := range e.cache.selectors {
		if cs.sel.kind == labelSelector && admitsCluster(cs.sel.reqs, cluster, e.opts.AllClusters) {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, strings.Compare)
	out := make([][]api.Requirement, 0, len(keys))
	for _, k := range keys {
		out = append(out, e.cache.selectors[k].sel.reqs)
	}
	return out
}

func admitsCluster(reqs []api.Requirement, cluster string, allClusters bool) bool {
	named := false
	for _, r := range reqs {
		if r.Key != identity.LabelCluster || (r.Source != identity.SourceK8s && r.Source != identity.SourceAny) {
			continue
		}
		named = true
		if !requirementHolds(r, identity.Labels{{Source: identity.SourceK8s, Key: identity.LabelCluster, Value: cluster}}) {
			return false
		}
	}
	return named || allClusters
}
