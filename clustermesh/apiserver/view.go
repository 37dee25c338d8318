package apiserver

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync"

	"google.golang.org/protobuf/proto"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/policy"
	"github.com/palisade-mesh/palisade/policy/api"
)

// change is one MeshChange ready for the wire. It is built once per etcd event and shared,
// read-only, by every stream that sends it.
type change struct {
	msg  *apiv1.MeshChange
	size int // proto.Size(msg), for batching by bytes
}

func newChange(m *apiv1.MeshChange) *change { return &change{msg: m, size: proto.Size(m)} }

func identityUpsert(id uint32, lbls identity.Labels) *change {
	m := &apiv1.MeshIdentity{Id: id, Labels: make([]string, len(lbls))}
	for i, l := range lbls {
		m.Labels[i] = l.String()
	}
	return newChange(&apiv1.MeshChange{Object: &apiv1.MeshChange_Identity{Identity: m}})
}

func identityDelete(id uint32) *change {
	return newChange(&apiv1.MeshChange{Object: &apiv1.MeshChange_Identity{Identity: &apiv1.MeshIdentity{Id: id}}, Deleted: true})
}

func ipcacheDelete(prefix string) *change {
	return newChange(&apiv1.MeshChange{Object: &apiv1.MeshChange_Ipcache{Ipcache: &apiv1.MeshIPCacheEntry{Prefix: prefix}}, Deleted: true})
}

func nodeDelete(name string) *change {
	return newChange(&apiv1.MeshChange{Object: &apiv1.MeshChange_Node{Node: &apiv1.MeshNode{Name: name}}, Deleted: true})
}

type identityEntry struct {
	labels identity.Labels
	up     *change
}

type ipcacheEntry struct {
	identity uint32
	up       *change
}

// view is the server's copy of the cluster's identities, ipcache and nodes, fed by one kvstore
// watch per prefix, and the set of streams subscribed to its changes. Changes are applied and
// handed to the subscribers under mu, so a subscriber's snapshot and the changes queued after it
// neither overlap nor leave a gap.
type view struct {
	log *slog.Logger

	mu         sync.Mutex
	identities map[uint32]*identityEntry
	ipcache    map[string]*ipcacheEntry
	ipcacheBy  map[uint32]map[string]struct{} // identity -> its ipcache prefixes
	nodes      map[string]*change
	subs       map[*subscriber]struct{}
	toSync     int           // prefixes that have not delivered their first EventSynced yet
	synced     chan struct{} // closed when toSync reaches 0
}

func newView(log *slog.Logger) *view {
	return &view{
		log:        log,
		identities: map[uint32]*identityEntry{},
		ipcache:    map[string]*ipcacheEntry{},
		ipcacheBy:  map[uint32]map[string]struct{}{},
		nodes:      map[string]*change{},
		subs:       map[*subscriber]struct{}{},
		toSync:     3,
		synced:     make(chan struct{}),
	}
}

// waitSynced returns when every prefix has been listed once, or ctx ends.
func (v *view) waitSynced(ctx context.Context) error {
	select {
	case <-v.synced:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (v *view) isSynced() bool {
	select {
	case <-v.synced:
		return true
	default:
		return false
	}
}

// run feeds the view from kv until ctx ends: one watch per prefix.
func (v *view) run(ctx context.Context, kv *kvstore.Client) {
	var wg sync.WaitGroup
	for _, p := range []struct {
		prefix string
		apply  func(kvstore.Event)
	}{
		{identity.MasterPrefix, v.applyIdentity},
		{ipcachePrefix, v.applyIPCache},
		{nodesPrefix, v.applyNode},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			first := true
			for ev := range kv.Watch(ctx, p.prefix) {
				if ev.Type == kvstore.EventSynced {
					if first {
						first = false
						v.markSynced(p.prefix)
					}
					continue
				}
				p.apply(ev)
			}
		}()
	}
	wg.Wait()
}

func (v *view) markSynced(prefix string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.toSync--
	v.log.Info("listed cluster state", "prefix", prefix)
	if v.toSync == 0 {
		close(v.synced)
	}
}

func (v *view) applyIdentity(ev kvstore.Event) {
	if ev.Type == kvstore.EventDelete {
		id, err := decodeIdentityKey(ev.Key)
		if err == nil {
			v.deleteIdentity(id)
		}
		return
	}
	id, lbls, err := decodeIdentity(ev.Key, ev.Value)
	if err != nil {
		v.log.Warn("ignoring malformed identity", "key", ev.Key, "error", err)
		if id, kerr := decodeIdentityKey(ev.Key); kerr == nil {
			v.deleteIdentity(id) // whatever it was before, it is not served any more
		}
		return
	}
	v.upsertIdentity(id, lbls)
}

func (v *view) applyIPCache(ev kvstore.Event) {
	if ev.Type == kvstore.EventDelete {
		if prefix, err := decodeIPCacheKey(ev.Key); err == nil {
			v.deleteIPCache(prefix)
		}
		return
	}
	e, err := decodeIPCache(ev.Key, ev.Value)
	if err != nil {
		v.log.Warn("ignoring malformed ipcache entry", "key", ev.Key, "error", err)
		if prefix, kerr := decodeIPCacheKey(ev.Key); kerr == nil {
			v.deleteIPCache(prefix)
		}
		return
	}
	v.upsertIPCache(e)
}

func (v *view) applyNode(ev kvstore.Event) {
	if ev.Type == kvstore.EventDelete {
		if name, err := decodeNodeKey(ev.Key); err == nil {
			v.deleteNode(name)
		}
		return
	}
	n, err := decodeNode(ev.Key, ev.Value)
	if err != nil {
		v.log.Warn("ignoring malformed node", "key", ev.Key, "error", err)
		if name, kerr := decodeNodeKey(ev.Key); kerr == nil {
			v.deleteNode(name)
		}
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	up := newChange(&apiv1.MeshChange{Object: &apiv1.MeshChange_Node{Node: n}})
	v.nodes[n.Name] = up
	for s := range v.subs {
		if s.kinds[apiv1.MeshKind_MESH_KIND_NODES] {
			s.enqueue(up)
		}
	}
}

func (v *view) deleteNode(name string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.nodes[name]; !ok {
		return
	}
	delete(v.nodes, name)
	del := nodeDelete(name)
	for s := range v.subs {
		if s.kinds[apiv1.MeshKind_MESH_KIND_NODES] {
			s.enqueue(del)
		}
	}
}

func (v *view) upsertIdentity(id uint32, lbls identity.Labels) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e := &identityEntry{labels: lbls, up: identityUpsert(id, lbls)}
	v.identities[id] = e
	var del *change
	for s := range v.subs {
		if s.full() {
			if s.kinds[apiv1.MeshKind_MESH_KIND_IDENTITIES] {
				s.enqueue(e.up)
			}
			continue
		}
		_, was := s.selected[id]
		switch {
		case s.matches(lbls):
			s.selected[id] = struct{}{}
			if s.kinds[apiv1.MeshKind_MESH_KIND_IDENTITIES] {
				s.enqueue(e.up)
			}
			if !was {
				v.sendIPCacheOf(s, id)
			}
		case was:
			// Its labels changed and no longer match: the client must forget it.
			if del == nil {
				del = identityDelete(id)
			}
			v.unselect(s, id, del)
		}
	}
}

func (v *view) deleteIdentity(id uint32) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.identities[id]; !ok {
		return
	}
	delete(v.identities, id)
	del := identityDelete(id)
	for s := range v.subs {
		if s.full() {
			if s.kinds[apiv1.MeshKind_MESH_KIND_IDENTITIES] {
				s.enqueue(del)
			}
			continue
		}
		if _, was := s.selected[id]; was {
			v.unselect(s, id, del)
		}
	}
}

// sendIPCacheOf queues the ipcache entries of a newly selected identity to a scoped stream.
func (v *view) sendIPCacheOf(s *subscriber, id uint32) {
	if !s.kinds[apiv1.MeshKind_MESH_KIND_IPCACHE] {
		return
	}
	for prefix := range v.ipcacheBy[id] {
		s.sent[prefix] = struct{}{}
		s.enqueue(v.ipcache[prefix].up)
	}
}

// unselect removes an identity, and the ipcache entries it had sent for it, from a scoped stream.
func (v *view) unselect(s *subscriber, id uint32, del *change) {
	delete(s.selected, id)
	if s.kinds[apiv1.MeshKind_MESH_KIND_IDENTITIES] {
		s.enqueue(del)
	}
	for prefix := range v.ipcacheBy[id] {
		if _, ok := s.sent[prefix]; ok {
			delete(s.sent, prefix)
			s.enqueue(ipcacheDelete(prefix))
		}
	}
}

func (v *view) upsertIPCache(m *apiv1.MeshIPCacheEntry) {
	v.mu.Lock()
	defer v.mu.Unlock()
	prefix := m.Prefix
	if old, ok := v.ipcache[prefix]; ok && old.identity != m.Identity {
		v.unindex(prefix, old.identity)
	}
	e := &ipcacheEntry{identity: m.Identity, up: newChange(&apiv1.MeshChange{Object: &apiv1.MeshChange_Ipcache{Ipcache: m}})}
	v.ipcache[prefix] = e
	if v.ipcacheBy[m.Identity] == nil {
		v.ipcacheBy[m.Identity] = map[string]struct{}{}
	}
	v.ipcacheBy[m.Identity][prefix] = struct{}{}
	var del *change
	for s := range v.subs {
		if !s.kinds[apiv1.MeshKind_MESH_KIND_IPCACHE] {
			continue
		}
		if s.full() {
			s.enqueue(e.up)
			continue
		}
		if _, ok := s.selected[m.Identity]; ok {
			s.sent[prefix] = struct{}{}
			s.enqueue(e.up)
		} else if _, ok := s.sent[prefix]; ok {
			// The address moved to an identity the stream does not select.
			delete(s.sent, prefix)
			if del == nil {
				del = ipcacheDelete(prefix)
			}
			s.enqueue(del)
		}
	}
}

func (v *view) deleteIPCache(prefix string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	old, ok := v.ipcache[prefix]
	if !ok {
		return
	}
	delete(v.ipcache, prefix)
	v.unindex(prefix, old.identity)
	del := ipcacheDelete(prefix)
	for s := range v.subs {
		if !s.kinds[apiv1.MeshKind_MESH_KIND_IPCACHE] {
			continue
		}
		if s.full() {
			s.enqueue(del)
		} else if _, ok := s.sent[prefix]; ok {
			delete(s.sent, prefix)
			s.enqueue(del)
		}
	}
}

func (v *view) unindex(prefix string, id uint32) {
	if set := v.ipcacheBy[id]; set != nil {
		delete(set, prefix)
		if len(set) == 0 {
			delete(v.ipcacheBy, id)
		}
	}
}

// subscribe registers s and returns the current state it selects (identities, then nodes, then
// ipcache entries); every later change is queued to s.
func (v *view) subscribe(s *subscriber) []*change {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []*change
	ids := make([]uint32, 0, len(v.identities))
	for id, e := range v.identities {
		if s.full() || s.matches(e.labels) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	if !s.full() {
		for _, id := range ids {
			s.selected[id] = struct{}{}
		}
	}
	if s.kinds[apiv1.MeshKind_MESH_KIND_IDENTITIES] {
		for _, id := range ids {
			out = append(out, v.identities[id].up)
		}
	}
	if s.kinds[apiv1.MeshKind_MESH_KIND_NODES] {
		start := len(out)
		for _, n := range v.nodes {
			out = append(out, n)
		}
		slices.SortFunc(out[start:], func(a, b *change) int { return cmp.Compare(a.msg.GetNode().Name, b.msg.GetNode().Name) })
	}
	if s.kinds[apiv1.MeshKind_MESH_KIND_IPCACHE] {
		start := len(out)
		if s.full() {
			for _, e := range v.ipcache {
				out = append(out, e.up)
			}
		} else {
			for _, id := range ids {
				for prefix := range v.ipcacheBy[id] {
					s.sent[prefix] = struct{}{}
					out = append(out, v.ipcache[prefix].up)
				}
			}
		}
		slices.SortFunc(out[start:], func(a, b *change) int { return cmp.Compare(a.msg.GetIpcache().Prefix, b.msg.GetIpcache().Prefix) })
	}
	v.subs[s] = struct{}{}
	return out
}

func (v *view) unsubscribe(s *subscriber) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.subs, s)
}

// resolve returns the identities matching reqs now, by ID.
func (v *view) resolve(reqs []api.Requirement) []*apiv1.MeshIdentity {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []*apiv1.MeshIdentity
	for _, e := range v.identities {
		if policy.Matches(reqs, e.labels) {
			out = append(out, e.up.msg.GetIdentity())
		}
	}
	slices.SortFunc(out, func(a, b *apiv1.MeshIdentity) int { return cmp.Compare(a.Id, b.Id) })
	return out
}
