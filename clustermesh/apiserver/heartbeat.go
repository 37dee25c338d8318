package apiserver

import (
	"context"
	"time"

	"github.com/palisade-mesh/palisade/kvstore"
)

// writeHeartbeats writes the cluster's heartbeat key now and every HeartbeatInterval until ctx
// ends, so that remote clusters (and operators) can tell the cluster's mesh API server is alive.
func (s *Server) writeHeartbeats(ctx context.Context) {
	t := time.NewTicker(s.opts.HeartbeatInterval)
	defer t.Stop()
	for {
		now := time.Now().UTC()
		if err := s.kv.Put(ctx, HeartbeatKey, []byte(now.Format(time.RFC3339Nano)), kvstore.NoLease); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.metrics.heartbeats.WithLabelValues("error").Inc()
			s.log.Warn("heartbeat not written", "error", err)
		} else {
			s.metrics.heartbeats.WithLabelValues("ok").Inc()
			s.heartbeat.Store(&now)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
