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

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
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
	if reg != nil {
		for _, c := range []prometheus.Collector{m.members, m.rtt, m.changes, m.rejected} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// sentBytes exports the transport's byte counts.
func (m *metrics) sentBytes(t *countingTransport, reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	for kind, n := range map[string]func() uint64{"packet": t.packetBytes.Load, "stream": t.streamBytes.Load} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "palisade_health_sent_bytes_total",
			Help:        "Gossip bytes sent by this member, by kind (packet: UDP probes and gossip; stream: TCP state exchanges).",
			ConstLabels: prometheus.Labels{"kind": kind},
		}, func() float64 { return float64(n()) }))
	}
}
