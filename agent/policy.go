package agent

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/palisade-mesh/palisade/bpf"
	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/policy"
	"github.com/palisade-mesh/palisade/policy/api"
)

// PoliciesPrefix holds the imported policies: policies/<kind>/<namespace>/<name>.
const PoliciesPrefix = "policies/"

// PolicyKey is where a policy is stored.
func PolicyKey(k api.Key) string { return PoliciesPrefix + k.String() }

func parsePolicyKey(key string) (api.Key, error) {
	parts := strings.SplitN(strings.TrimPrefix(key, PoliciesPrefix), "/", 3)
	if len(parts) != 3 || parts[0] == "" || parts[2] == "" {
		return api.Key{}, fmt.Errorf("policy key %q: want policies/<kind>/<namespace>/<name>", key)
	}
	return api.Key{Kind: parts[0], Namespace: parts[1], Name: parts[2]}, nil
}

// policyState feeds the policy engine from etcd (policies) and the identity cache, and tells the
// regenerator when endpoints need their datapath policy recomputed.
type policyState struct {
	a      *Agent
	engine *policy.Engine

	policiesSynced   chan struct{}
	identitiesSynced chan struct{}
	syncOnce         [2]sync.Once
}

func newPolicyState(a *Agent) (*policyState, error) {
	engine, err := policy.NewEngine(policy.Options{ClusterName: a.cfg.ClusterName, AllClusters: a.cfg.PolicyAllClusters})
	if err != nil {
		return nil, err
	}
	return &policyState{a: a, engine: engine, policiesSynced: make(chan struct{}), identitiesSynced: make(chan struct{})}, nil
}

// waitSynced waits until the first full listing of policies and identities is in the engine, so
// endpoints restored at start-up get their complete policy, not a partial one.
func (p *policyState) waitSynced(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, c := range []chan struct{}{p.policiesSynced, p.identitiesSynced} {
		select {
		case <-c:
		case <-ctx.Done():
			return fmt.Errorf("wait for policy and identity sync: %w", ctx.Err())
		}
	}
	return nil
}

func (p *policyState) summary() (revision uint64, policies uint32) {
	return p.engine.Revision(), uint32(len(p.engine.Policies()))
}

// watchIdentities mirrors the cluster's identities into the engine's selector cache.
func (a *Agent) watchIdentities(ctx context.Context) {
	unsubscribe := a.alloc.Cache().Subscribe(func(ch identity.Change) {
		added := make(map[identity.ID]identity.Labels, len(ch.Added))
		for _, id := range ch.Added {
			added[id.ID] = id.Labels
		}
		var deleted []identity.ID
		local := a.localIdentities()
		for _, id := range ch.Deleted {
			// An identity this node's endpoints use stays known: the allocator restores its keys,
			// and forgetting its labels would leave those endpoints selected by no rule.
			if lbls, ok := local[id.ID]; ok {
				a.log.Warn("identity of a local endpoint vanished from etcd; keeping it", "identity", id.ID)
				added[id.ID] = lbls
				continue
			}
			deleted = append(deleted, id.ID)
		}
		if len(ch.Added) > 0 || len(ch.Deleted) > 0 {
			a.log.Debug("identities changed", "added", len(ch.Added), "deleted", len(ch.Deleted), "synced", ch.Synced)
		}
		if len(added) > 0 || len(deleted) > 0 {
			if deltas := a.policy.engine.UpdateIdentities(added, deleted); len(deltas) > 0 {
				a.triggerRegeneration()
			}
		}
		if ch.Synced {
			a.policy.syncOnce[1].Do(func() { close(a.policy.identitiesSynced) })
		}
	})
	<-ctx.Done()
	unsubscribe()
}

// sameRevisionWindow is how long the policy watcher waits for more events of the revision it is
// collecting when the watch did not mark the end of the revision (events of a relist). The events
// of one etcd transaction arrive back to back, so this only bounds the wait after the last of them.
const sameRevisionWindow = 5 * time.Millisecond

// watchPolicies applies imported policies. The initial listing goes in as one batch, and so do
// all policies written by one transaction (one `policy import`): no endpoint ever sees part of it.
func (a *Agent) watchPolicies(ctx context.Context) {
	var (
		upserts []*api.Policy
		deletes []api.Key
	)
	add := func(ev kvstore.Event) {
		switch ev.Type {
		case kvstore.EventUpsert:
			pol, err := api.ParseStored(ev.Value)
			if err != nil {
				a.log.Error("ignoring invalid stored policy", "key", ev.Key, "error", err)
				return
			}
			upserts = slices.DeleteFunc(upserts, func(q *api.Policy) bool { return q.Key() == pol.Key() })
			upserts = append(upserts, pol)
		case kvstore.EventDelete:
			k, err := parsePolicyKey(ev.Key)
			if err != nil {
				a.log.Warn("ignoring malformed policy key", "error", err)
				return
			}
			upserts = slices.DeleteFunc(upserts, func(q *api.Policy) bool { return q.Key() == k })
			deletes = append(deletes, k)
		}
	}
	flush := func() {
		if len(upserts) == 0 && len(deletes) == 0 {
			return
		}
		rev, _, err := a.policy.engine.ReplacePolicies(upserts, deletes)
		if err != nil {
			a.log.Error("apply policies", "error", err)
		} else {
			a.log.Info("policies applied", "revision", rev, "upserted", len(upserts), "deleted", len(deletes))
		}
		upserts, deletes = nil, nil
		a.triggerRegeneration()
		// Remote clusters are watched for what the policies select: a changed selector set
		// restarts their watch.
		a.mesh.policiesChanged()
	}

	events := a.kv.Watch(ctx, PoliciesPrefix)
	synced := false
	var next *kvstore.Event
	for {
		var ev kvstore.Event
		if next != nil {
			ev, next = *next, nil
		} else {
			var ok bool
			if ev, ok = <-events; !ok {
				return
			}
		}
		if ev.Type == kvstore.EventSynced {
			synced = true
			flush()
			a.policy.syncOnce[0].Do(func() { close(a.policy.policiesSynced) })
			continue
		}
		add(ev)
		if !synced {
			continue // the listing is applied as a whole at EventSynced
		}
		if !ev.EndOfRevision {
			collectRevision(events, ev.Revision, add, &next)
		}
		flush()
	}
}

// collectRevision adds the events of revision rev that follow, stopping after the one marked as
// the end of the revision, at the first event of another revision (kept in next), or when none
// arrives within sameRevisionWindow.
func collectRevision(events <-chan kvstore.Event, rev int64, add func(kvstore.Event), next **kvstore.Event) {
	timer := time.NewTimer(sameRevisionWindow)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return
			}
			if ev.Type == kvstore.EventSynced || ev.Revision != rev {
				*next = &ev
				return
			}
			add(ev)
			if ev.EndOfRevision {
				return
			}
		case <-timer.C:
			return
		}
	}
}

// localIdentities returns the identities of this node's endpoints with their labels.
func (a *Agent) localIdentities() map[identity.ID]identity.Labels {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[identity.ID]identity.Labels, len(a.endpoints))
	for _, ep := range a.endpoints {
		if ep.rec.Identity != 0 && ep.labels != nil {
			out[ep.rec.Identity] = ep.labels
		}
	}
	return out
}

func (a *Agent) triggerRegeneration() {
	select {
	case a.regen <- struct{}{}:
	default: // one is pending already; it will see this change too
	}
}

// regenerateLoop recomputes the node's endpoints whenever policy or identities change, all of them
// in one pass (regenerate). Requests that arrive while it works are coalesced into one more pass.
func (a *Agent) regenerateLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.regen:
		}
		eps := a.endpointList()
		for i, err := range a.regenerate(eps) {
			if err != nil {
				a.log.Error("regenerate endpoint", "endpoint", eps[i].rec.ID, "error", err)
			}
		}
	}
}

// regenerateEndpoint brings one endpoint's datapath policy up to date, in a pass of its own.
func (a *Agent) regenerateEndpoint(ep *endpoint) error {
	return a.regenerate([]*endpoint{ep})[0]
}

// computeEndpoint computes the endpoint's datapath policy and writes what differs from what the
// kernel has through b. The caller holds ep.regenMu, cuts b's flows and then finishes the returned
// regeneration. Nil and no error: the endpoint keeps what it has.
func (a *Agent) computeEndpoint(ep *endpoint, b *bpf.PolicyBatch) (*regeneration, error) {
	a.mu.Lock()
	id, lbls, registered, state := ep.rec.Identity, ep.labels, ep.registered, ep.state
	a.mu.Unlock()
	// Until its identity is (re-)allocated an endpoint keeps what the kernel has.
	if state == stateDisconnecting || state == stateWaitingForIdentity {
		return nil, nil
	}
	if len(lbls) == 0 {
		return nil, a.endpointFailed(ep, fmt.Errorf("endpoint %d has no identity labels", ep.rec.ID))
	}
	eng := a.policy.engine
	if registered != id {
		// The identity may not have reached the engine through the watch yet.
		eng.UpdateIdentities(map[identity.ID]identity.Labels{id: lbls}, nil)
		if _, err := eng.AddEndpoint(id); err != nil {
			return nil, a.endpointFailed(ep, err)
		}
		if registered != 0 {
			eng.RemoveEndpoint(registered)
		}
		a.mu.Lock()
		ep.registered = id
		a.mu.Unlock()
	}
	// The revision is read first: a change landing in between makes the endpoint report an older
	// revision than it has, never a newer one, and triggers another pass.
	rev := eng.Revision()
	ms, ok := eng.MapState(id)
	if !ok {
		return nil, a.endpointFailed(ep, fmt.Errorf("identity %d is not registered with the policy engine", id))
	}
	// The proxy's listeners and rules are in place before the datapath sends flows to them.
	proxyPorts, err := a.l7.prepare(ep, ms)
	if err != nil {
		return nil, a.endpointFailed(ep, err)
	}
	entries, _ := datapathEntries(ms)
	entries = append(entries, withProxyPorts(proxyPorts)...)
	slices.SortFunc(entries, compareEntries)
	r := &regeneration{ep: ep, entries: entries, revision: rev, proxyPorts: proxyPorts, unenforced: unenforcedL7(ms, proxyPorts)}
	r.ingressOn, r.egressOn, _ = eng.Enforcement(id)
	a.mu.Lock()
	prev := ep.applied
	a.mu.Unlock()
	if !slices.Equal(entries, prev) {
		if err := a.writePolicy(b, ep.rec.ID, prev, entries); err != nil {
			return nil, a.endpointFailed(ep, err)
		}
		r.changed = true
	}
	return r, nil
}

func (a *Agent) endpointFailed(ep *endpoint, err error) error {
	a.mu.Lock()
	ep.state, ep.lastErr = stateFailed, err.Error()
	a.mu.Unlock()
	return err
}

// Protocols a MapState entry with "any protocol" but a specific port expands to: the datapath
// knows ports only together with a protocol.
var portProtocols = []uint8{policy.ProtoTCP, policy.ProtoUDP, policy.ProtoSCTP}

// datapathEntries translates a MapState into datapath entries, sorted for stable comparison.
//
// Redirect entries need the L7 proxy. An L7 entry that a plain allow already covers is dropped (the
// allow wins, as the MapState semantics say); one that is not covered is left out, so its traffic is
// dropped rather than passed without its L7 rules: the count of such entries is returned.
func datapathEntries(ms policy.MapState) (entries []bpf.PolicyEntry, unenforced int) {
	for _, k := range ms.Keys() {
		v := ms[k]
		if v.Redirect && !v.Deny {
			if !coveredByAllow(ms, k) {
				unenforced++
			}
			continue
		}
		dir := bpf.Ingress
		if k.Direction == policy.Egress {
			dir = bpf.Egress
		}
		protos := []uint8{k.Proto}
		if k.Proto == policy.ProtoAny && k.Port != 0 {
			protos = portProtocols
		}
		for _, proto := range protos {
			entries = append(entries, bpf.PolicyEntry{
				Identity:  uint32(k.Identity),
				Direction: dir,
				Protocol:  proto,
				Port:      k.Port,
				EndPort:   k.EndPort,
				Deny:      v.Deny,
			})
		}
	}
	slices.SortFunc(entries, compareEntries)
	return entries, unenforced
}

// coveredByAllow reports whether a plain allow entry applies to every packet k applies to.
func coveredByAllow(ms policy.MapState, k policy.Key) bool {
	for o, v := range ms {
		if v.Deny || v.Redirect || o.Direction != k.Direction {
			continue
		}
		if o.Identity != 0 && o.Identity != k.Identity {
			continue
		}
		if o.Proto != policy.ProtoAny && o.Proto != k.Proto {
			continue
		}
		if o.Port == 0 || (k.Port != 0 && o.Port <= k.Port && k.EndPort <= o.EndPort) {
			return true
		}
	}
	return false
}

func compareEntries(x, y bpf.PolicyEntry) int {
	for _, c := range [][2]uint64{
		{uint64(x.Direction), uint64(y.Direction)},
		{uint64(x.Identity), uint64(y.Identity)},
		{uint64(x.Protocol), uint64(y.Protocol)},
		{uint64(x.Port), uint64(y.Port)},
		{uint64(x.EndPort), uint64(y.EndPort)},
	} {
		if c[0] != c[1] {
			if c[0] < c[1] {
				return -1
			}
			return 1
		}
	}
	switch {
	case x.Deny == y.Deny:
		return 0
	case x.Deny:
		return 1
	}
	return -1
}
