package health

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	members  *prometheus.GaugeVec
	rtt      prometheus.Histogram
	changes  *prometheus.CounterVec
	rejected *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "palisade_health_members",
			Help: "Members of the cluster's gossip by state, as this node sees them (itself included).",
		}, []string{"state"}),
		rtt: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "palisade_health_probe_rtt_seconds",
			Help:    "Round trip of successful gossip probes to other members.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 14), // 50 µs .. 0.4 s
		}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "palisade_health_state_changes_total",
			Help: "Member state changes seen by this node, by new state.",
		}, []string{"state"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "palisade_health_rejected_messages_total",
			Help: "Gossip messages rejected, by reason (decrypt: not under any installed key; label: another cluster).",
		}, []string{"reason"}),
	}
	for _, s := range States {
		m.members.WithLabelValues(string(s))
		m.changes.WithLabelValues(string(s))
	}
	m.rejected.WithLabelValues("decrypt")
	m.rejected.WithLabelValues("label")
	return m
}

// register adds the metrics, with the transport's byte counts, to reg; all or nothing, so a
// failed start can be retried with the same registry.
func (m *metrics) register(reg prometheus.Registerer, t *countingTransport) error {
	if reg == nil {
		return nil
	}
	cs := []prometheus.Collector{m.members, m.rtt, m.changes, m.rejected}
	for _, kind := range []string{"packet", "stream"} {
		n := t.packetBytes.Load
		if kind == "stream" {
			n = t.streamBytes.Load
		}
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "palisade_health_sent_bytes_total",
			Help:        "Gossip bytes sent by this member, by kind (packet: UDP probes and gossip; stream: TCP state exchanges).",
			ConstLabels: prometheus.Labels{"kind": kind},
		}, func() float64 { return float64(n()) }))
	}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return err
		}
	}
	return nil
}
