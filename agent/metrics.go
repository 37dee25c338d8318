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
	a.registry.MustRegister(newMeshCollector(a.mesh))
	return m
}

// meshCollector reports the remote clusters from the clustermesh status at scrape time.
type meshCollector struct {
	mesh                        *clusterMesh
	clusters, connected, synced *prometheus.Desc
	identities, endpoints       *prometheus.Desc
}

func newMeshCollector(mesh *clusterMesh) *meshCollector {
	return &meshCollector{
		mesh:       mesh,
		clusters:   prometheus.NewDesc("palisade_agent_clustermesh_remote_clusters", "Remote clusters configured.", nil, nil),
		connected:  prometheus.NewDesc("palisade_agent_clustermesh_remote_clusters_connected", "Remote clusters with an open watch.", nil, nil),
		synced:     prometheus.NewDesc("palisade_agent_clustermesh_remote_clusters_synced", "Remote clusters whose complete state is imported.", nil, nil),
		identities: prometheus.NewDesc("palisade_agent_clustermesh_remote_identities", "Identities imported from a remote cluster.", []string{"cluster"}, nil),
		endpoints:  prometheus.NewDesc("palisade_agent_clustermesh_remote_endpoints", "Ipcache entries imported from a remote cluster.", []string{"cluster"}, nil),
	}
}

func (c *meshCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.clusters, c.connected, c.synced, c.identities, c.endpoints} {
		ch <- d
	}
}

func (c *meshCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.mesh.status()
	var connected, synced int
	for _, r := range st.Clusters {
		if r.Connected {
			connected++
		}
		if r.Synced {
			synced++
		}
		ch <- prometheus.MustNewConstMetric(c.identities, prometheus.GaugeValue, float64(r.Identities), r.Name)
		ch <- prometheus.MustNewConstMetric(c.endpoints, prometheus.GaugeValue, float64(r.Endpoints), r.Name)
	}
	ch <- prometheus.MustNewConstMetric(c.clusters, prometheus.GaugeValue, float64(len(st.Clusters)))
	ch <- prometheus.MustNewConstMetric(c.connected, prometheus.GaugeValue, float64(connected))
	ch <- prometheus.MustNewConstMetric(c.synced, prometheus.GaugeValue, float64(synced))
}
