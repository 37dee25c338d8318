package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/palisade-mesh/palisade/kvstore"
)

// ErrExhausted is returned (wrapped, naming the range and the count) when every identity of the
// allocator's range is in use.
var ErrExhausted = errors.New("identity space exhausted")

// ErrNotHeld is returned by Release for an identity this allocator does not hold.
var ErrNotHeld = errors.New("identity not held by this allocator")

// AllocatorConfig configures an Allocator. Zero values take the defaults named on each field.
type AllocatorConfig struct {
	// Node names this allocator's references (identities/refs/<id>/<node>). Required: unique per
	// node of the cluster, no '/'.
	Node string
	// Cluster is the cluster's configuration. NewAllocator records it in etcd if the cluster has
	// none and refuses to start when the stored one differs in name, ID or layout. Required.
	Cluster ClusterConfig
	// MinLocal and MaxLocal narrow the local parts handed out (tests, or reserving part of the
	// space). Default: the whole range, MinLocalID..Layout.MaxLocalID().
	MinLocal, MaxLocal uint32
	// LeaseTTL is how long the node's references outlive a lost connection to etcd. Shorter frees
	// a dead node's identities sooner; longer rides out longer etcd outages without having to
	// restore them. Default 30s.
	LeaseTTL time.Duration
	// Cache serves lookups. Default: the allocator starts its own and closes it in Close.
	Cache *Cache
	// OnLost is called (from the allocator's background goroutine) when an identity this node
	// holds could not be kept: its keys vanished, typically after the node lost its lease for
	// longer than LeaseTTL, and meanwhile another label set took the number or the labels got
	// another number. The allocator forgets the identity; its users must allocate the labels again
	// and must not Release it. Default: log only.
	OnLost func(Identity)
	// MaxQuickAttempts is how many transactions one allocation makes back to back while each
	// failure teaches it something new (a lost race, a taken number) before it backs off.
	// Default 16.
	MaxQuickAttempts int
	// Registerer receives the allocator's metrics. Nil: kept but not registered. Allocators
	// sharing a Registerer add up into the same series.
	Registerer prometheus.Registerer
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

const (
	defaultLeaseTTL         = 30 * time.Second
	defaultMaxQuickAttempts = 16
)

func (c AllocatorConfig) withDefaults() AllocatorConfig {
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = defaultLeaseTTL
	}
	if c.MaxQuickAttempts <= 0 {
		c.MaxQuickAttempts = defaultMaxQuickAttempts
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func validateNode(node string) error {
	if node == "" || strings.ContainsAny(node, "/ \t\n") {
		return fmt.Errorf("node name %q: must be non-empty without '/' or whitespace", node)
	}
	return nil
}

// holding is an identity this node holds: its reference key exists (or is being restored).
type holding struct {
	labels Labels
	digest string
	users  int
	sess   *kvstore.Session // session whose lease carries the reference key
	lease  kvstore.LeaseID
}

// Allocator hands out cluster-scoped identities for label sets, agreeing with every other node's
// allocator through etcd. See doc.go for the algorithm. It is safe for concurrent use.
type Allocator struct {
	kv       *kvstore.Client
	cfg      AllocatorConfig
	rng      idRange
	cache    *Cache
	ownCache bool
	log      *slog.Logger
	metrics  *allocatorMetrics
	locks    digestLocks

	cancel context.CancelFunc
	done   chan struct{}

	sessMu sync.Mutex
	sess   *kvstore.Session

	mu       sync.Mutex
	held     map[ID]*holding
	byDigest map[string]ID
	// dirty holds identities whose keys the background loop must reconcile: held ones are
	// restored, others have their reference key deleted.
	dirty   map[ID]Labels
	wake    chan struct{}
	closing bool
}

// NewAllocator checks the cluster configuration, starts the node's lease session and waits until
// the identity cache has listed the cluster's identities (or ctx ends).
func NewAllocator(ctx context.Context, kv *kvstore.Client, cfg AllocatorConfig) (*Allocator, error) {
	cfg = cfg.withDefaults()
	if err := validateNode(cfg.Node); err != nil {
		return nil, fmt.Errorf("identity allocator: %w", err)
	}
	m, err := newAllocatorMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("identity allocator on %s: metrics: %w", cfg.Node, err)
	}
	stored, err := EnsureClusterConfig(ctx, kv, cfg.Cluster)
	if err != nil {
		return nil, fmt.Errorf("identity allocator on %s: %w", cfg.Node, err)
	}
	layout, err := stored.Layout()
	if err != nil {
		return nil, fmt.Errorf("identity allocator on %s: %w", cfg.Node, err)
	}
	rng, err := newIDRange(layout, stored.ID, cfg.MinLocal, cfg.MaxLocal)
	if err != nil {
		return nil, fmt.Errorf("identity allocator on %s: %w", cfg.Node, err)
	}
	sess, err := kv.NewSession(ctx, cfg.LeaseTTL)
	if err != nil {
		return nil, fmt.Errorf("identity allocator on %s: start lease session: %w", cfg.Node, err)
	}
	a := &Allocator{
		kv:       kv,
		cfg:      cfg,
		rng:      rng,
		cache:    cfg.Cache,
		log:      cfg.Logger.With("component", "identity-allocator", "node", cfg.Node),
		metrics:  m,
		done:     make(chan struct{}),
		sess:     sess,
		held:     make(map[ID]*holding),
		byDigest: make(map[string]ID),
		dirty:    make(map[ID]Labels),
		wake:     make(chan struct{}, 1),
	}
	if a.cache == nil {
		a.cache = NewCache(kv, CacheConfig{Logger: cfg.Logger})
		a.ownCache = true
	}
	if err := a.cache.WaitSynced(ctx); err != nil {
		a.closeResources(true)
		return nil, fmt.Errorf("identity allocator on %s: wait for identity cache: %w", cfg.Node, err)
	}
	// Watch for master keys of held identities vanishing, to restore them.
	unsubscribe := a.cache.Subscribe(a.onCacheChange)
	runCtx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go func() {
		defer close(a.done)
		defer unsubscribe()
		a.run(runCtx)
	}()
	return a, nil
}

// Cache returns the identity cache the allocator uses, for lookups and subscriptions.
func (a *Allocator) Cache() *Cache { return a.cache }

// Range describes the identities this allocator hands out.
func (a *Allocator) Range() string { return a.rng.String() }

// Close releases every identity this node holds (its lease is revoked, so its references vanish
// now), stops the background work and, if the allocator started it, the cache.
func (a *Allocator) Close() error { return a.close(true) }

// CloseKeepReferences stops the allocator like Close but leaves the node's references in place
// until its lease expires (LeaseTTL), as a crash would. For a restart: the next process allocating
// the same labels within the TTL takes the references over, and garbage collection never sees the
// identities unreferenced.
func (a *Allocator) CloseKeepReferences() error { return a.close(false) }

func (a *Allocator) close(revoke bool) error {
	a.mu.Lock()
	if a.closing {
		a.mu.Unlock()
		return nil
	}
	a.closing = true
	a.mu.Unlock()
	if a.cancel != nil {
		a.cancel()
		<-a.done
	}
	return a.closeResources(revoke)
}

func (a *Allocator) closeResources(revoke bool) error {
	a.sessMu.Lock()
	sess := a.sess
	a.sessMu.Unlock()
	var err error
	if revoke {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if cerr := sess.Close(ctx); cerr != nil {
			err = fmt.Errorf("identity allocator on %s: revoke references: %w", a.cfg.Node, cerr)
		}
	} else {
		sess.Orphan()
	}
	if a.ownCache {
		a.cache.Close()
	}
	return err
}

// Lookup returns the labels of id: reserved identities, identities this node holds, then the cache.
func (a *Allocator) Lookup(id ID) (Labels, bool) {
	a.mu.Lock()
	h, ok := a.held[id]
	a.mu.Unlock()
	if ok {
		return h.labels, true
	}
	return a.cache.Lookup(id)
}

// LookupByLabels returns the identity of a label set without allocating it.
func (a *Allocator) LookupByLabels(lbls Labels) (ID, bool) {
	if id, ok := reservedID(lbls); ok {
		return id, true
	}
	d := lbls.Digest()
	a.mu.Lock()
	id, ok := a.byDigest[d]
	a.mu.Unlock()
	if ok {
		return id, true
	}
	return a.cache.lookupDigest(d)
}

// Allocate returns the identity of lbls, allocating it in etcd if the cluster has none, and adds a
// use of it by this node: every Allocate must be matched by a Release. isNew is true when this call
// created the identity. Reserved label sets (a single reserved:<name> label) return the reserved
// identity and are never stored.
func (a *Allocator) Allocate(ctx context.Context, lbls Labels) (id ID, isNew bool, err error) {
	if err := validateAllocatable(lbls); err != nil {
		return 0, false, fmt.Errorf("allocate identity for %s: %w", lbls, err)
	}
	if id, ok := reservedID(lbls); ok {
		return id, false, nil
	}
	d := lbls.Digest()
	if id, ok := a.addUse(d); ok {
		a.metrics.local.Inc()
		return id, false, nil
	}
	unlock, err := a.locks.lock(ctx, d)
	if err != nil {
		a.metrics.failed.Inc()
		return 0, false, fmt.Errorf("allocate identity for %s: %w", lbls, err)
	}
	defer unlock()
	if id, ok := a.addUse(d); ok {
		a.metrics.local.Inc()
		return id, false, nil
	}
	start := time.Now()
	res, err := a.reconcile(ctx, newPlanner(lbls, a.rng, 0))
	if err != nil {
		a.metrics.failed.Inc()
		return 0, false, fmt.Errorf("allocate identity for %s: %w", lbls, err)
	}
	a.metrics.duration.Observe(time.Since(start).Seconds())
	if res.isNew {
		a.metrics.new.Inc()
	} else {
		a.metrics.existing.Inc()
	}
	a.mu.Lock()
	a.held[res.id] = &holding{labels: lbls, digest: d, users: 1, sess: res.sess, lease: res.lease}
	a.byDigest[d] = res.id
	a.mu.Unlock()
	a.sessMu.Lock()
	replaced := a.sess != res.sess
	a.sessMu.Unlock()
	if replaced {
		// The session expired between our transaction and now, after the background loop marked
		// the held identities for restoration: restore this one too.
		a.markDirty(res.id, lbls)
	}
	return res.id, res.isNew, nil
}

// addUse counts one more use of a held identity: the fast path, with no round trip to etcd.
func (a *Allocator) addUse(digest string) (ID, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id, ok := a.byDigest[digest]
	if !ok {
		return 0, false
	}
	a.held[id].users++
	return id, true
}

// validateAllocatable refuses label sets that cannot have a cluster-scoped identity.
func validateAllocatable(lbls Labels) error {
	if len(lbls) == 0 {
		return errors.New("empty label set")
	}
	for i, l := range lbls {
		if err := l.Validate(); err != nil {
			return fmt.Errorf("label %s: %w", l, err)
		}
		if l.Source == SourceAny {
			return fmt.Errorf("label %s: source %q is only valid in selectors", l, SourceAny)
		}
		if i > 0 {
			switch c := compareLabels(lbls[i-1], l); {
			case lbls[i-1].Source == l.Source && lbls[i-1].Key == l.Key:
				return fmt.Errorf("labels %s and %s: one key twice", lbls[i-1], l)
			case c > 0:
				return fmt.Errorf("labels not in canonical order at %s (build them with NewLabels or ParseLabels)", l)
			}
		}
	}
	for _, l := range lbls {
		switch l.Source {
		case SourceReserved:
			if _, ok := reservedID(lbls); !ok {
				return fmt.Errorf("reserved label %s: reserved identities have exactly one reserved label", l)
			}
		case SourceCIDR:
			return fmt.Errorf("cidr label %s: CIDR identities are node-local, not allocated in etcd", l)
		}
	}
	return nil
}

// Release drops one use of id by this node. When the last use goes, the node's reference key is
// deleted; the identity itself stays until garbage collection finds nobody referencing it.
// Releasing a reserved identity does nothing. released is true when the reference was dropped.
func (a *Allocator) Release(ctx context.Context, id ID) (released bool, err error) {
	if _, ok := ReservedLabels(id); ok {
		return false, nil
	}
	a.mu.Lock()
	h, ok := a.held[id]
	a.mu.Unlock()
	if !ok {
		return false, fmt.Errorf("release identity %d: %w", id, ErrNotHeld)
	}
	unlock, err := a.locks.lock(ctx, h.digest)
	if err != nil {
		return false, fmt.Errorf("release identity %d: %w", id, err)
	}
	defer unlock()
	a.mu.Lock()
	h, ok = a.held[id]
	if !ok {
		a.mu.Unlock()
		return false, fmt.Errorf("release identity %d: %w", id, ErrNotHeld)
	}
	h.users--
	if h.users > 0 {
		a.mu.Unlock()
		return false, nil
	}
	delete(a.held, id)
	delete(a.byDigest, h.digest)
	a.mu.Unlock()
	a.releaseLease(h)
	_, err = backoff.Retry(ctx, func() (bool, error) {
		deleted, err := a.kv.Delete(ctx, refKey(id, a.cfg.Node))
		if errors.Is(err, kvstore.ErrClosed) {
			return false, backoff.Permanent(err)
		}
		return deleted, err
	}, backoff.WithBackOff(newBackOff()), backoff.WithMaxElapsedTime(0))
	if err != nil {
		// The identity is released locally; the background loop deletes the reference later
		// (until then it merely delays garbage collection).
		a.markDirty(id, h.labels)
		return true, fmt.Errorf("release identity %d: delete reference (retrying in background): %w", id, err)
	}
	return true, nil
}

// newBackOff paces retries of etcd operations: fast at first (a lost race is over in a round
// trip), up to a second (etcd restarting or electing a leader).
func newBackOff() *backoff.ExponentialBackOff {
	return &backoff.ExponentialBackOff{
		InitialInterval:     2 * time.Millisecond,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         time.Second,
	}
}

// ReleaseLabels is Release for the identity this node holds for lbls.
func (a *Allocator) ReleaseLabels(ctx context.Context, lbls Labels) (released bool, err error) {
	if id, ok := reservedID(lbls); ok {
		return a.Release(ctx, id)
	}
	a.mu.Lock()
	id, ok := a.byDigest[lbls.Digest()]
	a.mu.Unlock()
	if !ok {
		return false, fmt.Errorf("release identity of %s: %w", lbls, ErrNotHeld)
	}
	return a.Release(ctx, id)
}

func (a *Allocator) releaseLease(h *holding) {
	a.sessMu.Lock()
	defer a.sessMu.Unlock()
	if h.sess != nil && h.sess == a.sess && h.lease != kvstore.NoLease {
		a.sess.Release(h.lease)
	}
}

// Held returns the identities this node holds, with their number of uses.
func (a *Allocator) Held() map[ID]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[ID]int, len(a.held))
	for id, h := range a.held {
		out[id] = h.users
	}
	return out
}

// reconciled is the outcome of a successful reconcile.
type reconciled struct {
	id    ID
	isNew bool
	sess  *kvstore.Session
	lease kvstore.LeaseID
}

// errLost reports that a held identity could not be kept (planLost).
var errLost = errors.New("identity owned by other labels now")

// reconcile runs transactions until the labels' identity exists with this node's reference, or it
// fails for good (exhaustion, a lost identity, ctx). Failed transactions are retried at once while
// each teaches something new, then with exponential backoff, which also covers etcd being away.
func (a *Allocator) reconcile(ctx context.Context, p *planner) (reconciled, error) {
	var (
		obs   *observation
		tried = make(map[ID]bool) // numbers found taken in this call, maybe before the cache knows
		// ambiguous holds identities whose transaction failed without an answer: it may have
		// written our reference, to be removed if we end up not holding them.
		ambiguous = make(map[ID]bool)
	)
	hint, _ := a.cache.lookupDigest(p.digest)
	attempt := func() (reconciled, error) {
		for range a.cfg.MaxQuickAttempts {
			var candidate ID
			pl := p.next(obs, hint, 0)
			if pl.kind == planPick {
				var err error
				if candidate, err = a.pick(ctx, tried); err != nil {
					return reconciled{}, backoff.Permanent(err)
				}
				pl = p.next(obs, hint, candidate)
			}
			if pl.kind == planLost {
				return reconciled{}, backoff.Permanent(errLost)
			}
			res, ok, err := a.try(ctx, p, pl, &obs)
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, kvstore.ErrClosed) {
					// Cancelled, or the allocator or its client closed: retrying cannot help.
					return reconciled{}, backoff.Permanent(err)
				}
				ambiguous[pl.id] = true
				obs = nil
				return reconciled{}, err
			}
			if ok {
				delete(ambiguous, res.id)
				return res, nil
			}
			if pl.kind == planCreate && obs.master.present {
				tried[pl.id] = true
			}
			hint = 0
		}
		return reconciled{}, errors.New("lost every race; backing off")
	}
	res, err := backoff.Retry(ctx, attempt,
		backoff.WithBackOff(newBackOff()), backoff.WithMaxElapsedTime(0))
	delete(ambiguous, res.id)
	a.dropAmbiguous(ambiguous, p.lbls)
	if err != nil {
		return reconciled{}, err
	}
	return res, nil
}

// try runs one planned transaction. ok is false when its conditions failed; obs then holds what
// the Else branch read.
func (a *Allocator) try(ctx context.Context, p *planner, pl plan, obs **observation) (reconciled, bool, error) {
	sess, lease, err := a.acquireLease(ctx)
	if err != nil {
		return reconciled{}, false, err
	}
	then, els := p.ops(pl.id, a.cfg.Node, lease)
	res, err := a.kv.Txn(ctx, pl.ifs, then, els)
	if err != nil || !res.Succeeded {
		sess.Release(lease)
	}
	if err != nil {
		if errors.Is(err, kvstore.ErrLeaseNotFound) {
			// The lease is gone, and with it some of the node's references: end the session now
			// rather than when its keep-alive notices, so that the background loop replaces it
			// and restores them.
			a.sessionLost(sess)
		}
		return reconciled{}, false, err
	}
	if !res.Succeeded {
		a.metrics.conflicts.Inc()
		o := observe(res.Gets, p.digest, pl.id)
		*obs = &o
		return reconciled{}, false, nil
	}
	return reconciled{id: pl.id, isNew: pl.kind == planCreate, sess: sess, lease: lease}, true, nil
}

// pick chooses a number for a new identity that neither the cache nor this call has seen taken.
// When none is left it asks etcd, whose answer is authoritative: the cache may lag.
func (a *Allocator) pick(ctx context.Context, tried map[ID]bool) (ID, error) {
	taken := func(id ID) bool {
		if tried[id] || a.cache.has(id) {
			return true
		}
		a.mu.Lock()
		_, held := a.held[id]
		a.mu.Unlock()
		return held
	}
	if id, ok := pickFree(a.rng, taken); ok {
		return id, nil
	}
	stored, _, err := a.kv.List(ctx, MasterPrefix)
	if err != nil {
		return 0, fmt.Errorf("list identities to find a free one: %w", err)
	}
	used := make(map[ID]bool, len(stored))
	for _, kv := range stored {
		if id, err := parseMasterKey(kv.Key); err == nil && a.rng.contains(id) {
			used[id] = true
		}
	}
	clear(tried)
	if id, ok := pickFree(a.rng, func(id ID) bool { return used[id] }); ok {
		return id, nil
	}
	return 0, fmt.Errorf("%w: all %d identities %s are in use", ErrExhausted, len(used), a.rng)
}

// dropAmbiguous deletes references an unanswered transaction may have written for identities this
// node does not hold.
func (a *Allocator) dropAmbiguous(ids map[ID]bool, lbls Labels) {
	for id := range ids {
		a.mu.Lock()
		_, held := a.held[id]
		a.mu.Unlock()
		if !held {
			a.markDirty(id, lbls)
		}
	}
}

func (a *Allocator) acquireLease(ctx context.Context) (*kvstore.Session, kvstore.LeaseID, error) {
	a.sessMu.Lock()
	sess := a.sess
	a.sessMu.Unlock()
	lease, err := sess.Acquire(ctx)
	if err == nil {
		return sess, lease, nil
	}
	if a.isClosing() {
		return nil, 0, fmt.Errorf("lease for reference: %w", kvstore.ErrClosed)
	}
	// The session ended (a lease expired or was found gone); the background loop is replacing it.
	a.wakeUp()
	return nil, 0, fmt.Errorf("lease for reference: waiting for a new session: %v", err)
}

func (a *Allocator) isClosing() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.closing
}

// digestLocks serializes work on one label set within this allocator (an allocation and a release
// of the same labels must not interleave) while different label sets proceed in parallel.
type digestLocks struct {
	mu sync.Mutex
	m  map[string]*digestLock
}

type digestLock struct {
	sem  chan struct{}
	refs int
}

func (l *digestLocks) lock(ctx context.Context, digest string) (unlock func(), err error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[string]*digestLock)
	}
	dl, ok := l.m[digest]
	if !ok {
		dl = &digestLock{sem: make(chan struct{}, 1)}
		l.m[digest] = dl
	}
	dl.refs++
	l.mu.Unlock()
	put := func() {
		l.mu.Lock()
		dl.refs--
		if dl.refs == 0 {
			delete(l.m, digest)
		}
		l.mu.Unlock()
	}
	select {
	case dl.sem <- struct{}{}:
		return func() { <-dl.sem; put() }, nil
	case <-ctx.Done():
		put()
		return nil, ctx.Err()
	}
}
