package apiserver

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/palisade-mesh/palisade/certs/meshtls"
	"github.com/palisade-mesh/palisade/certs/token"
	"github.com/palisade-mesh/palisade/identity"
)

// Options configure a Server. Zero values take the defaults named on each field.
type Options struct {
	// ClusterName and ClusterID name the served cluster; required. They must match the cluster's
	// configuration in etcd (identity.ClusterConfigKey); New records them there when the cluster
	// has none yet.
	ClusterName string
	ClusterID   uint32
	// MaxConnectedClusters is the identity layout recorded for a cluster that has no configuration
	// yet (255 or 511). Default 255. An existing configuration's value is used as it is.
	MaxConnectedClusters int
	// Version is announced in Info. Default "dev".
	Version string

	// ListenAddress is where the gRPC server listens. Default ":4245".
	ListenAddress string
	// TLS serves the server certificate and the mesh CA bundle; required.
	TLS *meshtls.Source
	// Verifier checks every call's access token; required.
	Verifier *token.Verifier

	// RateLimit is the calls per second one client cluster may make (all its connections
	// together), with RateBurst calls at once. Defaults 20 and 40: a remote agent makes a handful
	// of calls when it (re)connects, so this only bites a misbehaving client.
	RateLimit float64
	RateBurst int
	// MaxStreamsPerCluster caps the concurrent Watch streams of one client cluster: one per agent
	// of that cluster, plus tools. Default 1024.
	MaxStreamsPerCluster int
	// SendQueueLength is how many changes may wait to be sent to one Watch stream; a client that
	// falls further behind is disconnected. It bounds the server's memory per stream. Default
	// 8192.
	SendQueueLength int
	// MaxConcurrentSyncs bounds the streams sending their initial state at once; more wait their
	// turn. Each holds a list of the objects it selects until they are sent, so this bounds the
	// server's memory when many agents (re)connect together. Default 64.
	MaxConcurrentSyncs int
	// MaxChangesPerResponse and MaxResponseBytes bound one MeshWatchResponse. Defaults 1000 and
	// 1 MiB (a client's default receive limit is 4 MiB).
	MaxChangesPerResponse int
	MaxResponseBytes      int

	// HeartbeatInterval is how often the cluster's heartbeat key is written. Default 10s.
	HeartbeatInterval time.Duration
	// GC configures the identity garbage collection the elected replica runs. GC.Interval
	// defaults to one minute (identity.GCConfig).
	GC identity.GCConfig
	// DisableGC turns the identity garbage collection (and the election) off.
	DisableGC bool
	// ElectionTTL is the lease TTL of the GC leader key: how long a replica that died without
	// stepping down keeps the other replicas from taking over. Default 15s.
	ElectionTTL time.Duration
	// ReplicaName names this replica in the GC leader key and the logs. Default the host name
	// and the process ID.
	ReplicaName string

	// Registerer receives the server's metrics. Nil: kept but not registered.
	Registerer prometheus.Registerer
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

// Defaults of Options.
const (
	DefaultListenAddress         = ":4245"
	DefaultRateLimit             = 20
	DefaultRateBurst             = 40
	DefaultMaxStreamsPerCluster  = 1024
	DefaultSendQueueLength       = 8192
	DefaultMaxConcurrentSyncs    = 64
	DefaultMaxChangesPerResponse = 1000
	DefaultMaxResponseBytes      = 1 << 20
	DefaultHeartbeatInterval     = 10 * time.Second
	DefaultElectionTTL           = 15 * time.Second
)

func (o Options) withDefaults() Options {
	if o.Version == "" {
		o.Version = "dev"
	}
	if o.ListenAddress == "" {
		o.ListenAddress = DefaultListenAddress
	}
	if o.RateLimit <= 0 {
		o.RateLimit = DefaultRateLimit
	}
	if o.RateBurst <= 0 {
		o.RateBurst = DefaultRateBurst
	}
	if o.MaxStreamsPerCluster <= 0 {
		o.MaxStreamsPerCluster = DefaultMaxStreamsPerCluster
	}
	if o.SendQueueLength <= 0 {
		o.SendQueueLength = DefaultSendQueueLength
	}
	if o.MaxConcurrentSyncs <= 0 {
		o.MaxConcurrentSyncs = DefaultMaxConcurrentSyncs
	}
	if o.MaxChangesPerResponse <= 0 {
		o.MaxChangesPerResponse = DefaultMaxChangesPerResponse
	}
	if o.MaxResponseBytes <= 0 {
		o.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if o.ElectionTTL <= 0 {
		o.ElectionTTL = DefaultElectionTTL
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

func (o Options) validate() error {
	var errs []error
	if o.ClusterName == "" {
		errs = append(errs, errors.New("cluster name is required"))
	}
	if o.ClusterID == 0 {
		errs = append(errs, errors.New("cluster ID is required"))
	}
	if o.TLS == nil {
		errs = append(errs, errors.New("TLS source (server certificate and CA bundle) is required"))
	}
	if o.Verifier == nil {
		errs = append(errs, errors.New("token verifier is required"))
	}
	if o.ElectionTTL < time.Second {
		errs = append(errs, fmt.Errorf("election TTL %s is below etcd's 1s granularity", o.ElectionTTL))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("mesh API server options: %w", err)
	}
	return nil
}
