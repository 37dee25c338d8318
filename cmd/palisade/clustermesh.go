package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/spf13/cobra"

	"github.com/palisade-mesh/palisade/certs/token"
)

func newClustermeshCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "clustermesh",
		Short: "Connect clusters into a mesh",
	}
	cmd.AddCommand(newClustermeshTokenCommand())
	cmd.AddCommand(newClustermeshInitCommand(), newClustermeshConnectCommand())
	cmd.AddCommand(newClustermeshStatusCommand())
	return cmd
}

func newClustermeshTokenCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Access tokens that let a remote cluster read this cluster's mesh API",
		Long: `A remote cluster reads this cluster's mesh API only with a token this cluster signed for it
(ES256, with this cluster's signing key). The mesh API server checks it on every call, together with
the client certificate. See docs/clustermesh-security.md.`,
	}
	cmd.AddCommand(newTokenKeygenCommand(), newTokenIssueCommand(), newTokenInspectCommand(), newTokenRevokeCommand())
	return cmd
}

func newTokenKeygenCommand() *cobra.Command {
	var (
		out   string
		force bool
	)
	cmd := &cobra.Command{
		Use:   "keygen --out FILE",
		Short: "Create this cluster's token signing key (ECDSA P-256, mode 0600)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := token.GenerateKey()
			if err != nil {
				return err
			}
			if err := token.WriteKey(out, key, force); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created signing key %s (kid %s)\n", out, token.KeyID(&key.PublicKey))
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "file for the key (required)")
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing key (tokens it signed stop verifying once the server drops it)")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

// issuedToken is what `token issue -o json|yaml` prints.
type issuedToken struct {
	Token     string    `json:"token"`
	ID        string    `json:"id"`
	Issuer    string    `json:"issuer"`
	Subject   string    `json:"subject"`
	Scopes    []string  `json:"scopes"`
	ExpiresAt time.Time `json:"expiresAt"`
}

func newTokenIssueCommand() *cobra.Command {
	var (
		reader, keyFile, cluster string
		ttl                      time.Duration
		scopes                   []string
	)
	cmd := &cobra.Command{
		Use:   "issue --for CLUSTER --ttl 24h --key FILE --cluster NAME",
		Short: "Mint a token letting cluster CLUSTER read this cluster's mesh API",
		Long: `Issue prints the token on stdout (nothing else, so it can be piped into a secret) and its ID
and expiry on stderr; -o json or yaml prints all of it on stdout.`,
		Args: cobra.NoArgs,
	}
	output := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		key, err := token.LoadKey(keyFile)
		if err != nil {
			return err
		}
		iss, err := token.NewIssuer(cluster, key)
		if err != nil {
			return err
		}
		signed, claims, err := iss.Issue(reader, ttl, scopes)
		if err != nil {
			return err
		}
		view := issuedToken{Token: signed, ID: claims.ID, Issuer: claims.Issuer, Subject: claims.Subject, Scopes: claims.Scopes, ExpiresAt: claims.ExpiresAt.UTC()}
		return output.render(cmd.OutOrStdout(), view, func(tw io.Writer) {
			fmt.Fprintln(tw, signed)
			fmt.Fprintf(cmd.ErrOrStderr(), "token %s for %s, scopes %s, expires %s\n", claims.ID, reader, strings.Join(claims.Scopes, ","), view.ExpiresAt.Format(time.RFC3339))
		})
	}
	f := cmd.Flags()
	f.StringVar(&reader, "for", "", "the cluster that will read with this token (required)")
	f.DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid")
	f.StringSliceVar(&scopes, "scope", []string{token.ScopeRead}, "scopes to grant")
	f.StringVar(&keyFile, "key", "", "this cluster's signing key (required)")
	f.StringVar(&cluster, "cluster", "", "this cluster's name, the token's issuer (required)")
	for _, name := range []string{"for", "key", "cluster"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

// inspectedToken is what `token inspect` shows. Verified is always false: inspect has no key.
type inspectedToken struct {
	Verified  bool       `json:"verified"`
	Algorithm string     `json:"algorithm"`
	KeyID     string     `json:"keyID,omitempty"`
	ID        string     `json:"id,omitempty"`
	Issuer    string     `json:"issuer,omitempty"`
	Subject   string     `json:"subject,omitempty"`
	Audience  []string   `json:"audience,omitempty"`
	Scopes    []string   `json:"scopes,omitempty"`
	IssuedAt  *time.Time `json:"issuedAt,omitempty"`
	NotBefore *time.Time `json:"notBefore,omitempty"`
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
}

func newTokenInspectCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inspect TOKEN|-",
		Short: "Decode a token and show its claims WITHOUT verifying it",
		Args:  cobra.ExactArgs(1),
	}
	output := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		raw := args[0]
		if raw == "-" {
			line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("read token from stdin: %w", err)
			}
			raw = line
		}
		raw = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(raw), "Bearer "))
		claims := &token.Claims{}
		t, _, err := jwt.NewParser().ParseUnverified(raw, claims)
		if err != nil {
			return fmt.Errorf("decode token: %w", err)
		}
		v := inspectedToken{ID: claims.ID, Issuer: claims.Issuer, Subject: claims.Subject, Audience: claims.Audience, Scopes: claims.Scopes,
			IssuedAt: numericTime(claims.IssuedAt), NotBefore: numericTime(claims.NotBefore), ExpiresAt: numericTime(claims.ExpiresAt)}
		v.Algorithm, _ = t.Header["alg"].(string)
		v.KeyID, _ = t.Header["kid"].(string)
		fmt.Fprintln(cmd.ErrOrStderr(), "NOT VERIFIED: the signature, issuer and expiry were not checked; only the mesh API server can verify a token")
		return output.render(cmd.OutOrStdout(), v, func(tw io.Writer) {
			row := func(k, val string) {
				if val != "" {
					fmt.Fprintf(tw, "%s\t%s\n", k, val)
				}
			}
			row("VERIFIED", "no")
			row("ALGORITHM", v.Algorithm)
			row("KEY ID", v.KeyID)
			row("ID", v.ID)
			row("ISSUER", v.Issuer)
			row("SUBJECT", v.Subject)
			row("AUDIENCE", strings.Join(v.Audience, ","))
			row("SCOPES", strings.Join(v.Scopes, ","))
			row("ISSUED", formatOptionalTime(v.IssuedAt))
			row("NOT BEFORE", formatOptionalTime(v.NotBefore))
			row("EXPIRES", formatOptionalTime(v.ExpiresAt))
		})
	}
	return cmd
}

func newTokenRevokeCommand() *cobra.Command {
	var (
		file, note string
	)
	cmd := &cobra.Command{
		Use:   "revoke ID --revocations FILE",
		Short: "Add a token ID to the revocation list the mesh API server reads",
		Long: `Revoke appends ID to FILE (creating it), replacing the file atomically. The mesh API server
re-reads the file within a second and refuses the token from then on. Copy the file to every
replica of the mesh API server of the cluster that issued the token.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			added, err := token.Revoke(file, args[0], note, time.Now())
			if err != nil {
				return err
			}
			if !added {
				fmt.Fprintf(cmd.OutOrStdout(), "token %s was already revoked in %s\n", args[0], file)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked token %s in %s\n", args[0], file)
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "revocations", "", "the revocation list file (required)")
	cmd.Flags().StringVar(&note, "note", "", "why, kept as a comment in the file")
	_ = cmd.MarkFlagRequired("revocations")
	return cmd
}

func numericTime(d *jwt.NumericDate) *time.Time {
	if d == nil {
		return nil
	}
	t := d.UTC()
	return &t
}

func formatOptionalTime(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.Format(time.RFC3339)
}
