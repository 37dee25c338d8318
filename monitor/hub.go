package monitor

import (
	"context"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
)

// Filter selects events for one subscriber. Zero fields match everything.
type Filter struct {
	Types        []Type
	FromIdentity uint32
	ToIdentity   uint32
}

// Match reports whether e passes the filter.
func (f Filter) Match(e Event) bool {
	if len(f.Types) > 0 && !slices.Contains(f.Types, e.Type) {
		return false
	}
	if f.FromIdentity != 0 && e.Source.Identity != f.FromIdentity {
		return false
	}
	if f.ToIdentity != 0 && e.Dest.Identity != f.ToIdentity {
		return false
	}
	return true
}

// Hub fans events out to subscribers. Publish never blocks: a subscriber whose buffer is full
// loses the event, and its Lost counter says how many it lost.
type Hub struct {
	mu   sync.RWMutex
	subs map[*Subscription]struct{}
}

// NewHub returns an empty hub.
func NewHub() *Hub {
	return &Hub{subs: make(map[*Subscription]struct{})}
}

// Subscription is one subscriber's feed.
type Subscription struct {
	C      <-chan Event
	c      chan Event
	filter Filter
	lost   atomic.Uint64
}

// Lost returns how many events were dropped because the subscriber was too slow.
func (s *Subscription) Lost() uint64 { return s.lost.Load() }

// Subscribe registers a subscriber with room for buffer events. The feed closes when ctx ends.
func (h *Hub) Subscribe(ctx context.Context, f Filter, buffer int) *Subscription {
	if buffer < 1 {
		buffer = 1
	}
	c := make(chan Event, buffer)
	s := &Subscription{C: c, c: c, filter: f}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	context.AfterFunc(ctx, func() {
		h.mu.Lock()
		delete(h.subs, s)
		h.mu.Unlock()
		close(c)
	})
	return s
}

// Publish hands e to every matching subscriber without waiting for any of them.
func (h *Hub) Publish(e Event) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for s := range h.subs {
		if !s.filter.Match(e) {
			continue
		}
		select {
		case s.c <- e:
		default:
			s.lost.Add(1)
		}
	}
}

// Subscribers returns how many subscribers are registered.
func (h *Hub) Subscribers() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.subs)
}

func sortedKeys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}
