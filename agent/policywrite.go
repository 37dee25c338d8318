package agent

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/palisade-mesh/palisade/bpf"
	"github.com/palisade-mesh/palisade/policy"
)

// regeneration is an endpoint whose new policy is in the kernel but not yet reported: what it
// reports once the flows that policy refuses are cut.
type regeneration struct {
	ep                  *endpoint
	entries             []bpf.PolicyEntry
	revision            uint64
	proxyPorts          map[policy.Key]uint16
	unenforced          int
	ingressOn, egressOn bool
	changed             bool // entries differ from what was applied before
}

// regenerate brings the endpoints' datapath policies up to date in one pass and returns one error
// per endpoint. Every endpoint's changes are written first (each in the order writePolicy keeps),
// then the established flows the new policies refuse are cut with one scan of the conntrack table
// for all of them, and only then does each endpoint report its new revision and release the proxy
// listeners it no longer uses. Cutting flows per endpoint cost a scan of the whole table each
// time, which made a change reaching 50 endpoints take hundreds of milliseconds.
func (a *Agent) regenerate(eps []*endpoint) []error {
	if len(eps) == 0 {
		return nil
	}
	passStart := time.Now()
	errs := make([]error, len(eps))
	regens := make([]*regeneration, len(eps))
	spent := make([]time.Duration, len(eps))
	batch := a.dp.NewPolicyBatch()
	for i, ep := range eps {
		// Held until the endpoint reports: the next regeneration's delta starts from this one's.
		ep.regenMu.Lock()
		defer ep.regenMu.Unlock()
		start := time.Now()
		regens[i], errs[i] = a.computeEndpoint(ep, batch)
		spent[i] = time.Since(start)
	}
	start := time.Now()
	pending := batch.Pending()
	flowsCut, revokeErr := batch.RevokeFlows()
	revokeTook := time.Since(start)
	revokeShare := revokeTook / time.Duration(len(eps))
	var changed int
	var revision uint64
	for i, r := range regens {
		switch {
		case r == nil:
		case revokeErr != nil && slices.Contains(pending, r.ep.rec.ID):
			errs[i] = a.revocationFailed(r.ep, revokeErr)
		default:
			a.finishRegeneration(r)
		}
		outcome := "unchanged"
		switch {
		case errs[i] != nil:
			outcome = "failed"
		case r != nil && r.changed:
			outcome = "applied"
			changed++
			revision = max(revision, r.revision)
		}
		a.metrics.regenerations.WithLabelValues(outcome).Inc()
		a.metrics.regenerationTime.Observe((spent[i] + revokeShare).Seconds())
	}
	if changed > 0 {
		a.log.Info("endpoint policies enforced", "revision", revision, "endpoints", len(eps), "changed", changed,
			"flows_cut", flowsCut, "took", time.Since(passStart).Round(time.Microsecond), "revoke_took", revokeTook.Round(time.Microsecond))
	}
	return errs
}

// finishRegeneration records the endpoint's new policy as enforced.
func (a *Agent) finishRegeneration(r *regeneration) {
	a.l7.release(r.ep, r.proxyPorts)
	a.mu.Lock()
	defer a.mu.Unlock()
	r.ep.applied = r.entries
	r.ep.revision = r.revision
	r.ep.ingressOn, r.ep.egressOn = r.ingressOn, r.egressOn
	if r.ep.state == stateDisconnecting {
		return // deleted meanwhile: it never turns ready again
	}
	r.ep.state, r.ep.lastErr = stateReady, ""
	if r.unenforced > 0 {
		r.ep.lastErr = fmt.Sprintf("%d L7 rule entries cannot go through the L7 proxy (it takes ingress TCP only): their traffic is dropped", r.unenforced)
	}
}

// revocationFailed marks an endpoint whose new policy is in the kernel while flows it refuses may
// still run. Forgetting what was applied makes its next regeneration install the whole policy,
// which checks every flow of the endpoint again.
func (a *Agent) revocationFailed(ep *endpoint, err error) error {
	a.mu.Lock()
	ep.applied = nil
	a.mu.Unlock()
	return a.endpointFailed(ep, errors.Join(errors.New("policy written but flows it refuses not cut"), err))
}

// writePolicy brings an endpoint's datapath policy from old to new through b, which cuts the flows
// the new policy refuses later, for all endpoints of a pass at once.
//
// A first install (old == nil) swaps in the whole map at once. Later changes are written as
// deltas, which cost a fraction of a map swap, in an order that never lets a packet see a state
// more permissive than both the old and the new policy: new and tightened deny entries first,
// then the allow entries (added, changed, removed), and only then the deny entries that went away.
func (a *Agent) writePolicy(b *bpf.PolicyBatch, epID uint32, old, new []bpf.PolicyEntry) error {
	if old == nil {
		return b.ReplacePolicy(epID, new)
	}
	d := diffEntries(old, new)
	for _, phase := range []struct {
		name          string
		adds, deletes []bpf.PolicyEntry
	}{
		{"add deny entries", d.addDeny, nil},
		{"update allow entries", d.addAllow, d.delAllow},
		{"remove deny entries", nil, d.delDeny},
	} {
		if len(phase.adds) == 0 && len(phase.deletes) == 0 {
			continue
		}
		if err := b.ApplyPolicyDelta(epID, phase.adds, phase.deletes); err != nil {
			// The datapath rolled the failed phase back; a full swap restores a consistent state.
			if rerr := b.ReplacePolicy(epID, new); rerr != nil {
				return fmt.Errorf("%s: %w; replacing the whole policy also failed: %v", phase.name, err, rerr)
			}
			return nil
		}
	}
	return nil
}

// entryDiff is how a policy changed, split by what each change does to what is allowed.
type entryDiff struct {
	addDeny, addAllow []bpf.PolicyEntry // new entries, or entries whose verdict or proxy port changed
	delAllow, delDeny []bpf.PolicyEntry // entries that went away
}

func entryKey(e bpf.PolicyEntry) bpf.PolicyEntry {
	e.Deny, e.ProxyPort = false, 0
	return e
}

func compareKeys(x, y bpf.PolicyEntry) int { return compareEntries(entryKey(x), entryKey(y)) }

// diffEntries walks old and new side by side in key order, without building maps: one policy
// change diffs every endpoint of the node.
func diffEntries(old, new []bpf.PolicyEntry) entryDiff {
	old, new = uniqueByKey(old), uniqueByKey(new)
	var d entryDiff
	add := func(e bpf.PolicyEntry) {
		if e.Deny {
			d.addDeny = append(d.addDeny, e)
		} else {
			d.addAllow = append(d.addAllow, e)
		}
	}
	for i, j := 0, 0; i < len(old) || j < len(new); {
		var c int
		switch {
		case i == len(old):
			c = 1
		case j == len(new):
			c = -1
		default:
			c = compareKeys(old[i], new[j])
		}
		switch {
		case c < 0:
			if old[i].Deny {
				d.delDeny = append(d.delDeny, old[i])
			} else {
				d.delAllow = append(d.delAllow, old[i])
			}
			i++
		case c > 0:
			add(new[j])
			j++
		default:
			if old[i] != new[j] {
				add(new[j])
			}
			i, j = i+1, j+1
		}
	}
	return d
}

// uniqueByKey returns entries in key order with one entry per key, the last one given for a key
// winning. The agent's lists already are (regenerate sorts them), and are returned as they are.
func uniqueByKey(entries []bpf.PolicyEntry) []bpf.PolicyEntry {
	ordered := true
	for i := 1; i < len(entries) && ordered; i++ {
		ordered = compareKeys(entries[i-1], entries[i]) < 0
	}
	if ordered {
		return entries
	}
	out := slices.Clone(entries)
	slices.SortStableFunc(out, compareKeys)
	n := 0
	for i := range out {
		if i+1 < len(out) && compareKeys(out[i], out[i+1]) == 0 {
			continue // a later entry of the same key wins
		}
		out[n] = out[i]
		n++
	}
	return out[:n]
}
