package apiserver

import (
	"fmt"
	"sync"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/policy"
	"github.com/palisade-mesh/palisade/policy/api"
)

// subscriber is one Watch stream's side of the view: what it asked for, what a scoped stream has
// been sent, and the bounded queue of changes waiting to be sent.
type subscriber struct {
	kinds     [4]bool             // indexed by apiv1.MeshKind
	selectors [][]api.Requirement // nil: a full watch
	// For a scoped watch, guarded by the view's mutex: the selected identities, and the ipcache
	// prefixes sent (so that a later delete or move is forwarded only if the client has it).
	selected map[uint32]struct{}
	sent     map[string]struct{}

	maxQueue int
	mu       sync.Mutex
	queue    []*change
	overflow bool
	notify   chan struct{} // capacity 1: something was queued
	tooSlow  chan struct{} // closed when the queue overflowed
}

func newSubscriber(kinds [4]bool, selectors [][]api.Requirement, maxQueue int) *subscriber {
	s := &subscriber{
		kinds:     kinds,
		selectors: selectors,
		maxQueue:  maxQueue,
		notify:    make(chan struct{}, 1),
		tooSlow:   make(chan struct{}),
	}
	if selectors != nil {
		s.selected = map[uint32]struct{}{}
		s.sent = map[string]struct{}{}
	}
	return s
}

func (s *subscriber) full() bool { return s.selectors == nil }

func (s *subscriber) matches(lbls identity.Labels) bool {
	for _, sel := range s.selectors {
		if policy.Matches(sel, lbls) {
			return true
		}
	}
	return false
}

// enqueue adds c to the queue. A full queue marks the subscriber too slow and drops what it
// held: the stream is ended and its client must resync.
func (s *subscriber) enqueue(c *change) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.overflow {
		return
	}
	if len(s.queue) >= s.maxQueue {
		s.overflow = true
		s.queue = nil
		close(s.tooSlow)
		return
	}
	s.queue = append(s.queue, c)
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// take returns everything queued and empties the queue.
func (s *subscriber) take() []*change {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue
	s.queue = nil
	return q
}

// kindSet reads the kinds of a request; none means all.
func kindSet(kinds []apiv1.MeshKind) ([4]bool, error) {
	var set [4]bool
	if len(kinds) == 0 {
		set[apiv1.MeshKind_MESH_KIND_IDENTITIES] = true
		set[apiv1.MeshKind_MESH_KIND_IPCACHE] = true
		set[apiv1.MeshKind_MESH_KIND_NODES] = true
		return set, nil
	}
	for i, k := range kinds {
		switch k {
		case apiv1.MeshKind_MESH_KIND_IDENTITIES, apiv1.MeshKind_MESH_KIND_IPCACHE, apiv1.MeshKind_MESH_KIND_NODES:
			set[k] = true
		default:
			return set, fmt.Errorf("kinds[%d]: %v is not a kind to watch (want MESH_KIND_IDENTITIES, MESH_KIND_IPCACHE or MESH_KIND_NODES)", i, k)
		}
	}
	return set, nil
}
