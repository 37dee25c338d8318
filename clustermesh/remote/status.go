package remote

import (
	"slices"
	"time"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
)

// Info is what the remote cluster's mesh API server says about itself.
type Info struct {
	Cluster              string    `json:"cluster"`
	ClusterID            uint32    `json:"clusterID"`
	Version              string    `json:"version,omitempty"`
	Capabilities         []string  `json:"capabilities,omitempty"`
	MaxConnectedClusters uint32    `json:"maxConnectedClusters,omitempty"`
	Heartbeat            time.Time `json:"heartbeat,omitzero"`
}

// Has reports whether the server announced a capability (clustermesh.Capability*).
func (i Info) Has(capability string) bool { return slices.Contains(i.Capabilities, capability) }

func infoFromProto(m *apiv1.MeshInfo) Info {
	out := Info{
		Cluster:              m.GetCluster(),
		ClusterID:            m.GetClusterId(),
		Version:              m.GetVersion(),
		Capabilities:         slices.Clone(m.GetCapabilities()),
		MaxConnectedClusters: m.GetMaxConnectedClusters(),
	}
	if hb := m.GetHeartbeat(); hb != nil {
		out.Heartbeat = hb.AsTime()
	}
	return out
}

// Status is a snapshot of a Client.
type Status struct {
	Cluster string `json:"cluster"`
	Address string `json:"address"`
	// Connected: the server answered Info, the caller accepted it and a watch stream is open.
	Connected bool `json:"connected"`
	// Synced: the current stream's complete state has been delivered.
	Synced bool `json:"synced"`
	// Stale: the connection was lost; what was delivered stays in force until StaleUntil.
	Stale      bool      `json:"stale"`
	StaleUntil time.Time `json:"staleUntil,omitzero"`
	LastSync   time.Time `json:"lastSync,omitzero"`
	// Counts of what the consumer holds.
	Identities int `json:"identities"`
	IPCache    int `json:"ipcache"`
	Nodes      int `json:"nodes"`
	// Rejected counts objects the remote sent that failed validation or lay outside the watched
	// selectors (an upsert's key, when readable, was deleted instead).
	Rejected      uint64    `json:"rejected,omitempty"`
	LastError     string    `json:"lastError,omitempty"`
	LastErrorTime time.Time `json:"lastErrorTime,omitzero"`
	TokenExpiry   time.Time `json:"tokenExpiry,omitzero"`
	// Selectors is the number of selectors of the current watch; 0 means a full watch.
	Selectors int `json:"selectors"`
	// SelectorsWarning says why the watch is a full one although selectors were asked for.
	SelectorsWarning string `json:"selectorsWarning,omitempty"`
	// Info is the server's last answer to Info; nil until it first answered.
	Info *Info `json:"info,omitempty"`
}
