package main

import (
	"fmt"
	"io"
	"net"
	"time"

	"github.com/spf13/cobra"

	"github.com/palisade-mesh/palisade/clustermesh"
)

func newClustermeshInitCommand() *cobra.Command {
	var opts clustermesh.InitOptions
	cmd := &cobra.Command{
		Use:   "init --cluster NAME --id N --address HOST:PORT --ca-dir CA --dir DIR",
		Short: "Create a cluster directory: certificates, token signing key and cluster.yaml",
		Long: `Init issues the cluster's mesh API server and agent certificates from the mesh CA, creates the
cluster's token signing key and records its name, ID and mesh API server address in DIR/cluster.yaml.
Run it once per cluster, then connect clusters pairwise with 'palisade clustermesh connect'.`,
		Args: cobra.NoArgs,
	}
	var ips []net.IP
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		opts.IPs = ips
		d, err := clustermesh.InitClusterDir(opts)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "cluster %s (ID %d) in %s: mesh API server at %s, trust domain %s\n", d.Info.Name, d.Info.ID, d.Path, d.Info.Address, d.Info.TrustDomain)
		fmt.Fprintf(cmd.OutOrStdout(), "mesh API server: --cert-file %s --key-file %s --ca-file %s --signing-key %s\n", d.ServerCert().Cert, d.ServerCert().Key, d.CABundle(), d.SigningKey())
		fmt.Fprintf(cmd.OutOrStdout(), "agents, once connected: --clustermesh-config %s\n", d.Remotes())
		return nil
	}
	f := cmd.Flags()
	f.StringVar(&opts.Name, "cluster", "", "cluster name (required)")
	f.Uint32Var(&opts.ID, "id", 0, "cluster ID, 1..255, unique in the mesh (required)")
	f.StringVar(&opts.Address, "address", "", "host:port where other clusters reach this cluster's mesh API server (required)")
	f.StringVar(&opts.CADir, "ca-dir", "", "directory of the mesh CA (palisade certs init) (required)")
	f.StringVar(&opts.Dir, "dir", "", "the cluster directory to create (required)")
	f.StringSliceVar(&opts.DNSNames, "dns", nil, "extra DNS names for the server certificate")
	f.IPSliceVar(&ips, "ip", nil, "extra IP addresses for the server certificate")
	f.BoolVar(&opts.Force, "force", false, "replace existing files in DIR")
	for _, name := range []string{"cluster", "id", "address", "ca-dir", "dir"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

func newClustermeshConnectCommand() *cobra.Command {
	var (
		dir, peer string
		ttl       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "connect --dir CLUSTER_DIR --peer-dir PEER_DIR",
		Short: "Let two clusters read each other's mesh API",
		Long: `Connect checks that the two clusters' names and IDs differ and that each trusts the other's
certificates, then has each cluster's signing key issue an access token for the other and writes,
in each cluster directory, remotes/<peer>.yaml and remotes/<peer>.token. Agents started with
--clustermesh-config <dir>/remotes pick the new cluster up within a second. Run it again before the
tokens expire to renew them.`,
		Args: cobra.NoArgs,
	}
	output := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		a, err := clustermesh.OpenClusterDir(dir)
		if err != nil {
			return err
		}
		b, err := clustermesh.OpenClusterDir(peer)
		if err != nil {
			return err
		}
		conns, err := clustermesh.Connect(a, b, ttl)
		if err != nil {
			return fmt.Errorf("connect %s and %s: %w", a.Info.Name, b.Info.Name, err)
		}
		return output.render(cmd.OutOrStdout(), conns, func(tw io.Writer) {
			fmt.Fprintln(tw, "READER\tREADS\tCONFIG\tTOKEN ID\tEXPIRES")
			for _, c := range conns {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Reader, c.Served, c.Config, c.TokenID, c.ExpiresAt.Format(time.RFC3339))
			}
		})
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "this cluster's directory (palisade clustermesh init) (required)")
	f.StringVar(&peer, "peer-dir", "", "the other cluster's directory (required)")
	f.DurationVar(&ttl, "ttl", 30*24*time.Hour, "how long the access tokens are valid")
	_ = cmd.MarkFlagRequired("dir")
	_ = cmd.MarkFlagRequired("peer-dir")
	return cmd
}
