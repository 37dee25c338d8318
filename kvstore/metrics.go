package kvstore

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// operation names one kind of request for the metrics' "operation" label.
type operation int

const (
	opGet operation = iota
	opList
	opPut
	opDelete
	opDeletePrefix
	opCreateOnly
	opCompareAndSwap
	opCompareAndDelete
	opTxn
	opLeaseGrant
	opLeaseKeepAlive
	opLeaseRevoke
	opStatus
	numOperations
)

var operationNames = [numOperations]string{
	opGet:              "get",
	opList:             "list",
	opPut:              "put",
	opDelete:           "delete",
	opDeletePrefix:     "delete_prefix",
	opCreateOnly:       "create_only",
	opCompareAndSwap:   "compare_and_swap",
	opCompareAndDelete: "compare_and_delete",
	opTxn:              "txn",
	opLeaseGrant:       "lease_grant",
	opLeaseKeepAlive:   "lease_keepalive",
	opLeaseRevoke:      "lease_revoke",
	opStatus:           "status",
}

// Reasons a watcher relists, for palisade_kvstore_watch_resyncs_total.
const (
	resyncCompacted = "compacted"
	resyncBroken    = "broken"
)

type opMetrics struct {
	total, errors prometheus.Counter
	duration      prometheus.Observer
}

// metrics are resolved to label children once, so that an operation pays two counter increments
// and one histogram observation.
type metrics struct {
	ops            [numOperations]opMetrics
	watchers       prometheus.Gauge
	watchDelivery  prometheus.Observer
	watchRevLag    prometheus.Observer
	watchResyncs   map[string]prometheus.Counter
	sessionLeases  prometheus.Gauge
	sessionExpired prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "palisade", "kvstore"
	total, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "operations_total",
		Help: "etcd operations issued, by operation.",
	}, []string{"operation"}))
	if err != nil {
		return nil, err
	}
	errs, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "operation_errors_total",
		Help: "etcd operations that failed, by operation.",
	}, []string{"operation"}))
	if err != nil {
		return nil, err
	}
	dur, err := register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: ns, Subsystem: sub, Name: "operation_duration_seconds",
		Help:    "Latency of etcd operations, by operation.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12), // 100µs .. ~6s
	}, []string{"operation"}))
	if err != nil {
		return nil, err
	}
	watchers, err := register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: ns, Subsystem: sub, Name: "watchers",
		Help: "Watches currently running.",
	}))
	if err != nil {
		return nil, err
	}
	delivery, err := register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: ns, Subsystem: sub, Name: "watch_delivery_seconds",
		Help:    "Watch lag in time: from a change arriving from etcd until the watcher's consumer took it.",
		Buckets: prometheus.ExponentialBuckets(0.00001, 4, 10), // 10µs .. ~2.6s
	}))
	if err != nil {
		return nil, err
	}
	revLag, err := register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: ns, Subsystem: sub, Name: "watch_revision_lag",
		Help:    "Watch lag in revisions: the store's revision minus the revision of the change delivered.",
		Buckets: []float64{0, 1, 10, 100, 1000, 10000, 100000},
	}))
	if err != nil {
		return nil, err
	}
	resyncs, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "watch_resyncs_total",
		Help: "Watch relists after the stream ended, by reason (compacted, broken).",
	}, []string{"reason"}))
	if err != nil {
		return nil, err
	}
	leases, err := register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: ns, Subsystem: sub, Name: "session_leases",
		Help: "Leases kept alive by sessions.",
	}))
	if err != nil {
		return nil, err
	}
	expired, err := register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "session_leases_lost_total",
		Help: "Session leases that expired while still in use.",
	}))
	if err != nil {
		return nil, err
	}

	m := &metrics{
		watchers:       watchers,
		watchDelivery:  delivery,
		watchRevLag:    revLag,
		watchResyncs:   map[string]prometheus.Counter{},
		sessionLeases:  leases,
		sessionExpired: expired,
	}
	for op, name := range operationNames {
		m.ops[op] = opMetrics{
			total:    total.WithLabelValues(name),
			errors:   errs.WithLabelValues(name),
			duration: dur.WithLabelValues(name),
		}
	}
	for _, reason := range []string{resyncCompacted, resyncBroken} {
		m.watchResyncs[reason] = resyncs.WithLabelValues(reason)
	}
	return m, nil
}

// observe records one finished operation.
func (m *metrics) observe(op operation, start time.Time, err error) {
	o := &m.ops[op]
	o.total.Inc()
	if err != nil {
		o.errors.Inc()
	}
	o.duration.Observe(time.Since(start).Seconds())
}

// register registers c, or returns the collector already registered under the same descriptor so
// that several clients can share one Registerer.
func register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	if reg == nil {
		return c, nil
	}
	if err := reg.Register(c); err != nil {
		var already prometheus.AlreadyRegisteredError
		if errors.As(err, &already) {
			if existing, ok := already.ExistingCollector.(T); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("register kvstore metrics: %w", err)
	}
	return c, nil
}
