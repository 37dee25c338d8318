package main

import (
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/palisade-mesh/palisade/certs"
)

func newCertsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Create the mesh CA and issue cluster certificates",
		Long: `The cluster mesh authenticates clusters with mTLS. One CA per mesh (trust domain) signs a
certificate for each cluster's mesh API server (role server) and for the agents and tools that read
remote clusters (roles agent and client). Each certificate names its holder with
spiffe://<trust-domain>/cluster/<name>/<role>. See docs/clustermesh-security.md.`,
	}
	cmd.AddCommand(newCertsInitCommand(), newCertsIssueCommand(), newCertsShowCommand())
	return cmd
}

func newCertsInitCommand() *cobra.Command {
	var (
		trustDomain string
		dir         string
		validity    time.Duration
		force       bool
	)
	cmd := &cobra.Command{
		Use:   "init --trust-domain DOMAIN --dir DIR",
		Short: "Create the mesh CA (ECDSA P-256): DIR/ca.crt and DIR/ca.key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ca, err := certs.NewCA(certs.CAOptions{TrustDomain: trustDomain, Validity: validity})
			if err != nil {
				return err
			}
			if err := ca.Write(dir, force); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created mesh CA for trust domain %s in %s (valid until %s)\n", trustDomain, dir, ca.Cert.NotAfter.UTC().Format(time.RFC3339))
			fmt.Fprintf(cmd.OutOrStdout(), "keep %s/%s offline; distribute %s/%s to every cluster\n", dir, certs.CAKeyFile, dir, certs.CACertFile)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&trustDomain, "trust-domain", "", "the mesh's SPIFFE trust domain, e.g. mesh.example.org (required)")
	f.StringVar(&dir, "dir", "", "directory for ca.crt and ca.key (required)")
	f.DurationVar(&validity, "validity", certs.DefaultCAValidity, "how long the CA is valid")
	f.BoolVar(&force, "force", false, "replace an existing CA in DIR (every certificate it signed stops being trusted)")
	_ = cmd.MarkFlagRequired("trust-domain")
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}

func newCertsIssueCommand() *cobra.Command {
	var (
		cluster, role, caDir, out string
		dnsNames                  []string
		ips                       []net.IP
		validity                  time.Duration
		force                     bool
	)
	cmd := &cobra.Command{
		Use:   "issue --cluster NAME --role server|client|agent --ca-dir DIR --out DIR",
		Short: "Issue a certificate for a cluster's mesh API server, agents or clients",
		Long: `Issue writes OUT/<cluster>-<role>.crt, OUT/<cluster>-<role>.key (0600) and the trust bundle
OUT/ca.crt. Files are replaced atomically, so a running server or agent picks up a certificate
re-issued with --force on its next handshake.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := certs.ParseRole(role)
			if err != nil {
				return err
			}
			ca, err := certs.LoadCA(caDir)
			if err != nil {
				return err
			}
			is, err := ca.Issue(certs.IssueOptions{Cluster: cluster, Role: r, DNSNames: dnsNames, IPs: ips, Validity: validity})
			if err != nil {
				return err
			}
			paths, err := is.Write(out, ca.CertPEM(), force)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "issued %s (valid until %s)\n", is.ID, is.Cert.NotAfter.UTC().Format(time.RFC3339))
			fmt.Fprintf(cmd.OutOrStdout(), "certificate: %s\nkey:         %s\nCA bundle:   %s\n", paths.Cert, paths.Key, paths.CA)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cluster, "cluster", "", "cluster name (required)")
	f.StringVar(&role, "role", "", "server (mesh API server), agent (node agent) or client (tools) (required)")
	f.StringVar(&caDir, "ca-dir", "", "directory holding ca.crt and ca.key (required)")
	f.StringVar(&out, "out", "", "directory to write the certificate, key and CA bundle to (required)")
	f.StringSliceVar(&dnsNames, "dns", nil, "extra DNS names (SANs), comma-separated or repeated")
	f.IPSliceVar(&ips, "ip", nil, "IP addresses (SANs), comma-separated or repeated")
	f.DurationVar(&validity, "validity", certs.DefaultCertValidity, "how long the certificate is valid (at most until the CA expires)")
	f.BoolVar(&force, "force", false, "replace existing files in OUT")
	for _, name := range []string{"cluster", "role", "ca-dir", "out"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

func newCertsShowCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show FILE",
		Short: "Show the certificates in a PEM file: subject, SPIFFE ID, SANs, validity, issuer",
		Args:  cobra.ExactArgs(1),
	}
	output := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		descs, err := certs.DescribeFile(args[0], time.Now())
		if err != nil {
			return err
		}
		return output.render(cmd.OutOrStdout(), descs, func(tw io.Writer) {
			for i, d := range descs {
				if i > 0 {
					fmt.Fprintln(tw)
				}
				row := func(k, v string) {
					if v != "" {
						fmt.Fprintf(tw, "%s\t%s\n", k, v)
					}
				}
				row("SUBJECT", d.Subject)
				row("SPIFFE ID", d.SPIFFEID)
				row("URIS", strings.Join(d.URIs, ", "))
				row("DNS", strings.Join(d.DNSNames, ", "))
				row("IPS", strings.Join(d.IPs, ", "))
				row("USAGE", strings.Join(d.Usages, ", "))
				row("ISSUER", d.Issuer)
				row("SERIAL", d.Serial)
				row("VALID", d.NotBefore.Format(time.RFC3339)+" to "+d.NotAfter.Format(time.RFC3339)+" ("+d.Status+")")
			}
		})
	}
	return cmd
}
