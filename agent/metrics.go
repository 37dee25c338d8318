package agent

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the agent's own Prometheus series; kvstore and Go runtime series sit beside them in
// the same registry.
type metrics struct {
	endpoints        prometheus.GaugeFunc
	regenerations    *prometheus.CounterVec
	regenerationTime prometheus.Histogram
	policyRevision   prometheus.GaugeFunc
}

func newMetrics(a *Agent) *metrics {
	m := &metrics{
		endpoints: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "palisade_agent_endpoints",
			Help: "Endpoints managed by this agent.",
		}, func() float64 { return float64(len(a.endpointList())) }),
		regenerations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "palisade_agent_endpoint_regenerations_total",
			Help: "Endpoint policy computations, by outcome (unchanged, applied, failed).",
		}, []string{"outcome"}),
		regenerationTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "palisade_agent_endpoint_regeneration_seconds",
			Help:    "Time to compute an endpoint's policy and write it into the datapath.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		policyRevision: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "palisade_agent_policy_revision",
			Help: "Revision of the policy repository applied by this agent.",
		}, func() float64 { return float64(a.policy.engine.Revision()) }),
	}
	a.registry.MustRegister(m.endpoints, m.regenerations, m.regenerationTime, m.policyRevision)
	return m
}
