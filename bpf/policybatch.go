package bpf

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"
)

// PolicyBatch changes the policies of several endpoints and cuts the established flows they no
// longer admit in one pass over the conntrack table at RevokeFlows, instead of one pass per
// endpoint: the table has 256k buckets, and walking it costs milliseconds even when it is empty,
// so a policy change reaching 50 endpoints paid for 50 walks.
//
// Every write takes effect at once, with the same guarantees as the Datapath method of the same
// name: new flows are evaluated against the new policy from then on. Only the revocation of
// flows established under the old policy waits, so callers call RevokeFlows as soon as their
// writes are done, and report a policy as enforced only after it returned. A PolicyBatch is not
// safe for concurrent use; several batches and direct writes may run at once.
type PolicyBatch struct {
	d *Datapath
	// revoke holds the endpoints whose writes may have taken something away since the last
	// RevokeFlows.
	revoke map[uint32]struct{}
}

// NewPolicyBatch starts a batch of policy writes.
func (d *Datapath) NewPolicyBatch() *PolicyBatch {
	return &PolicyBatch{d: d, revoke: make(map[uint32]struct{})}
}

// ReplacePolicy is Datapath.ReplacePolicy with the revocation of flows left to RevokeFlows.
func (b *PolicyBatch) ReplacePolicy(epID uint32, entries []PolicyEntry) error {
	return b.d.replacePolicy(epID, entries, b)
}

// ApplyPolicyDelta is Datapath.ApplyPolicyDelta with the revocation of flows left to RevokeFlows.
// A delta that only adds allow entries revokes nothing and adds no work to RevokeFlows.
func (b *PolicyBatch) ApplyPolicyDelta(epID uint32, adds, deletes []PolicyEntry) error {
	return b.d.applyPolicyDelta(epID, adds, deletes, b)
}

// Pending returns the endpoints, sorted, whose flows the next RevokeFlows checks.
func (b *PolicyBatch) Pending() []uint32 {
	out := make([]uint32, 0, len(b.revoke))
	for id := range b.revoke {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// RevokeFlows cuts, in one pass over the conntrack table, the established flows of every endpoint
// written through the batch that the endpoint's installed policy no longer admits (or admits
// through another proxy port), and returns how many. The flows are checked against the policy in
// the kernel when it runs, so a later write through another path is respected too. After it
// returns the batch is empty and can be reused; on error the endpoints stay pending.
func (b *PolicyBatch) RevokeFlows() (int, error) {
	if len(b.revoke) == 0 {
		return 0, nil
	}
	b.d.mu.Lock()
	defer b.d.mu.Unlock()
	n, err := b.d.revokeFlowsOfLocked(b.revoke)
	if err != nil {
		return n, err
	}
	clear(b.revoke)
	return n, nil
}

// revokeLater cuts the endpoint's flows that lookup no longer admits now when b is nil, and
// otherwise leaves it to b.RevokeFlows.
func (d *Datapath) revokeLater(b *PolicyBatch, epID uint32, lookup policyLookup) error {
	if b == nil {
		return d.revokeFlows(epID, lookup)
	}
	b.revoke[epID] = struct{}{}
	return nil
}

// revokeFlowsOfLocked cuts the flows of the endpoints eps that their installed policy no longer
// admits, in one scan of the conntrack table. An endpoint's policy is opened only when one of its
// flows turns up; every policy key is read from the kernel, and every verdict computed, once per
// call however many flows share it (a busy table holds thousands of flows of a few peers). A
// policy that cannot be read counts as none: its flows are cut (fail closed), and the error is
// returned.
func (d *Datapath) revokeFlowsOfLocked(eps map[uint32]struct{}) (int, error) {
	policies := make(map[uint32]*installedPolicy)
	defer func() {
		for _, p := range policies {
			p.close()
		}
	}()
	type question struct {
		endpoint, identity uint32
		port               uint16
		proto              uint8
		dir                Direction
	}
	type answer struct {
		allowed bool
		proxy   uint16
	}
	verdicts := make(map[question]answer)
	var openErrs []error
	cut := make(map[uint32]int)
	n, err := d.Conntrack().deleteWhere(func(k datapathCtKey, v datapathCtValue) bool {
		if _, ok := eps[v.EndpointId]; !ok {
			return false
		}
		p, ok := policies[v.EndpointId]
		if !ok {
			m, err := d.innerMap(v.EndpointId)
			if err != nil {
				openErrs = append(openErrs, err)
			}
			p = &installedPolicy{m: m, seen: make(map[datapathPolicyKey]cachedLookup)}
			policies[v.EndpointId] = p
		}
		q := question{v.EndpointId, v.Identity, hostPort(k.Dport), k.Proto, Direction(k.Dir)}
		a, ok := verdicts[q]
		if !ok {
			a.allowed, a.proxy = verdictWith(p.lookup, q.identity, q.port, q.proto, q.dir)
			verdicts[q] = a
		}
		if !a.allowed || a.proxy != v.ProxyPort {
			cut[v.EndpointId]++
			return true
		}
		return false
	})
	for id, flows := range cut {
		d.log.Info("cut flows the new policy no longer allows", "endpoint", id, "flows", flows)
	}
	if err = errors.Join(err, errors.Join(openErrs...)); err != nil {
		return n, fmt.Errorf("cut flows revoked by the policies of %d endpoints: %w", len(eps), err)
	}
	return n, nil
}

// installedPolicy reads an endpoint's policy map in the kernel, remembering every answer.
type installedPolicy struct {
	m    *ebpf.Map // nil: no policy installed
	seen map[datapathPolicyKey]cachedLookup
}

type cachedLookup struct {
	v  datapathPolicyValue
	ok bool
}

func (p *installedPolicy) lookup(k datapathPolicyKey) (datapathPolicyValue, bool) {
	if p.m == nil {
		return datapathPolicyValue{}, false
	}
	if c, ok := p.seen[k]; ok {
		return c.v, c.ok
	}
	var c cachedLookup
	// Any failure reads as "no entry": the flow is cut rather than kept on a guess.
	c.ok = p.m.Lookup(&k, &c.v) == nil
	p.seen[k] = c
	return c.v, c.ok
}

func (p *installedPolicy) close() {
	if p.m != nil {
		_ = p.m.Close()
	}
}
