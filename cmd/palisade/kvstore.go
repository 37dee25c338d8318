package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/kvstore/embedded"
)

// kvstoreFlags are the flags of every command that talks to a cluster's etcd. Add them with
// addKvstoreFlags and build the client configuration with config.
type kvstoreFlags struct {
	endpoints   []string
	prefix      string
	caFile      string
	certFile    string
	keyFile     string
	dialTimeout time.Duration
}

// addKvstoreFlags registers --kvstore-endpoints, --kvstore-prefix, --kvstore-ca-file,
// --kvstore-cert-file, --kvstore-key-file and --kvstore-dial-timeout on fs.
func addKvstoreFlags(fs *pflag.FlagSet) *kvstoreFlags {
	f := &kvstoreFlags{}
	fs.StringSliceVar(&f.endpoints, "kvstore-endpoints", []string{kvstore.DefaultEndpoint},
		"etcd endpoints of the cluster, comma-separated (http://, https://, unix://, unixs://)")
	fs.StringVar(&f.prefix, "kvstore-prefix", kvstore.DefaultPrefix, "key prefix of the cluster's data in etcd")
	fs.StringVar(&f.caFile, "kvstore-ca-file", "", "CA certificate (PEM) that signed etcd's server certificate")
	fs.StringVar(&f.certFile, "kvstore-cert-file", "", "client certificate (PEM) for etcd")
	fs.StringVar(&f.keyFile, "kvstore-key-file", "", "client key (PEM) for etcd")
	fs.DurationVar(&f.dialTimeout, "kvstore-dial-timeout", kvstore.DefaultDialTimeout, "give up when no etcd endpoint answers within this")
	// Shorter spellings some commands used first; kept working, not advertised.
	for alias, target := range map[string]*string{"kvstore-ca": &f.caFile, "kvstore-cert": &f.certFile, "kvstore-key": &f.keyFile} {
		fs.StringVar(target, alias, "", "")
		_ = fs.MarkHidden(alias)
	}
	return f
}

// config is the kvstore client configuration the flags describe.
func (f *kvstoreFlags) config() kvstore.Config {
	cfg := kvstore.Config{Endpoints: f.endpoints, Prefix: f.prefix, DialTimeout: f.dialTimeout}
	if f.caFile != "" || f.certFile != "" || f.keyFile != "" {
		cfg.TLS = &kvstore.TLSConfig{CAFile: f.caFile, CertFile: f.certFile, KeyFile: f.keyFile}
	}
	return cfg
}

func newKvstoreCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kvstore",
		Short: "Run or inspect the etcd that holds a cluster's state",
		Long: `Each cluster keeps its identities, nodes, ipcache and policies in an etcd. "kvstore serve" runs
an embedded single-node etcd, the default for the demo and single-node installs; production clusters
point every component at an existing etcd cluster with --kvstore-endpoints instead.`,
	}
	cmd.AddCommand(newKvstoreServeCommand(), newKvstoreStatusCommand())
	return cmd
}

func newKvstoreServeCommand() *cobra.Command {
	var (
		cfg       embedded.Config
		tls       embedded.TLSServerConfig
		retention time.Duration
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run an embedded single-node etcd until SIGINT or SIGTERM",
		Example: `  palisade kvstore serve --data-dir /var/lib/palisade/etcd
  palisade kvstore serve --listen-client-urls http://127.0.0.1:2379,unix:///run/palisade/etcd.sock
  palisade kvstore serve --listen-client-urls https://10.0.0.5:2379 --advertise-client-urls https://10.0.0.5:2379 \
      --cert-file server.pem --key-file server-key.pem --trusted-ca-file ca.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tls != (embedded.TLSServerConfig{}) {
				cfg.TLS = &tls
			}
			cfg.AutoCompactionRetention = retention
			if retention == 0 {
				cfg.AutoCompactionRetention = -1 // the flag's 0 means off; the Config's 0 means default
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return serveKvstore(ctx, cfg, slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)))
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&cfg.DataDir, "data-dir", "/var/lib/palisade/etcd", "where etcd keeps its data")
	fs.StringVar(&cfg.Name, "name", "palisade", "member name")
	fs.StringSliceVar(&cfg.ClientURLs, "listen-client-urls", []string{kvstore.DefaultEndpoint},
		"client URLs to listen on, comma-separated: http://, https://, unix://, unixs:// (port 0 picks a free port)")
	fs.StringSliceVar(&cfg.AdvertiseClientURLs, "advertise-client-urls", nil,
		"client URLs to publish in the membership (default: the TCP listen URLs)")
	fs.StringVar(&cfg.PeerURL, "listen-peer-urls", "http://127.0.0.1:2380", "raft peer URL (one; the server is single-node)")
	fs.StringVar(&tls.CertFile, "cert-file", "", "server certificate (PEM) for https:// and unixs:// client URLs")
	fs.StringVar(&tls.KeyFile, "key-file", "", "server key (PEM)")
	fs.StringVar(&tls.TrustedCAFile, "trusted-ca-file", "", "CA (PEM) whose client certificates are required and accepted")
	fs.DurationVar(&retention, "auto-compaction-retention", time.Hour, "history kept for watchers to catch up (0: never compact)")
	fs.Int64Var(&cfg.QuotaBackendBytes, "quota-backend-bytes", 0, "database size limit in bytes (0: etcd's default, 2 GiB)")
	fs.StringVar(&cfg.LogLevel, "etcd-log-level", "", "etcd's own log level: debug, info, warn or error (default: silent)")
	return cmd
}

// serveKvstore runs the embedded etcd until ctx ends or the server fails.
func serveKvstore(ctx context.Context, cfg embedded.Config, log *slog.Logger) error {
	srv, err := embedded.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer srv.Close()
	log.Info("etcd serving", "endpoints", strings.Join(srv.Endpoints(), ","), "data-dir", cfg.DataDir)
	select {
	case <-ctx.Done():
		log.Info("stopping etcd")
		return nil
	case err := <-srv.Err():
		return fmt.Errorf("etcd failed: %w", err)
	case <-srv.Done():
		return errors.New("etcd stopped unexpectedly")
	}
}

func newKvstoreStatusCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the health, version and leader of each etcd endpoint",
		Long: `Asks every endpoint for its member's status and checks that the cluster has quorum (a
linearizable read succeeds). Exits non-zero when the cluster is not healthy.`,
		Args: cobra.NoArgs,
	}
	kvf := addKvstoreFlags(cmd.Flags())
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx := cmd.Context()
		c, err := kvstore.New(ctx, kvf.config())
		if err != nil {
			return err
		}
		defer c.Close()
		st, err := c.Status(ctx)
		if err != nil {
			return err
		}
		if err := out.render(cmd.OutOrStdout(), st, func(w io.Writer) { kvstoreStatusTable(w, st) }); err != nil {
			return err
		}
		if !st.Healthy {
			return fmt.Errorf("etcd cluster not healthy: %s", st.Error)
		}
		return nil
	}
	return cmd
}

func kvstoreStatusTable(w io.Writer, st kvstore.Status) {
	orDash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	fmt.Fprintln(w, "ENDPOINT\tREACHABLE\tVERSION\tMEMBER\tLEADER\tDB SIZE\tRAFT TERM\tREVISION\tERROR")
	for _, e := range st.Endpoints {
		leader := e.Leader
		if e.IsLeader {
			leader += " (this)"
		}
		errText := e.Error
		if len(e.Alarms) > 0 {
			errText = strings.TrimSpace(errText + " alarms: " + strings.Join(e.Alarms, ", "))
		}
		size := "-"
		if e.Reachable {
			size = humanize.IBytes(uint64(e.DBSize))
		}
		fmt.Fprintf(w, "%s\t%t\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", e.Endpoint, e.Reachable, orDash(e.Version), orDash(e.MemberID),
			orDash(leader), size, e.RaftTerm, e.Revision, orDash(errText))
	}
	health := "healthy"
	if !st.Healthy {
		health = "NOT HEALTHY: " + st.Error
	}
	fmt.Fprintf(w, "\ncluster %s\t%d members\t%s\n", orDash(st.ClusterID), st.Members, health)
}
