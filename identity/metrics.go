package identity

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Allocation outcomes, for palisade_identity_allocations_total.
const (
	outcomeLocal    = "local"    // served from the identities the node holds, no round trip
	outcomeExisting = "existing" // referenced an identity another node created
	outcomeNew      = "new"      // created the identity
	outcomeError    = "error"
)

type allocatorMetrics struct {
	local, existing, new, failed prometheus.Counter
	duration                     prometheus.Observer
	conflicts                    prometheus.Counter
	restored                     prometheus.Counter
	lost                         prometheus.Counter
}

func newAllocatorMetrics(reg prometheus.Registerer) (*allocatorMetrics, error) {
	allocations, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "palisade_identity_allocations_total",
		Help: "Identity allocations by outcome: local (already held), existing, new, error.",
	}, []string{"outcome"}))
	if err != nil {
		return nil, err
	}
	duration, err := register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "palisade_identity_allocation_duration_seconds",
		Help:    "Time of allocations that went to etcd, retries included.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	}))
	if err != nil {
		return nil, err
	}
	conflicts, err := register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "palisade_identity_allocation_conflicts_total",
		Help: "Allocation transactions whose conditions failed (a lost race or a taken number) and were retried.",
	}))
	if err != nil {
		return nil, err
	}
	restored, err := register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "palisade_identity_restored_total",
		Help: "Held identities whose keys were restored after a lost lease or a vanished master key.",
	}))
	if err != nil {
		return nil, err
	}
	lost, err := register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "palisade_identity_lost_total",
		Help: "Held identities that could not be restored because other labels or another number took their place.",
	}))
	if err != nil {
		return nil, err
	}
	return &allocatorMetrics{
		local:     allocations.WithLabelValues(outcomeLocal),
		existing:  allocations.WithLabelValues(outcomeExisting),
		new:       allocations.WithLabelValues(outcomeNew),
		failed:    allocations.WithLabelValues(outcomeError),
		duration:  duration,
		conflicts: conflicts,
		restored:  restored,
		lost:      lost,
	}, nil
}

type gcMetrics struct {
	roundsOK, roundsFailed        prometheus.Counter
	deletedIDs, deletedOrphanVals prometheus.Counter
	races                         prometheus.Counter
	marked                        prometheus.Gauge
}

func newGCMetrics(reg prometheus.Registerer) (*gcMetrics, error) {
	rounds, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "palisade_identity_gc_rounds_total",
		Help: "Identity garbage collection rounds by result (ok, error).",
	}, []string{"result"}))
	if err != nil {
		return nil, err
	}
	deleted, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "palisade_identity_gc_deleted_total",
		Help: "Keys deleted by identity garbage collection: identity (master and value key), orphan_value.",
	}, []string{"kind"}))
	if err != nil {
		return nil, err
	}
	races, err := register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "palisade_identity_gc_races_total",
		Help: "Marked identities not deleted because an allocation touched them first.",
	}))
	if err != nil {
		return nil, err
	}
	marked, err := register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "palisade_identity_gc_marked",
		Help: "Keys marked unreferenced by the last round, to be deleted by the next one if unchanged.",
	}))
	if err != nil {
		return nil, err
	}
	return &gcMetrics{
		roundsOK:          rounds.WithLabelValues("ok"),
		roundsFailed:      rounds.WithLabelValues("error"),
		deletedIDs:        deleted.WithLabelValues("identity"),
		deletedOrphanVals: deleted.WithLabelValues("orphan_value"),
		races:             races,
		marked:            marked,
	}, nil
}

// register registers c on reg, or returns the collector already registered under the same name
// so that several allocators (or GCs) sharing a registry add up into one series. A nil reg keeps c
// unregistered.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	var zero C
	return zero, err
}
