package kvstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Session is a set of leases kept alive in the background, for keys that must disappear when their
// owner does (a node's ipcache entries, identity references). It attaches at most
// Config.MaxKeysPerLease keys to one lease and grants a fresh lease when all are full.
//
// A session ends when one of its leases is lost (it expired: etcd was unreachable for longer than
// the TTL, or someone revoked it), when it is closed, or when it is orphaned. Done is closed then,
// and Acquire fails; after a loss the owner makes a new session and re-creates its keys.
type Session struct {
	c   *Client
	ttl time.Duration

	// ctx ends the keep-alives; cancelled by Close, Orphan and a lost lease.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // keep-alive goroutines

	mu     sync.Mutex
	leases []*sessionLease // in grant order; Acquire fills the oldest with room first
	ended  error           // why the session ended; nil while it runs
	done   chan struct{}
}

type sessionLease struct {
	id   LeaseID
	keys int
}

// NewSession grants a first lease of ttl and keeps it alive until the session ends.
func (c *Client) NewSession(ctx context.Context, ttl time.Duration) (*Session, error) {
	if ttl < time.Second {
		return nil, fmt.Errorf("kvstore session: ttl %s is below etcd's 1s granularity", ttl)
	}
	s := &Session{c: c, ttl: ttl, done: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(c.ctx)
	if _, err := s.grant(ctx); err != nil {
		s.cancel()
		return nil, fmt.Errorf("kvstore session: %w", err)
	}
	return s, nil
}

// TTL is the time to live of the session's leases.
func (s *Session) TTL() time.Duration { return s.ttl }

// grant adds a kept-alive lease. Callers hold s.mu, or own s exclusively.
func (s *Session) grant(ctx context.Context) (*sessionLease, error) {
	id, err := s.c.GrantLease(ctx, s.ttl)
	if err != nil {
		return nil, err
	}
	// The keep-alive stream belongs to the session's context: ending the session stops it, and the
	// lease then expires on its own unless Close revokes it.
	ch, err := s.c.cli.KeepAlive(s.ctx, clientv3.LeaseID(id))
	if err != nil {
		// Best effort: a lease nobody keeps alive expires by itself.
		rctx, cancel := context.WithTimeout(context.Background(), s.c.cfg.RequestTimeout)
		defer cancel()
		_ = s.c.RevokeLease(rctx, id)
		return nil, fmt.Errorf("keep lease %x alive: %w", id, err)
	}
	l := &sessionLease{id: id}
	s.wg.Add(1)
	if !s.c.goBackground(s.ctx, func(context.Context) { s.keepAlive(l.id, ch) }) {
		s.wg.Done()
		return nil, ErrClosed
	}
	s.leases = append(s.leases, l)
	return l, nil
}

// keepAlive drains the keep-alive responses of one lease; the channel closes when the session ends
// or the lease is gone. It runs as a client goroutine, so that Client.Close waits for it too.
func (s *Session) keepAlive(id LeaseID, ch <-chan *clientv3.LeaseKeepAliveResponse) {
	defer s.wg.Done()
	s.c.metrics.sessionLeases.Inc()
	defer s.c.metrics.sessionLeases.Dec()
	for range ch {
	}
	if s.ctx.Err() != nil {
		// Close or Orphan ended the session (end is then a no-op), or the client was closed.
		s.end(fmt.Errorf("%w: client closed", ErrClosed))
		return
	}
	s.c.metrics.sessionExpired.Inc()
	s.c.log.Warn("session lease lost: its keys are gone", "lease", fmt.Sprintf("%x", id), "ttl", s.ttl)
	s.end(fmt.Errorf("%w: lease %x lost", ErrSessionExpired, id))
}

// end marks the session ended with why and stops every keep-alive. The first reason wins.
func (s *Session) end(why error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended != nil {
		return
	}
	s.ended = why
	s.cancel()
	close(s.done)
}

// Acquire returns the lease to attach one more key to, counting that key.
func (s *Session) Acquire(ctx context.Context) (LeaseID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended != nil {
		return 0, s.ended
	}
	for _, l := range s.leases {
		if l.keys < s.c.cfg.MaxKeysPerLease {
			l.keys++
			return l.id, nil
		}
	}
	l, err := s.grant(ctx)
	if err != nil {
		return 0, fmt.Errorf("kvstore session: all %d leases hold %d keys: %w", len(s.leases), s.c.cfg.MaxKeysPerLease, err)
	}
	l.keys++
	return l.id, nil
}

// Release records that a key attached to lease was deleted, making room on that lease.
func (s *Session) Release(lease LeaseID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.leases {
		if l.id == lease && l.keys > 0 {
			l.keys--
			return
		}
	}
}

// Leases returns the session's leases in grant order.
func (s *Session) Leases() []LeaseID {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]LeaseID, len(s.leases))
	for i, l := range s.leases {
		out[i] = l.id
	}
	return out
}

// Done is closed when the session ends: a lease was lost (owners must re-create their keys in a
// new session), or Close or Orphan was called, or the client was closed.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err says why the session ended (wrapping ErrSessionExpired after a lost lease, ErrClosed after
// Close or Orphan), or nil while it runs.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended
}

// Close ends the session and revokes its leases: their keys are deleted now.
func (s *Session) Close(ctx context.Context) error {
	s.end(fmt.Errorf("%w: session closed", ErrClosed))
	s.wg.Wait()
	s.mu.Lock()
	leases := append([]*sessionLease(nil), s.leases...)
	s.mu.Unlock()
	var errs []error
	for _, l := range leases {
		if err := s.c.RevokeLease(ctx, l.id); err != nil && !errors.Is(err, ErrLeaseNotFound) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kvstore session close: %w", err)
	}
	return nil
}

// Orphan ends the session without revoking its leases: they expire after the TTL and take their
// keys with them, as when the owner crashes.
func (s *Session) Orphan() {
	s.end(fmt.Errorf("%w: session orphaned", ErrClosed))
	s.wg.Wait()
}
