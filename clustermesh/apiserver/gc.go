package apiserver

import (
	"context"
	"fmt"
	"time"

	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/kvstore"
)

// Pause after a failed election term (etcd unreachable), so a broken etcd is not hammered.
const electionRetry = 2 * time.Second

// runGCElection takes part in the election of the replica that runs identity garbage collection,
// until ctx ends. The leader holds GCLeaderKey on its session's lease: stepping down (Close)
// revokes the lease, and a replica that dies loses it after ElectionTTL, so another takes over.
// Running two collectors at once would be safe (identity.GC's deletions are conditional), only
// wasteful; the election keeps it to one.
func (s *Server) runGCElection(ctx context.Context) {
	for ctx.Err() == nil {
		if err := s.electionTerm(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("identity GC election", "error", err)
			select {
			case <-ctx.Done():
			case <-time.After(electionRetry):
			}
		}
	}
}

// electionTerm runs one session: it waits to become leader and then leads, until the session or
// ctx ends.
func (s *Server) electionTerm(ctx context.Context) error {
	sess, err := s.kv.NewSession(ctx, s.opts.ElectionTTL)
	if err != nil {
		return fmt.Errorf("new session: %w", err)
	}
	defer func() {
		// Revoking the lease deletes the leader key at once, so a successor need not wait for
		// the TTL.
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := sess.Close(cctx); err != nil {
			s.log.Debug("identity GC election: closing session", "error", err)
		}
	}()
	lease, err := sess.Acquire(ctx)
	if err != nil {
		return err
	}
	for {
		created, err := s.kv.CreateOnly(ctx, GCLeaderKey, []byte(s.opts.ReplicaName), lease)
		if err != nil {
			return fmt.Errorf("claim %s: %w", GCLeaderKey, err)
		}
		if created {
			return s.lead(ctx, sess)
		}
		if err := s.waitLeaderGone(ctx, sess); err != nil {
			return err
		}
	}
}

// waitLeaderGone returns when GCLeaderKey does not exist (any more), or with an error when the
// session or ctx ends first.
func (s *Server) waitLeaderGone(ctx context.Context, sess *kvstore.Session) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := s.kv.Watch(wctx, GCLeaderKey)
	present := false
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return ctx.Err()
			}
			switch {
			case ev.Type == kvstore.EventSynced && !present:
				return nil
			case ev.Key != GCLeaderKey:
			case ev.Type == kvstore.EventUpsert:
				present = true
			case ev.Type == kvstore.EventDelete:
				return nil
			}
		case <-sess.Done():
			return fmt.Errorf("session ended while waiting for leadership: %w", sess.Err())
		}
	}
}

// lead runs the garbage collector until the session (the leadership) or ctx ends.
func (s *Server) lead(ctx context.Context, sess *kvstore.Session) error {
	gctx, cancel := context.WithCancel(ctx)
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		select {
		case <-sess.Done():
			cancel()
		case <-gctx.Done():
		}
	}()
	defer func() {
		cancel()
		<-watcherDone
	}()
	s.gcLeader.Store(true)
	s.metrics.gcLeader.Set(1)
	defer func() {
		s.gcLeader.Store(false)
		s.metrics.gcLeader.Set(0)
	}()
	s.log.Info("elected to run identity garbage collection", "replica", s.opts.ReplicaName, "interval", s.opts.GC.Interval)
	if err := identity.RunGC(gctx, s.kv, s.opts.GC); err != nil {
		return fmt.Errorf("identity gc: %w", err)
	}
	if err := sess.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("lost identity GC leadership: %w", err)
	}
	s.log.Info("stepped down from identity garbage collection", "replica", s.opts.ReplicaName)
	return nil
}
