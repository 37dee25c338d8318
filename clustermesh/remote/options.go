package remote

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/palisade-mesh/palisade/clustermesh"
	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/policy/api"
)

// Options configure a Client.
type Options struct {
	// Config names the remote cluster, its address and the files to dial it with; required.
	Config clustermesh.RemoteConfig
	// Consumer receives the imported state; required.
	Consumer Consumer
	// Selectors returns the selectors to watch with, each as its requirements (the policy
	// engine's SelectorsFor). It is called when a stream starts and after UpdateSelectors. Nil,
	// or an empty result, watches everything (a full watch).
	Selectors func() [][]api.Requirement
	// Check may refuse the remote cluster after it said who it is (Info), on every connection:
	// the agent refuses name and ID clashes with itself and with every other connected cluster.
	// A refusal is reported as the last error and retried with backoff. Optional.
	Check func(Info) error
	// Layout is the mesh's identity layout: remote identities must be cluster-scoped in it, with
	// the remote's cluster ID. Default identity.DefaultLayout.
	Layout identity.Layout
	// StaleGrace is how long the delivered entries stay in force after the connection is lost;
	// then they are withdrawn (delivered as deletions). Default DefaultStaleGrace.
	StaleGrace time.Duration
	// MinBackoff and MaxBackoff bound the wait between connection attempts (exponential, with
	// jitter). Defaults 200ms and 30s: a restarted server is back within a second, and a cluster
	// that is down for long is asked twice a minute.
	MinBackoff, MaxBackoff time.Duration
	// CallTimeout bounds Info (and the TLS handshake it waits for). Default 10s.
	CallTimeout time.Duration
	// Logger receives connection events. Default slog.Default().
	Logger *slog.Logger
	// MaxIdentities, MaxIPCache and MaxNodes bound what this remote cluster may make the client
	// hold: a stream that would go beyond one is ended with an error naming it, and what was
	// delivered before stays (and goes stale as after any loss of the connection). Defaults
	// DefaultMaxIdentities, DefaultMaxIPCache and DefaultMaxNodes.
	MaxIdentities, MaxIPCache, MaxNodes int
	// Initial, when set, returns what the consumer already holds from this remote cluster (the
	// previous client's Delivered, when its configuration changed); Run calls it once, first. The
	// first sync then delivers only the differences from it, and it goes stale and is withdrawn
	// like anything the client delivered itself. Only upserts are read.
	Initial func() Changes
}

// Defaults of Options.
const (
	DefaultStaleGrace  = 5 * time.Minute
	DefaultMinBackoff  = 200 * time.Millisecond
	DefaultMaxBackoff  = 30 * time.Second
	DefaultCallTimeout = 10 * time.Second
	// DefaultMaxIdentities is the size of the identity space of one cluster in the default
	// layout's order of magnitude, far above what a selected watch needs.
	DefaultMaxIdentities = 100_000
	// DefaultMaxIPCache leaves about a quarter of the datapath's ipcache map (512Ki entries,
	// bpf/datapath.c) to the local cluster and other remote clusters.
	DefaultMaxIPCache = 400_000
	DefaultMaxNodes   = 10_000
)

func (o Options) withDefaults() (Options, error) {
	if err := o.Config.Validate(); err != nil {
		return o, fmt.Errorf("remote cluster config: %w", err)
	}
	if o.Consumer == nil {
		return o, errors.New("remote cluster client: a consumer is required")
	}
	if o.Layout.MaxConnectedClusters == 0 {
		o.Layout = identity.DefaultLayout
	}
	if _, err := identity.NewLayout(o.Layout.MaxConnectedClusters); err != nil {
		return o, err
	}
	if o.StaleGrace <= 0 {
		o.StaleGrace = DefaultStaleGrace
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = o.MinBackoff
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	if o.MaxIdentities <= 0 {
		o.MaxIdentities = DefaultMaxIdentities
	}
	if o.MaxIPCache <= 0 {
		o.MaxIPCache = DefaultMaxIPCache
	}
	if o.MaxNodes <= 0 {
		o.MaxNodes = DefaultMaxNodes
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Logger = o.Logger.With("remote_cluster", o.Config.Name)
	return o, nil
}
