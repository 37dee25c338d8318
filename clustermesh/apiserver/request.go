package apiserver

import (
	"fmt"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/clustermesh"
	"github.com/palisade-mesh/palisade/policy/api"
)

// parseWatchRequest validates a Watch request from a remote cluster (untrusted). No selectors
// means a full watch (nil selectors).
func parseWatchRequest(req *apiv1.MeshWatchRequest) ([4]bool, [][]api.Requirement, error) {
	kinds, err := kindSet(req.GetKinds())
	if err != nil {
		return kinds, nil, err
	}
	sels := req.GetSelectors()
	if len(sels) == 0 {
		return kinds, nil, nil
	}
	if len(sels) > clustermesh.MaxSelectors {
		return kinds, nil, fmt.Errorf("%d selectors, at most %d allowed", len(sels), clustermesh.MaxSelectors)
	}
	out := make([][]api.Requirement, 0, len(sels))
	for i, s := range sels {
		reqs, err := clustermesh.SelectorFromProto(s)
		if err != nil {
			return kinds, nil, fmt.Errorf("selectors[%d]: %w", i, err)
		}
		if reqs == nil {
			reqs = []api.Requirement{} // an empty selector matches every identity
		}
		out = append(out, reqs)
	}
	return kinds, out, nil
}

// parseSelector validates the selector of a ResolveSelector request.
func parseSelector(s *apiv1.MeshSelector) ([]api.Requirement, error) {
	if s == nil {
		return nil, fmt.Errorf("no selector (an empty selector matches every identity)")
	}
	reqs, err := clustermesh.SelectorFromProto(s)
	if err != nil {
		return nil, fmt.Errorf("selector: %w", err)
	}
	return reqs, nil
}
