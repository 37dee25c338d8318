package agent

import (
	"fmt"

	"github.com/palisade-mesh/palisade/bpf"
)

// writePolicy brings an endpoint's datapath policy from old to new.
//
// A first install (old == nil) swaps in the whole map at once. Later changes are written as
// deltas, which cost a fraction of a map swap, in an order that never lets a packet see a state
// more permissive than both the old and the new policy: new and tightened deny entries first,
// then the allow entries (added, changed, removed), and only then the deny entries that went away.
func (a *Agent) writePolicy(epID uint32, old, new []bpf.PolicyEntry) error {
	if old == nil {
		return a.dp.ReplacePolicy(epID, new)
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
		if err := a.dp.ApplyPolicyDelta(epID, phase.adds, phase.deletes); err != nil {
			// The datapath rolled the failed phase back; a full swap restores a consistent state.
			if rerr := a.dp.ReplacePolicy(epID, new); rerr != nil {
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

func diffEntries(old, new []bpf.PolicyEntry) entryDiff {
	oldByKey := make(map[bpf.PolicyEntry]bpf.PolicyEntry, len(old))
	for _, e := range old {
		oldByKey[entryKey(e)] = e
	}
	var d entryDiff
	seen := make(map[bpf.PolicyEntry]bool, len(new))
	for _, e := range new {
		k := entryKey(e)
		seen[k] = true
		if prev, ok := oldByKey[k]; ok && prev == e {
			continue
		}
		if e.Deny {
			d.addDeny = append(d.addDeny, e)
		} else {
			d.addAllow = append(d.addAllow, e)
		}
	}
	for k, e := range oldByKey {
		if seen[k] {
			continue
		}
		if e.Deny {
			d.delDeny = append(d.delDeny, e)
		} else {
			d.delAllow = append(d.delAllow, e)
		}
	}
	return d
}
