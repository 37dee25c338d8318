package agent

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/clustermesh/remote"
)

// status reports every configured remote cluster, ordered by name.
func (m *clusterMesh) status() *apiv1.ClusterMeshStatusResponse {
	out := &apiv1.ClusterMeshStatusResponse{ConfigDir: m.opts.dir, FullWatch: m.opts.fullWatch}
	type snapshot struct {
		rc        *remoteCluster
		client    *remote.Client
		configErr string
		address   string
	}
	m.mu.Lock()
	out.ConfigDirError = m.dirErr
	snaps := make([]snapshot, 0, len(m.remotes))
	for _, rc := range m.remotes {
		snaps = append(snaps, snapshot{rc: rc, client: rc.client, configErr: rc.configErr, address: rc.cfg.Address})
	}
	m.mu.Unlock()
	slices.SortFunc(snaps, func(a, b snapshot) int { return strings.Compare(a.rc.name, b.rc.name) })
	for _, s := range snaps {
		rs := &apiv1.RemoteClusterStatus{Name: s.rc.name, ConfigFile: s.rc.file, Address: s.address, ConfigError: s.configErr, LastError: s.configErr}
		ids, ips, nodes := s.rc.imported.counts()
		rs.Identities, rs.Endpoints, rs.Nodes = uint32(ids), uint32(ips), uint32(nodes)
		if s.client != nil {
			st := s.client.Status()
			rs.Connected, rs.Synced, rs.Stale = st.Connected, st.Synced, st.Stale
			if st.LastError != "" {
				rs.LastError, rs.LastErrorTime = st.LastError, timestamp(st.LastErrorTime)
			}
			rs.LastSync, rs.TokenExpiry, rs.StaleUntil = timestamp(st.LastSync), timestamp(st.TokenExpiry), timestamp(st.StaleUntil)
			rs.Selectors, rs.Rejected = uint32(st.Selectors), st.Rejected
			if rs.LastError == "" {
				// Selectors beyond the mesh API's limits: the watch fell back to a full one.
				rs.LastError = st.SelectorsWarning
			}
			if st.Info != nil {
				rs.ClusterId, rs.Version = st.Info.ClusterID, st.Info.Version
			}
		}
		rs.Rejected += s.rc.imported.refused()
		out.Clusters = append(out.Clusters, rs)
	}
	return out
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// summary is the clustermesh line of `palisade status` and one component per remote cluster;
// nil without clustermesh.
func (m *clusterMesh) summary() (*apiv1.ComponentStatus, []*apiv1.ComponentStatus) {
	if !m.enabled() {
		return nil, nil
	}
	st := m.status()
	sum := &apiv1.ComponentStatus{Name: "clustermesh", Ok: true}
	if st.ConfigDirError != "" {
		sum.Ok, sum.Message = false, "config directory: "+st.ConfigDirError
		return sum, nil
	}
	if len(st.Clusters) == 0 {
		sum.Message = "no remote cluster configured in " + st.ConfigDir
		return sum, nil
	}
	var synced, identities, endpoints int
	var per []*apiv1.ComponentStatus
	for _, c := range st.Clusters {
		comp := &apiv1.ComponentStatus{Name: c.Name, Ok: c.Synced}
		identities += int(c.Identities)
		endpoints += int(c.Endpoints)
		switch {
		case c.Synced:
			synced++
			comp.Message = fmt.Sprintf("synced, %d identities, %d endpoints, %d nodes", c.Identities, c.Endpoints, c.Nodes)
			if c.LastError != "" {
				comp.Message += "; " + c.LastError
			}
		case c.Stale:
			comp.Message = fmt.Sprintf("disconnected, %d identities and %d endpoints stale until %s: %s", c.Identities, c.Endpoints, c.StaleUntil.AsTime().Format(time.RFC3339), c.LastError)
		case c.Connected:
			comp.Message = "connected, syncing"
		default:
			comp.Message = "not connected: " + c.LastError
		}
		per = append(per, comp)
	}
	sum.Ok = synced == len(st.Clusters)
	sum.Message = fmt.Sprintf("%d/%d remote clusters synced, %d remote identities, %d remote endpoints", synced, len(st.Clusters), identities, endpoints)
	return sum, per
}
