package apiserver

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	clients        prometheus.Gauge // client clusters with at least one Watch stream
	streams        prometheus.Gauge
	eventsSent     prometheus.Counter
	slowDisconnect prometheus.Counter
	authFailures   *prometheus.CounterVec
	limited        *prometheus.CounterVec
	gcLeader       prometheus.Gauge
	heartbeats     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "palisade_mesh_apiserver_connected_clusters",
			Help: "Client clusters with at least one open Watch stream.",
		}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "palisade_mesh_apiserver_watch_streams",
			Help: "Open Watch streams.",
		}),
		eventsSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "palisade_mesh_apiserver_changes_sent_total",
			Help: "Changes (identities, ipcache entries, nodes) sent on Watch streams, initial state included.",
		}),
		slowDisconnect: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "palisade_mesh_apiserver_slow_client_disconnects_total",
			Help: "Watch streams ended because the client fell more than the send queue behind.",
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "palisade_mesh_apiserver_auth_failures_total",
			Help: "Calls refused by authentication or authorization, and Watch streams ended when their token or certificate stopped being valid, by reason.",
		}, []string{"reason"}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "palisade_mesh_apiserver_limited_total",
			Help: "Calls refused by a limit: rate, streams.",
		}, []string{"limit"}),
		gcLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "palisade_mesh_apiserver_gc_leader",
			Help: "1 while this replica runs the cluster's identity garbage collection.",
		}),
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "palisade_mesh_apiserver_heartbeats_total",
			Help: "Heartbeat key writes by result (ok, error).",
		}, []string{"result"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.clients, m.streams, m.eventsSent, m.slowDisconnect, m.authFailures, m.limited, m.gcLeader, m.heartbeats} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("mesh API server metrics: %w (one server per registry)", err)
			}
			return nil, fmt.Errorf("mesh API server metrics: %w", err)
		}
	}
	return m, nil
}
