package kvstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cenkalti/backoff/v5"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// EventType says what an Event reports.
type EventType int

const (
	// EventUpsert: the key was created or changed; Value is its value now.
	EventUpsert EventType = iota + 1
	// EventDelete: the key is gone.
	EventDelete
	// EventSynced: every key that existed at Revision has been delivered; the consumer's view now
	// equals the store at Revision. It follows the initial listing and every relist.
	EventSynced
)

func (t EventType) String() string {
	switch t {
	case EventUpsert:
		return "upsert"
	case EventDelete:
		return "delete"
	case EventSynced:
		return "synced"
	default:
		return fmt.Sprintf("EventType(%d)", int(t))
	}
}

// Event is one change seen by Watch. Key is relative to the client's prefix (not to the watched
// prefix).
type Event struct {
	Type  EventType
	Key   string // empty for EventSynced
	Value []byte // nil for EventDelete and EventSynced
	// Revision is the key's ModRevision for an upsert, the revision of the delete for a delete seen
	// live, and the listing's revision for EventSynced and for a delete found by a relist.
	Revision int64
	// EndOfRevision marks a change seen live as the last of its revision (of one transaction):
	// etcd delivers all events of a revision in one watch response, so a consumer applying a
	// transaction as a whole need not wait for more. False on listing and relist events.
	EndOfRevision bool
}

// Watch delivers the keys under prefix and then their changes:
//
//  1. the listing at a revision R, one EventUpsert per key in key order;
//  2. EventSynced with Revision R;
//  3. every change after R, in revision order.
//
// When the watch stream ends (etcd compacted the revisions it still needed, the member lost its
// leader, a request failed) the watcher lists the prefix again and emits only the differences from
// what it delivered: an EventUpsert for each key created or changed meanwhile, an EventDelete for
// each key gone, then EventSynced again with the new listing's revision. So the consumer never
// misses a change, never gets the same key revision twice and never gets a delete for a key it was
// not told about. A connection that drops and comes back without a compaction in between is
// resumed by etcd's client from the last revision received, without a relist.
//
// The channel is unbuffered: a consumer that stops reading holds the watcher (and etcd's stream)
// back. It is closed when ctx is cancelled or the client is closed.
func (c *Client) Watch(ctx context.Context, prefix string) <-chan Event {
	out := make(chan Event)
	w := &watcher{
		c:      c,
		prefix: prefix,
		out:    out,
		known:  map[string]*knownKey{},
	}
	if !c.goBackground(ctx, w.run) {
		close(out)
	}
	return out
}

// watcher is the goroutine behind one Watch call; it owns every field.
type watcher struct {
	c      *Client
	prefix string
	out    chan<- Event
	// known holds each key the consumer has, with the ModRevision it was given, to compute what
	// changed across a relist and to drop duplicates.
	known map[string]*knownKey
	batch []Event // the events of one watch response, reused
}

// knownKey is an entry of watcher.known. It keeps the key's string so that a change to a known key
// is delivered without allocating, and is updated in place.
type knownKey struct {
	key string
	rev int64
}

// Bounds of the pause between relists when etcd keeps failing.
const (
	watchRetryInitial = 100 * time.Millisecond
	watchRetryMax     = 5 * time.Second
)

func (w *watcher) run(ctx context.Context) {
	defer close(w.out)
	m := w.c.metrics
	m.watchers.Inc()
	defer m.watchers.Dec()

	pause := newWatchBackoff()
	for {
		rev, err := w.relist(ctx)
		if err != nil {
			return // ctx is done
		}
		start := time.Now()
		reason, err := w.follow(ctx, rev)
		if ctx.Err() != nil {
			return
		}
		m.watchResyncs[reason].Inc()
		w.c.log.Info("watch stream ended, relisting", "prefix", w.prefix, "reason", reason, "revision", rev, "error", err)
		if reason == resyncCompacted {
			continue // the relist catches up to the present: it cannot loop
		}
		// A stream that broke right away (no leader, etcd refusing) must not turn into a hot loop;
		// one that ran for a while starts over with a short pause.
		if time.Since(start) > watchRetryMax {
			pause.Reset()
		}
		select {
		case <-time.After(pause.NextBackOff()):
		case <-ctx.Done():
			return
		}
	}
}

func newWatchBackoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = watchRetryInitial
	b.MaxInterval = watchRetryMax
	return b
}

// relist lists the prefix, retrying until it succeeds or ctx ends, emits the differences from what
// the consumer holds, then EventSynced. It returns the listing's revision.
func (w *watcher) relist(ctx context.Context) (int64, error) {
	type listing struct {
		kvs []KeyValue
		rev int64
	}
	attempt := 0
	got, err := backoff.Retry(ctx, func() (listing, error) {
		attempt++
		// Each attempt gets the request timeout even when the watch's context has a far deadline:
		// a listing stuck on a dead connection must give way to the next attempt.
		actx, cancel := context.WithTimeout(ctx, w.c.cfg.RequestTimeout)
		defer cancel()
		kvs, rev, err := w.c.List(actx, w.prefix)
		if err != nil && ctx.Err() == nil {
			w.c.log.Warn("watch relist failed, retrying", "prefix", w.prefix, "attempt", attempt, "error", err)
		}
		return listing{kvs, rev}, err
	}, backoff.WithBackOff(newWatchBackoff()), backoff.WithMaxElapsedTime(0))
	if err != nil {
		return 0, err
	}

	present := make(map[string]struct{}, len(got.kvs))
	for _, kv := range got.kvs {
		present[kv.Key] = struct{}{}
		if k, ok := w.known[kv.Key]; ok {
			if k.rev == kv.ModRevision {
				continue
			}
			k.rev = kv.ModRevision
		} else {
			w.known[kv.Key] = &knownKey{key: kv.Key, rev: kv.ModRevision}
		}
		if !w.send(ctx, Event{Type: EventUpsert, Key: kv.Key, Value: kv.Value, Revision: kv.ModRevision}) {
			return 0, ctx.Err()
		}
	}
	var gone []string
	for key := range w.known {
		if _, ok := present[key]; !ok {
			gone = append(gone, key)
		}
	}
	slices.Sort(gone)
	for _, key := range gone {
		delete(w.known, key)
		if !w.send(ctx, Event{Type: EventDelete, Key: key, Revision: got.rev}) {
			return 0, ctx.Err()
		}
	}
	if !w.send(ctx, Event{Type: EventSynced, Revision: got.rev}) {
		return 0, ctx.Err()
	}
	return got.rev, nil
}

// follow streams the changes after rev until the stream ends, and says why it ended.
func (w *watcher) follow(ctx context.Context, rev int64) (string, error) {
	// WithRequireLeader: a member cut off from its cluster ends the stream (ErrNoLeader) instead of
	// silently delivering nothing; the relist then goes to a member that has a leader.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	m := w.c.metrics
	wch := w.c.cli.Watch(wctx, w.c.fullKey(w.prefix), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for resp := range wch {
		if resp.CompactRevision != 0 {
			return resyncCompacted, fmt.Errorf("revision %d compacted (compact revision %d)", rev+1, resp.CompactRevision)
		}
		if err := resp.Err(); err != nil {
			return resyncBroken, err
		}
		if resp.Canceled {
			return resyncBroken, errors.New("watch cancelled by etcd")
		}
		received := time.Now()
		batch := w.batch[:0]
		for _, ev := range resp.Events {
			if e, ok := w.apply(ev); ok {
				batch = append(batch, e)
			}
		}
		for i := range batch {
			batch[i].EndOfRevision = i == len(batch)-1 || batch[i+1].Revision != batch[i].Revision
			if !w.send(ctx, batch[i]) {
				return resyncBroken, ctx.Err()
			}
		}
		clear(batch)
		w.batch = batch[:0]
		// Once per response, not per event: the lag of its last event is the response's lag.
		if len(batch) > 0 {
			m.watchDelivery.Observe(time.Since(received).Seconds())
			m.watchRevLag.Observe(float64(resp.Header.Revision - resp.Events[len(resp.Events)-1].Kv.ModRevision))
		}
	}
	return resyncBroken, errors.New("watch channel closed")
}

// apply updates the known state with one etcd event and returns the event for the consumer, or
// false when the consumer already has this state.
func (w *watcher) apply(ev *clientv3.Event) (Event, bool) {
	// Every key of the watch starts with the client prefix; indexing the map with the converted
	// bytes does not allocate.
	rel := ev.Kv.Key[len(w.c.cfg.Prefix):]
	k, known := w.known[string(rel)]
	switch ev.Type {
	case mvccpb.PUT:
		if !known {
			k = &knownKey{key: string(rel)}
			w.known[k.key] = k
		} else if k.rev >= ev.Kv.ModRevision {
			return Event{}, false
		}
		k.rev = ev.Kv.ModRevision
		return Event{Type: EventUpsert, Key: k.key, Value: ev.Kv.Value, Revision: ev.Kv.ModRevision}, true
	case mvccpb.DELETE:
		if !known {
			return Event{}, false
		}
		delete(w.known, k.key)
		return Event{Type: EventDelete, Key: k.key, Revision: ev.Kv.ModRevision}, true
	default:
		return Event{}, false
	}
}

func (w *watcher) send(ctx context.Context, e Event) bool {
	select {
	case w.out <- e:
		return true
	case <-ctx.Done():
		return false
	}
}
