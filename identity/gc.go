package identity

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/palisade-mesh/palisade/kvstore"
)

// GCConfig configures identity garbage collection. Zero values take the defaults named on each
// field.
type GCConfig struct {
	// Interval between rounds. An identity nobody references is deleted one to two intervals after
	// its last reference went: shorter reclaims numbers sooner under churn, longer gives a node
	// that lost its lease more time to restore its references. Default 1m.
	Interval time.Duration
	// RateLimit bounds deletions per second, so that reclaiming many identities at once (a node
	// with thousands of them died) does not flood etcd and every watcher. Default 100.
	RateLimit float64
	// Burst is how many deletions may go at once within the rate limit. Default 10.
	Burst int
	// Registerer receives the collector's metrics. Nil: kept but not registered.
	Registerer prometheus.Registerer
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

const (
	defaultGCInterval  = time.Minute
	defaultGCRateLimit = 100
	defaultGCBurst     = 10
)

func (c GCConfig) withDefaults() GCConfig {
	if c.Interval <= 0 {
		c.Interval = defaultGCInterval
	}
	if c.RateLimit <= 0 {
		c.RateLimit = defaultGCRateLimit
	}
	if c.Burst <= 0 {
		c.Burst = defaultGCBurst
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// GCStats counts what one round did.
type GCStats struct {
	Identities   int // master keys seen
	Referenced   int // identities with at least one reference
	Marked       int // unreferenced keys marked this round (deleted next round if unchanged)
	Deleted      int // identities deleted (master key, and its value key when consistent)
	OrphanValues int // value keys deleted whose identity was gone or belonged to other labels
	Changed      int // marked keys that changed before deletion (an allocation got there first)
}

// GC garbage-collects the identities of a cluster in two phases: a round marks the keys nobody
// references, with their revisions; the next round deletes those still unreferenced and
// unchanged, each in a transaction that fails if an allocation touched them (see doc.go). Several
// GCs may run at once (one per mesh API server replica): they only make each other's deletions
// fail.
type GC struct {
	kv      *kvstore.Client
	cfg     GCConfig
	log     *slog.Logger
	metrics *gcMetrics
	limiter *rate.Limiter
	// marks maps a key marked in the previous round to the revisions that justified it.
	marks map[string]gcMark
}

// gcMark is a candidate deletion: the key to delete (and a companion key deleted with it) and the
// conditions under which it is still garbage.
type gcMark struct {
	revs    [2]int64 // ModRevisions of key and companion observed (0: absent)
	key     string
	other   string // companion key (value key of a master; master key of an orphan value)
	delBoth bool   // delete the companion too
}

// NewGC returns a collector; call RunOnce or Run.
func NewGC(kv *kvstore.Client, cfg GCConfig) (*GC, error) {
	cfg = cfg.withDefaults()
	m, err := newGCMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("identity gc: metrics: %w", err)
	}
	return &GC{
		kv:      kv,
		cfg:     cfg,
		log:     cfg.Logger.With("component", "identity-gc"),
		metrics: m,
		limiter: rate.NewLimiter(rate.Limit(cfg.RateLimit), cfg.Burst),
		marks:   make(map[string]gcMark),
	}, nil
}

// RunGC collects garbage every cfg.Interval until ctx ends; the mesh API server runs it.
func RunGC(ctx context.Context, kv *kvstore.Client, cfg GCConfig) error {
	gc, err := NewGC(kv, cfg)
	if err != nil {
		return err
	}
	return gc.Run(ctx)
}

// Run runs a round every Interval until ctx ends, logging failed rounds.
func (g *GC) Run(ctx context.Context) error {
	t := time.NewTicker(g.cfg.Interval)
	defer t.Stop()
	for {
		st, err := g.RunOnce(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			g.log.Warn("identity garbage collection round failed", "error", err)
		case st.Deleted+st.OrphanValues > 0:
			g.log.Info("identity garbage collection", "deleted", st.Deleted, "orphanValues", st.OrphanValues,
				"marked", st.Marked, "identities", st.Identities)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// RunOnce runs one round: it deletes what the previous round marked and is still garbage, and
// marks the new garbage.
func (g *GC) RunOnce(ctx context.Context) (GCStats, error) {
	st, err := g.round(ctx)
	g.metrics.deletedIDs.Add(float64(st.Deleted))
	g.metrics.deletedOrphanVals.Add(float64(st.OrphanValues))
	g.metrics.races.Add(float64(st.Changed))
	if err != nil {
		g.metrics.roundsFailed.Inc()
		return st, err
	}
	g.metrics.roundsOK.Inc()
	g.metrics.marked.Set(float64(st.Marked))
	return st, nil
}

func (g *GC) round(ctx context.Context) (GCStats, error) {
	var st GCStats
	// Masters are listed before references: a reference created after the masters' listing
	// rewrote its master, which the deletion's condition on the master's revision catches; one
	// created before it is in the reference listing, which happens later.
	masters, _, err := g.kv.List(ctx, MasterPrefix)
	if err != nil {
		return st, fmt.Errorf("identity gc: %w", err)
	}
	values, _, err := g.kv.List(ctx, ValuePrefix)
	if err != nil {
		return st, fmt.Errorf("identity gc: %w", err)
	}
	refs, _, err := g.kv.List(ctx, RefPrefix)
	if err != nil {
		return st, fmt.Errorf("identity gc: %w", err)
	}
	referenced := make(map[ID]bool)
	for _, kv := range refs {
		if id, _, err := parseRefKey(kv.Key); err == nil {
			referenced[id] = true
		}
	}
	valueByKey := make(map[string]kvstore.KeyValue, len(values))
	for _, kv := range values {
		valueByKey[kv.Key] = kv
	}
	masterByID := make(map[ID]kvstore.KeyValue, len(masters))
	var candidates []gcMark
	for _, m := range masters {
		id, err := parseMasterKey(m.Key)
		if err != nil {
			continue // not ours to judge
		}
		masterByID[id] = m
		st.Identities++
		if referenced[id] {
			st.Referenced++
			continue
		}
		mark := gcMark{key: m.Key, revs: [2]int64{m.ModRevision, 0}}
		if lbls, err := decodeMaster(m.Value); err == nil {
			vk := valueKey(lbls.Digest())
			if v, ok := valueByKey[vk]; ok {
				if vid, err := decodeValue(v.Value); err == nil && vid == id {
					mark.other, mark.revs[1], mark.delBoth = vk, v.ModRevision, true
				}
			}
		}
		candidates = append(candidates, mark)
	}
	for _, v := range values {
		id, err := decodeValue(v.Value)
		if err == nil && referenced[id] {
			continue // a holder is restoring its master
		}
		mk := ""
		var mrev int64
		if err == nil {
			mk = masterKey(id)
			if m, ok := masterByID[id]; ok {
				if lbls, err := decodeMaster(m.Value); err == nil && valueKey(lbls.Digest()) == v.Key {
					continue // consistent: handled with its master
				}
				mrev = m.ModRevision
			}
		}
		candidates = append(candidates, gcMark{key: v.Key, other: mk, revs: [2]int64{v.ModRevision, mrev}})
	}

	next := make(map[string]gcMark, len(candidates))
	for _, c := range candidates {
		prev, marked := g.marks[c.key]
		if !marked || prev != c {
			next[c.key] = c
			st.Marked++
			continue
		}
		if err := g.limiter.Wait(ctx); err != nil {
			return st, fmt.Errorf("identity gc: %w", err)
		}
		deleted, err := g.delete(ctx, c)
		if err != nil {
			// Keep the mark: the next round retries if nothing changed.
			next[c.key] = c
			g.log.Warn("identity gc: delete failed", "key", c.key, "error", err)
			continue
		}
		switch {
		case !deleted:
			st.Changed++
		case strings.HasPrefix(c.key, MasterPrefix):
			st.Deleted++
		default:
			st.OrphanValues++
		}
	}
	g.marks = next
	return st, nil
}

// delete removes a marked key (and its companion) if they are exactly as observed.
func (g *GC) delete(ctx context.Context, m gcMark) (bool, error) {
	ifs := []kvstore.Cmp{kvstore.ModRevisionEquals(m.key, m.revs[0])}
	ops := []kvstore.Op{kvstore.OpDelete(m.key)}
	if m.other != "" {
		ifs = append(ifs, kvstore.ModRevisionEquals(m.other, m.revs[1]))
		if m.delBoth {
			ops = append(ops, kvstore.OpDelete(m.other))
		}
	}
	res, err := g.kv.Txn(ctx, ifs, ops, nil)
	if err != nil {
		return false, err
	}
	return res.Succeeded, nil
}
