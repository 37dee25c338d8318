package main

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"

	"github.com/palisade-mesh/palisade/certs/meshtls"
	"github.com/palisade-mesh/palisade/certs/token"
	"github.com/palisade-mesh/palisade/clustermesh/apiserver"
	"github.com/palisade-mesh/palisade/kvstore"
)

// meshAPIServerFlags are the flags of `palisade mesh-apiserver` that are not server options as
// they are.
type meshAPIServerFlags struct {
	configFile                string
	caFile, certFile, keyFile string
	signingKeys               []string
	revocations               string
	metricsAddr               string
	logLevel                  string
}

func newMeshAPIServerCommand() *cobra.Command {
	var (
		opts apiserver.Options
		f    meshAPIServerFlags
		kvf  *kvstoreFlags
	)
	cmd := &cobra.Command{
		Use:   "mesh-apiserver",
		Short: "Serve this cluster's identities, ipcache and nodes to the other clusters of the mesh",
		Long: `Run the cluster's mesh API server: a read-only gRPC API over mTLS that remote clusters' agents
watch to import this cluster's identities, ipcache entries and nodes. Every call needs a client
certificate from the mesh CA and an access token this cluster issued to the calling cluster
("palisade clustermesh token issue"). The server also writes the cluster's heartbeat key and, elected
among its replicas through etcd, runs the cluster's identity garbage collection.
See docs/clustermesh.md and docs/clustermesh-security.md.`,
		Example: `  palisade mesh-apiserver --cluster-name cluster1 --cluster-id 1 \
      --kvstore-endpoints http://127.0.0.1:2379 \
      --ca-file cluster1/ca.crt --cert-file cluster1/cluster1-server.crt --key-file cluster1/cluster1-server.key \
      --signing-key cluster1/signing.key --revocations cluster1/revoked`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.configFile != "" {
				if err := applyFlagFile(cmd.Flags(), f.configFile); err != nil {
					return err
				}
			}
			for _, name := range []string{"cluster-name", "cluster-id", "ca-file", "cert-file", "key-file", "signing-key"} {
				if !cmd.Flags().Changed(name) {
					return fmt.Errorf("--%s is required (on the command line or in --config)", name)
				}
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runMeshAPIServer(ctx, opts, f, kvf.config(), log)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&opts.ClusterName, "cluster-name", "", "name of the served cluster (must match cluster/config in etcd)")
	fs.Uint32Var(&opts.ClusterID, "cluster-id", 0, "ID of the served cluster, 1..255 (must match cluster/config in etcd)")
	fs.IntVar(&opts.MaxConnectedClusters, "max-connected-clusters", 255, "255 or 511; only used when the cluster has no configuration in etcd yet")
	fs.StringVar(&opts.ListenAddress, "listen", apiserver.DefaultListenAddress, "address of the mesh API (gRPC over mTLS)")
	fs.StringVar(&f.caFile, "ca-file", "", "mesh CA bundle (PEM) that client certificates must chain to")
	fs.StringVar(&f.certFile, "cert-file", "", "this cluster's mesh API server certificate (PEM, role server)")
	fs.StringVar(&f.keyFile, "key-file", "", "key of --cert-file (PEM)")
	fs.StringArrayVar(&f.signingKeys, "signing-key", nil, "the cluster's token signing key (private or public PEM); repeat during a key rotation")
	fs.StringVar(&f.revocations, "revocations", "", "revoked token IDs, one per line (re-read when it changes)")
	fs.DurationVar(&opts.HeartbeatInterval, "heartbeat-interval", apiserver.DefaultHeartbeatInterval, "how often the cluster's heartbeat key is written")
	fs.DurationVar(&opts.GC.Interval, "gc-interval", time.Minute, "identity garbage collection interval (an unreferenced identity goes after one to two intervals)")
	fs.BoolVar(&opts.DisableGC, "disable-gc", false, "do not take part in the identity garbage collection election")
	fs.Float64Var(&opts.RateLimit, "rate-limit", apiserver.DefaultRateLimit, "calls per second one client cluster may make")
	fs.IntVar(&opts.RateBurst, "rate-burst", apiserver.DefaultRateBurst, "calls one client cluster may make at once")
	fs.IntVar(&opts.MaxStreamsPerCluster, "max-streams-per-cluster", apiserver.DefaultMaxStreamsPerCluster, "concurrent Watch streams one client cluster may hold")
	fs.IntVar(&opts.SendQueueLength, "send-queue-length", apiserver.DefaultSendQueueLength, "changes that may wait for one Watch stream before its client is disconnected as too slow")
	fs.IntVar(&opts.MaxConcurrentSyncs, "max-concurrent-syncs", apiserver.DefaultMaxConcurrentSyncs, "Watch streams that may receive their initial state at once (bounds memory when many agents reconnect)")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address (e.g. 127.0.0.1:9963)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	kvf = addKvstoreFlags(fs)
	fs.StringVar(&f.configFile, "config", "", "YAML file of flag values (cluster-name: cluster1, signing-key: [a.key, b.key], ...); flags on the command line win")
	return cmd
}

// runMeshAPIServer loads the TLS material and signing keys, connects to etcd, checks the
// cluster's configuration there and serves until ctx ends.
func runMeshAPIServer(ctx context.Context, opts apiserver.Options, f meshAPIServerFlags, kvCfg kvstore.Config, log *slog.Logger) error {
	src, err := meshtls.NewSource(meshtls.SourceOptions{CertFile: f.certFile, KeyFile: f.keyFile, CAFile: f.caFile, Logger: log})
	if err != nil {
		return err
	}
	var keys []*ecdsa.PublicKey
	for _, path := range f.signingKeys {
		k, err := token.LoadVerificationKey(path)
		if err != nil {
			return fmt.Errorf("--signing-key: %w", err)
		}
		keys = append(keys, k)
	}
	vopts := token.VerifierOptions{Cluster: opts.ClusterName, Keys: keys}
	if f.revocations != "" {
		if vopts.Revocations, err = token.OpenRevocations(f.revocations, token.RevocationsOptions{Logger: log}); err != nil {
			return fmt.Errorf("--revocations: %w", err)
		}
	}
	verifier, err := token.NewVerifier(vopts)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	kvCfg.Registerer, kvCfg.Logger = reg, log
	kv, err := kvstore.New(ctx, kvCfg)
	if err != nil {
		return fmt.Errorf("connect to the cluster's etcd: %w", err)
	}
	defer kv.Close()

	opts.TLS, opts.Verifier, opts.Registerer, opts.Logger, opts.Version = src, verifier, reg, log, version
	srv, err := apiserver.New(ctx, kv, opts)
	if err != nil {
		return err
	}
	if f.metricsAddr != "" {
		ms, err := startMetricsServer(f.metricsAddr, reg, log)
		if err != nil {
			srv.Close()
			return err
		}
		defer ms.Close()
	}
	return srv.Run(ctx)
}

// startMetricsServer serves reg on addr until Close.
func startMetricsServer(addr string, reg *prometheus.Registry, log *slog.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	ms := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := ms.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "address", addr, "error", err)
		}
	}()
	return ms, nil
}

// applyFlagFile sets the flags named in a YAML file (keys are flag names without dashes) that
// were not given on the command line. Unknown keys are errors, so a typo is not ignored.
func applyFlagFile(fs *pflag.FlagSet, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(data, &values); err != nil {
		return fmt.Errorf("--config %s: %w", path, err)
	}
	for _, name := range slices.Sorted(maps.Keys(values)) {
		fl := fs.Lookup(name)
		if fl == nil || name == "config" {
			return fmt.Errorf("--config %s: unknown setting %q (keys are the command's flag names)", path, name)
		}
		if fl.Changed {
			continue // the command line wins
		}
		items, isList := values[name].([]any)
		if !isList {
			items = []any{values[name]}
		}
		for _, v := range items {
			if err := fs.Set(name, flagValue(v)); err != nil {
				return fmt.Errorf("--config %s: %s: %w", path, name, err)
			}
		}
	}
	return nil
}

// flagValue renders a YAML value as the command line would spell it. YAML numbers decode as
// float64, which fmt prints in exponent form from a million on: "1e+06", which an integer flag
// refuses.
func flagValue(v any) string {
	if f, ok := v.(float64); ok {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}
