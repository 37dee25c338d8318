package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/palisade-mesh/palisade/agent"
	apiv1 "github.com/palisade-mesh/palisade/api/v1"
)

func newAgentCommand() *cobra.Command {
	var (
		cfgFile  string
		cfg      agent.Config
		nodeIP   string
		podCIDR  string
		logLevel string
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent",
		Long: `Run the node agent: it registers the node, manages its endpoints, watches identities,
policies and the ipcache in etcd and enforces policy in the kernel with eBPF. Flags override the
values of --config.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			final := cfg
			if cfgFile != "" {
				fileCfg, err := agent.LoadConfigFile(cfgFile)
				if err != nil {
					return err
				}
				final = mergeAgentConfig(fileCfg, cfg, cmd)
			}
			if nodeIP != "" {
				ip, err := netip.ParseAddr(nodeIP)
				if err != nil {
					return fmt.Errorf("--node-ip: %w", err)
				}
				final.NodeIP = ip
			}
			if podCIDR != "" {
				p, err := netip.ParsePrefix(podCIDR)
				if err != nil {
					return fmt.Errorf("--pod-cidr: %w", err)
				}
				final.PodCIDR = p
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			agent.Version = version

			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			a, err := agent.New(ctx, final, log)
			if err != nil {
				return err
			}
			return a.Run(ctx)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&cfgFile, "config", "", "agent config file (YAML)")
	fs.StringVar(&cfg.ClusterName, "cluster-name", "", "name of this node's cluster (unique in the mesh)")
	fs.Uint32Var(&cfg.ClusterID, "cluster-id", 0, "ID of this node's cluster, 1..255 (unique in the mesh)")
	fs.IntVar(&cfg.MaxConnectedClusters, "max-connected-clusters", 255, "255 or 511; fixed when the cluster is created")
	fs.StringVar(&cfg.NodeName, "node-name", "", "this node's name (default: the host name)")
	fs.StringVar(&nodeIP, "node-ip", "", "address other nodes reach this node's pods through (default: first global IPv4)")
	fs.StringVar(&podCIDR, "pod-cidr", "", "this node's pod CIDR, e.g. 10.100.1.0/24")
	fs.StringSliceVar(&cfg.KvstoreEndpoints, "kvstore-endpoints", []string{"http://127.0.0.1:2379"}, "etcd endpoints (http://, https://, unix://)")
	fs.StringVar(&cfg.KvstoreCAFile, "kvstore-ca-file", "", "CA certificate (PEM) of etcd's server certificate")
	fs.StringVar(&cfg.KvstoreCertFile, "kvstore-cert-file", "", "client certificate (PEM) for etcd")
	fs.StringVar(&cfg.KvstoreKeyFile, "kvstore-key-file", "", "client key (PEM) for etcd")
	fs.StringVar(&cfg.KvstorePrefix, "kvstore-prefix", "", "key prefix of the cluster in etcd (default palisade/v1/)")
	fs.DurationVar(&cfg.LeaseTTL, "lease-ttl", agent.DefaultLeaseTTL, "how long the node's keys outlive a lost agent")
	fs.StringVar(&cfg.StateDir, "state-dir", agent.DefaultStateDir, "where endpoint state survives restarts")
	fs.StringVar(&cfg.SocketPath, "socket", agent.DefaultSocketPath, "the agent API's unix socket")
	fs.StringVar(&cfg.BPFPinDir, "bpf-pin-dir", agent.DefaultBPFPinDir, "bpffs directory for pinned maps and links")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address (e.g. 127.0.0.1:9962)")
	fs.StringSliceVar(&cfg.LabelPatterns, "labels", nil, "security-relevant label patterns (regex, !regex excludes)")
	fs.IntVar(&cfg.HealthPort, "health-port", agent.DefaultHealthPort, "gossip health port (TCP and UDP) on the node address")
	fs.StringVar(&cfg.HealthKeyFile, "health-key-file", "", "gossip key set file (JSON {primary, keys}); default: the cluster's key in etcd")
	fs.BoolVar(&cfg.PolicyAllClusters, "policy-all-clusters", false, "peer selectors without a cluster label select every cluster")
	fs.StringVar(&cfg.ClusterMeshConfigDir, "clustermesh-config", "", "directory with one <name>.yaml per remote cluster to import (picked up at run time)")
	fs.DurationVar(&cfg.ClusterMeshSyncTimeout, "clustermesh-sync-timeout", agent.DefaultClusterMeshSyncTimeout, "at start-up, how long endpoints wait for the remote clusters to sync")
	fs.DurationVar(&cfg.ClusterMeshStaleGrace, "clustermesh-stale-grace", agent.DefaultClusterMeshStaleGrace, "how long a disconnected remote cluster's entries stay in force")
	fs.BoolVar(&cfg.ClusterMeshFullWatch, "clustermesh-full-watch", false, "import every remote identity, not only those the local policies may select")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

// mergeAgentConfig lets flags the user set explicitly override the config file.
func mergeAgentConfig(file, flags agent.Config, cmd *cobra.Command) agent.Config {
	set := func(name string) bool { return cmd.Flags().Changed(name) }
	out := file
	if set("cluster-name") {
		out.ClusterName = flags.ClusterName
	}
	if set("cluster-id") {
		out.ClusterID = flags.ClusterID
	}
	if set("max-connected-clusters") || out.MaxConnectedClusters == 0 {
		out.MaxConnectedClusters = flags.MaxConnectedClusters
	}
	if set("node-name") {
		out.NodeName = flags.NodeName
	}
	if set("kvstore-endpoints") || len(out.KvstoreEndpoints) == 0 {
		out.KvstoreEndpoints = flags.KvstoreEndpoints
	}
	for name, pair := range map[string][2]*string{
		"kvstore-ca-file":    {&out.KvstoreCAFile, &flags.KvstoreCAFile},
		"kvstore-cert-file":  {&out.KvstoreCertFile, &flags.KvstoreCertFile},
		"kvstore-key-file":   {&out.KvstoreKeyFile, &flags.KvstoreKeyFile},
		"kvstore-prefix":     {&out.KvstorePrefix, &flags.KvstorePrefix},
		"state-dir":          {&out.StateDir, &flags.StateDir},
		"socket":             {&out.SocketPath, &flags.SocketPath},
		"bpf-pin-dir":        {&out.BPFPinDir, &flags.BPFPinDir},
		"metrics-addr":       {&out.MetricsAddr, &flags.MetricsAddr},
		"health-key-file":    {&out.HealthKeyFile, &flags.HealthKeyFile},
		"clustermesh-config": {&out.ClusterMeshConfigDir, &flags.ClusterMeshConfigDir},
	} {
		if set(name) || *pair[0] == "" {
			*pair[0] = *pair[1]
		}
	}
	if set("lease-ttl") || out.LeaseTTL == 0 {
		out.LeaseTTL = flags.LeaseTTL
	}
	if set("health-port") || out.HealthPort == 0 {
		out.HealthPort = flags.HealthPort
	}
	if set("labels") {
		out.LabelPatterns = flags.LabelPatterns
	}
	if set("policy-all-clusters") {
		out.PolicyAllClusters = flags.PolicyAllClusters
	}
	if set("clustermesh-sync-timeout") || out.ClusterMeshSyncTimeout == 0 {
		out.ClusterMeshSyncTimeout = flags.ClusterMeshSyncTimeout
	}
	if set("clustermesh-stale-grace") || out.ClusterMeshStaleGrace == 0 {
		out.ClusterMeshStaleGrace = flags.ClusterMeshStaleGrace
	}
	if set("clustermesh-full-watch") {
		out.ClusterMeshFullWatch = flags.ClusterMeshFullWatch
	}
	return out
}

// agentClient connects to the agent's API socket.
type agentClient struct {
	socket string
}

func addAgentClientFlags(cmd *cobra.Command) *agentClient {
	c := &agentClient{}
	cmd.PersistentFlags().StringVar(&c.socket, "socket", agent.DefaultSocketPath, "the agent API's unix socket")
	return c
}

// dial returns a client; the first call fails fast with a hint when no agent listens.
func (c *agentClient) dial() (apiv1.AgentClient, func(), error) {
	if _, err := os.Stat(c.socket); err != nil {
		return nil, nil, fmt.Errorf("no agent API at %s (is `palisade agent` running on this node? --socket sets the path): %w", c.socket, err)
	}
	conn, err := grpc.NewClient("unix://"+c.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to agent at %s: %w", c.socket, err)
	}
	return apiv1.NewAgentClient(conn), func() { conn.Close() }, nil
}

// call dials the agent and runs fn with a bounded context.
func (c *agentClient) call(parent context.Context, fn func(context.Context, apiv1.AgentClient) error) error {
	client, closeFn, err := c.dial()
	if err != nil {
		return err
	}
	defer closeFn()
	ctx, cancel := context.WithTimeout(parent, 2*time.Minute)
	defer cancel()
	return fn(ctx, client)
}
