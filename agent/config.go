package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/palisade-mesh/palisade/identity"
)

// Config is everything an agent needs to run on a node. It can be read from a YAML file and
// overridden by flags.
type Config struct {
	// ClusterName and ClusterID identify the cluster; they must match the cluster's config in etcd.
	ClusterName string `json:"clusterName"`
	ClusterID   uint32 `json:"clusterID"`
	// MaxConnectedClusters (255 or 511) fixes the identity layout; set when the cluster is created.
	MaxConnectedClusters int `json:"maxConnectedClusters,omitempty"`
	// NodeName is this node's unique name in the cluster (default: the host name).
	NodeName string `json:"nodeName,omitempty"`
	// NodeIP is the address other nodes route this node's pod CIDR through (default: the first
	// global IPv4 address of the node).
	NodeIP netip.Addr `json:"nodeIP,omitempty"`
	// PodCIDR is where this node's endpoints get their addresses.
	PodCIDR netip.Prefix `json:"podCIDR"`

	// KvstoreEndpoints are the etcd client URLs (http://, https://, unix://).
	KvstoreEndpoints []string `json:"kvstoreEndpoints"`
	KvstoreCAFile    string   `json:"kvstoreCAFile,omitempty"`
	KvstoreCertFile  string   `json:"kvstoreCertFile,omitempty"`
	KvstoreKeyFile   string   `json:"kvstoreKeyFile,omitempty"`
	KvstorePrefix    string   `json:"kvstorePrefix,omitempty"`
	// LeaseTTL bounds how long a dead node's ipcache entries, node entry and identity references
	// outlive it (default 15s).
	LeaseTTL time.Duration `json:"leaseTTL,omitempty"`

	// StateDir keeps endpoint state and the IPAM file across restarts (default /var/lib/palisade).
	StateDir string `json:"stateDir,omitempty"`
	// SocketPath is the agent API's unix socket (default /run/palisade/agent.sock).
	SocketPath string `json:"socketPath,omitempty"`
	// BPFPinDir is where maps and links are pinned so enforcement survives restarts (default
	// /sys/fs/bpf/palisade).
	BPFPinDir string `json:"bpfPinDir,omitempty"`
	// MetricsAddr serves Prometheus metrics when set (e.g. 127.0.0.1:9962).
	MetricsAddr string `json:"metricsAddr,omitempty"`
	// LabelPatterns selects the security-relevant labels (see identity.Filter).
	LabelPatterns []string `json:"labelPatterns,omitempty"`
	// HealthPort is the gossip port (TCP and UDP) on NodeIP where the cluster's agents watch each
	// other's liveness (default 7946).
	HealthPort int `json:"healthPort,omitempty"`
	// HealthKeyFile holds the gossip key set (JSON, see health.KeySet); when empty the key set is
	// the cluster's, in etcd under health/keys, created by the first agent.
	HealthKeyFile string `json:"healthKeyFile,omitempty"`
	// PolicyAllClusters makes peer selectors without a cluster label match every cluster of the
	// mesh instead of only the local one (Cilium's historic behaviour).
	PolicyAllClusters bool `json:"policyAllClusters,omitempty"`

	// ClusterMeshConfigDir holds one <name>.yaml per remote cluster to import from
	// (clustermesh.RemoteConfig, as `palisade clustermesh connect` writes them). Files are picked
	// up, changed and dropped at run time. Empty: no clustermesh.
	ClusterMeshConfigDir string `json:"clusterMeshConfigDir,omitempty"`
	// ClusterMeshSyncTimeout bounds how long the agent, when it starts, waits for the remote
	// clusters to sync before it recomputes its endpoints' policy (default 30s). Until then the
	// endpoints keep what the kernel has.
	ClusterMeshSyncTimeout time.Duration `json:"clusterMeshSyncTimeout,omitempty"`
	// ClusterMeshStaleGrace is how long a disconnected remote cluster's entries stay in force
	// (marked stale) before they are removed (default 5m).
	ClusterMeshStaleGrace time.Duration `json:"clusterMeshStaleGrace,omitempty"`
	// ClusterMeshFullWatch imports every identity of the remote clusters rather than only those
	// the local policies may select (memory grows with the remote clusters' size).
	ClusterMeshFullWatch bool `json:"clusterMeshFullWatch,omitempty"`
}

// Defaults for unset fields.
const (
	DefaultStateDir   = "/var/lib/palisade"
	DefaultSocketPath = "/run/palisade/agent.sock"
	DefaultBPFPinDir  = "/sys/fs/bpf/palisade"
	DefaultLeaseTTL   = 15 * time.Second
	DefaultHealthPort = 7946

	DefaultClusterMeshSyncTimeout = 30 * time.Second
	DefaultClusterMeshStaleGrace  = 5 * time.Minute
)

// LoadConfigFile reads a YAML (or JSON) config file strictly: unknown fields are errors.
func LoadConfigFile(path string) (Config, error) {
	var cfg Config
	raw, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("read agent config: %w", err)
	}
	if err := yaml.UnmarshalStrict(raw, &cfg); err != nil {
		return cfg, fmt.Errorf("agent config %s: %w", path, err)
	}
	return cfg, nil
}

// WithDefaults fills unset fields.
func (c Config) WithDefaults() Config {
	if c.NodeName == "" {
		c.NodeName, _ = os.Hostname()
	}
	if c.MaxConnectedClusters == 0 {
		c.MaxConnectedClusters = identity.DefaultLayout.MaxConnectedClusters
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.SocketPath == "" {
		c.SocketPath = DefaultSocketPath
	}
	if c.BPFPinDir == "" {
		c.BPFPinDir = DefaultBPFPinDir
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.HealthPort == 0 {
		c.HealthPort = DefaultHealthPort
	}
	if c.ClusterMeshSyncTimeout == 0 {
		c.ClusterMeshSyncTimeout = DefaultClusterMeshSyncTimeout
	}
	if c.ClusterMeshStaleGrace == 0 {
		c.ClusterMeshStaleGrace = DefaultClusterMeshStaleGrace
	}
	if len(c.KvstoreEndpoints) == 0 {
		c.KvstoreEndpoints = []string{"http://127.0.0.1:2379"}
	}
	return c
}

// Validate reports every problem of the config at once.
func (c Config) Validate() error {
	var errs []error
	if c.ClusterName == "" {
		errs = append(errs, errors.New("--cluster-name is required"))
	}
	layout, err := identity.NewLayout(c.MaxConnectedClusters)
	if err != nil {
		errs = append(errs, err)
	} else if err := layout.ValidateClusterID(c.ClusterID); err != nil {
		errs = append(errs, fmt.Errorf("--cluster-id: %w", err))
	}
	if c.NodeName == "" {
		errs = append(errs, errors.New("--node-name is required (no host name to default to)"))
	}
	if !c.PodCIDR.IsValid() {
		errs = append(errs, errors.New("--pod-cidr is required, e.g. 10.100.1.0/24"))
	} else if !c.PodCIDR.Addr().Is4() {
		errs = append(errs, fmt.Errorf("--pod-cidr %s: only IPv4 is supported", c.PodCIDR))
	}
	if c.NodeIP.IsValid() && !c.NodeIP.Is4() {
		errs = append(errs, fmt.Errorf("--node-ip %s: only IPv4 is supported", c.NodeIP))
	}
	if c.LeaseTTL < 2*time.Second {
		errs = append(errs, fmt.Errorf("lease TTL %s: at least 2s", c.LeaseTTL))
	}
	if c.HealthPort < 1 || c.HealthPort > 65535 {
		errs = append(errs, fmt.Errorf("--health-port %d: out of range", c.HealthPort))
	}
	if !filepath.IsAbs(c.StateDir) {
		errs = append(errs, fmt.Errorf("--state-dir %q: must be an absolute path", c.StateDir))
	}
	if c.ClusterMeshSyncTimeout < 0 {
		errs = append(errs, fmt.Errorf("--clustermesh-sync-timeout %s: must not be negative", c.ClusterMeshSyncTimeout))
	}
	if c.ClusterMeshStaleGrace < 0 {
		errs = append(errs, fmt.Errorf("--clustermesh-stale-grace %s: must not be negative", c.ClusterMeshStaleGrace))
	}
	if _, err := identity.NewFilter(c.LabelPatterns); err != nil {
		errs = append(errs, fmt.Errorf("--labels: %w", err))
	}
	return errors.Join(errs...)
}
