package identity

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/palisade-mesh/palisade/kvstore"
)

// The allocator's background loop keeps etcd in line with what the node holds:
//   - when the node's lease session expires (etcd unreachable for longer than LeaseTTL), every
//     reference key is gone: it starts a new session and restores them;
//   - when the master key of a held identity vanishes (or changes), it restores it with
//     create-only conditions, never overwriting another label set; when the number or the labels
//     were taken meanwhile, the identity is lost and OnLost tells its users;
//   - reference deletions that failed during Release are retried.

func (a *Allocator) markDirty(id ID, lbls Labels) {
	a.mu.Lock()
	if lbls == nil {
		if h, ok := a.held[id]; ok {
			lbls = h.labels
		}
	}
	a.dirty[id] = lbls
	a.mu.Unlock()
	a.wakeUp()
}

func (a *Allocator) wakeUp() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// sessionLost ends a session one of whose leases is gone. Orphaning (not revoking) is right: the
// lease is already gone, and its other leases' keys are re-created in the next session anyway. The
// loop sees the session end and replaces it.
func (a *Allocator) sessionLost(sess *kvstore.Session) {
	sess.Orphan()
	a.wakeUp()
}

// onCacheChange runs on the cache's goroutine: it only marks work for the loop.
func (a *Allocator) onCacheChange(ch Change) {
	var ids []ID
	a.mu.Lock()
	for _, ident := range ch.Deleted {
		if _, ok := a.held[ident.ID]; ok {
			ids = append(ids, ident.ID)
		}
	}
	for _, ident := range ch.Added {
		if h, ok := a.held[ident.ID]; ok && !h.labels.Equal(ident.Labels) {
			ids = append(ids, ident.ID)
		}
	}
	a.mu.Unlock()
	for _, id := range ids {
		a.markDirty(id, nil)
	}
}

func (a *Allocator) run(ctx context.Context) {
	retry := backoff.NewExponentialBackOff()
	retry.InitialInterval = 100 * time.Millisecond
	retry.MaxInterval = 5 * time.Second
	var retryC <-chan time.Time
	for {
		a.sessMu.Lock()
		sess := a.sess
		a.sessMu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-sess.Done():
			if !a.renewSession(ctx, sess) {
				return
			}
		case <-a.wake:
		case <-retryC:
		}
		retryC = nil
		if a.reconcileDirtyInSession(ctx) {
			retry.Reset()
		} else if ctx.Err() == nil {
			retryC = time.After(retry.NextBackOff())
		}
	}
}

// reconcileDirtyInSession reconciles until done or until the current session ends, so that a
// session lost meanwhile is replaced at once rather than after every restoration timed out on it.
func (a *Allocator) reconcileDirtyInSession(ctx context.Context) bool {
	a.sessMu.Lock()
	sess := a.sess
	a.sessMu.Unlock()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done():
			cancel()
		case <-rctx.Done():
		}
	}()
	return a.reconcileDirty(rctx)
}

// renewSession replaces an expired session and marks every held identity for restoration. It
// returns false when ctx ended first.
func (a *Allocator) renewSession(ctx context.Context, old *kvstore.Session) bool {
	a.log.Warn("lease session expired: the node's identity references are gone; restoring them")
	sess, err := backoff.Retry(ctx, func() (*kvstore.Session, error) {
		s, err := a.kv.NewSession(ctx, a.cfg.LeaseTTL)
		if errors.Is(err, kvstore.ErrClosed) {
			return nil, backoff.Permanent(err)
		}
		return s, err
	}, backoff.WithMaxElapsedTime(0))
	if err != nil {
		return false
	}
	a.sessMu.Lock()
	a.sess = sess
	a.sessMu.Unlock()
	old.Orphan()
	a.mu.Lock()
	for id, h := range a.held {
		a.dirty[id] = h.labels
	}
	a.mu.Unlock()
	return true
}

// reconcileDirty works through the dirty identities and reports whether all of them succeeded;
// failures stay dirty.
func (a *Allocator) reconcileDirty(ctx context.Context) bool {
	a.mu.Lock()
	work := a.dirty
	a.dirty = make(map[ID]Labels)
	a.mu.Unlock()
	ok := true
	for id, lbls := range work {
		err := ctx.Err()
		if err == nil {
			err = a.reconcileOne(ctx, id, lbls)
		}
		if err == nil {
			continue
		}
		if ctx.Err() == nil {
			a.log.Warn("reconciling identity reference failed; retrying", "identity", id, "error", err)
		}
		a.mu.Lock()
		if _, again := a.dirty[id]; !again {
			a.dirty[id] = lbls
		}
		a.mu.Unlock()
		ok = false
	}
	return ok
}

func (a *Allocator) reconcileOne(ctx context.Context, id ID, lbls Labels) error {
	if lbls != nil {
		unlock, err := a.locks.lock(ctx, lbls.Digest())
		if err != nil {
			return err
		}
		defer unlock()
	}
	a.mu.Lock()
	h, held := a.held[id]
	a.mu.Unlock()
	if !held {
		_, err := a.kv.Delete(ctx, refKey(id, a.cfg.Node))
		return err
	}
	// Bound one restoration so that a long etcd outage does not stall the other identities.
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := a.reconcile(rctx, newPlanner(h.labels, a.rng, id))
	switch {
	case errors.Is(err, errLost):
		a.lose(ctx, id, h)
		return nil
	case err != nil:
		return err
	}
	if h.sess == res.sess {
		// The reference was counted twice on this session (once per write of the same key).
		res.sess.Release(h.lease)
	}
	a.mu.Lock()
	h.sess, h.lease = res.sess, res.lease
	a.mu.Unlock()
	a.metrics.restored.Inc()
	return nil
}

// lose forgets an identity that another label set (or another number for the labels) took over.
func (a *Allocator) lose(ctx context.Context, id ID, h *holding) {
	a.mu.Lock()
	delete(a.held, id)
	delete(a.byDigest, h.digest)
	a.mu.Unlock()
	a.releaseLease(h)
	if _, err := a.kv.Delete(ctx, refKey(id, a.cfg.Node)); err != nil {
		a.markDirty(id, h.labels)
	}
	a.metrics.lost.Inc()
	a.log.Error("identity held by this node was taken over while its keys were gone; its users must allocate again",
		"identity", id, "labels", h.labels.String(), "users", h.users)
	if a.cfg.OnLost != nil {
		a.cfg.OnLost(Identity{ID: id, Labels: h.labels})
	}
}
