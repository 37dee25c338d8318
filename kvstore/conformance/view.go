package conformance

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/kvstore"
)

// view is a watch consumer that keeps what the events say the store holds, and every event, and
// records each event that breaks the Watch contract.
type view struct {
	mu       sync.Mutex
	kv       map[string]kvstore.Event // key -> its last upsert
	events   []kvstore.Event
	syncs    int
	problems []string
	closed   bool
	changed  chan struct{} // signalled (non-blocking) after each event
}

// watchView starts consuming c.Watch(prefix) until the test ends.
func watchView(t *testing.T, c *kvstore.Client, prefix string) *view {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	v := &view{kv: map[string]kvstore.Event{}, changed: make(chan struct{}, 1)}
	ch := c.Watch(ctx, prefix)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range ch {
			v.apply(ev)
		}
		v.mu.Lock()
		v.closed = true
		v.mu.Unlock()
		v.signal()
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return v
}

func (v *view) signal() {
	select {
	case v.changed <- struct{}{}:
	default:
	}
}

func (v *view) apply(ev kvstore.Event) {
	v.mu.Lock()
	defer v.mu.Unlock()
	defer v.signal()
	v.events = append(v.events, ev)
	switch ev.Type {
	case kvstore.EventUpsert:
		if held, ok := v.kv[ev.Key]; ok && held.Revision >= ev.Revision {
			v.problems = append(v.problems, fmt.Sprintf("duplicate or stale upsert of %s at revision %d (held %d)", ev.Key, ev.Revision, held.Revision))
		}
		v.kv[ev.Key] = ev
	case kvstore.EventDelete:
		if _, ok := v.kv[ev.Key]; !ok {
			v.problems = append(v.problems, fmt.Sprintf("spurious delete of %s at revision %d", ev.Key, ev.Revision))
		}
		delete(v.kv, ev.Key)
	case kvstore.EventSynced:
		v.syncs++
	default:
		v.problems = append(v.problems, fmt.Sprintf("unknown event %+v", ev))
	}
}

// waitFor waits until cond (called with v.mu held) holds.
func (v *view) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		v.mu.Lock()
		ok := cond()
		v.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-v.changed:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			v.mu.Lock()
			defer v.mu.Unlock()
			t.Fatalf("watch: %s: not after 20s; events so far: %s", what, formatEvents(v.events))
		}
	}
}

// waitSyncs waits for the n-th EventSynced.
func (v *view) waitSyncs(t *testing.T, n int) {
	t.Helper()
	v.waitFor(t, fmt.Sprintf("%d synced markers", n), func() bool { return v.syncs >= n })
}

// waitEvents waits until n events arrived and returns them.
func (v *view) waitEvents(t *testing.T, n int) []kvstore.Event {
	t.Helper()
	v.waitFor(t, fmt.Sprintf("%d events", n), func() bool { return len(v.events) >= n })
	return v.snapshotEvents()
}

func (v *view) snapshotEvents() []kvstore.Event {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.events)
}

// waitClosed waits until the watch channel closed.
func (v *view) waitClosed(t *testing.T) {
	t.Helper()
	v.waitFor(t, "channel closed", func() bool { return v.closed })
}

// waitEqualStore waits until the view equals the store's content under prefix (keys, values and
// revisions), and fails on any contract violation seen on the way.
func (v *view) waitEqualStore(t *testing.T, c *kvstore.Client, prefix string) {
	t.Helper()
	kvs, _, err := c.List(testContext(t), prefix)
	if err != nil {
		t.Fatalf("list store for comparison: %v", err)
	}
	v.waitFor(t, "view equals the store", func() bool { return v.equalLocked(kvs) })
	v.checkNoProblems(t)
}

func (v *view) equalLocked(kvs []kvstore.KeyValue) bool {
	if len(kvs) != len(v.kv) {
		return false
	}
	for _, kv := range kvs {
		held, ok := v.kv[kv.Key]
		if !ok || held.Revision != kv.ModRevision || !bytes.Equal(held.Value, kv.Value) {
			return false
		}
	}
	return true
}

func (v *view) checkNoProblems(t *testing.T) {
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.problems) > 0 {
		t.Fatalf("watch contract broken: %v\nevents: %s", v.problems, formatEvents(v.events))
	}
}

func (v *view) keys() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Sorted(maps.Keys(v.kv))
}

func formatEvents(evs []kvstore.Event) string {
	var b bytes.Buffer
	for _, ev := range evs {
		fmt.Fprintf(&b, "\n  %s", formatEvent(ev))
	}
	return b.String()
}

func formatEvent(ev kvstore.Event) string {
	switch ev.Type {
	case kvstore.EventUpsert:
		return fmt.Sprintf("upsert %s=%s", ev.Key, ev.Value)
	case kvstore.EventDelete:
		return fmt.Sprintf("delete %s", ev.Key)
	default:
		return ev.Type.String()
	}
}

// describe renders events without revisions, for comparing with an expected sequence.
func describe(evs []kvstore.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = formatEvent(ev)
	}
	return out
}
