package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/palisade-mesh/palisade/agent"
	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/kvstore/embedded"
	"github.com/palisade-mesh/palisade/policy/api"
)

func init() {
	policySubcommands = append(policySubcommands, newPolicyImportCommand, newPolicyGetCommand, newPolicyDeleteCommand)
}

func connectKvstore(ctx context.Context, f *kvstoreFlags) (*kvstore.Client, error) {
	kv, err := kvstore.New(ctx, f.config())
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %s (--kvstore-endpoints): %w", strings.Join(f.endpoints, ","), err)
	}
	return kv, nil
}

func newPolicyImportCommand() *cobra.Command {
	var files policyFileFlags
	cmd := &cobra.Command{
		Use:   "import -f FILE",
		Short: "Validate policy files and store all their policies in one transaction",
		Long: `Import validates every document of every file first; if any is invalid nothing is
written. Then all policies are written in one etcd transaction, so every agent sees either none or
all of them. A policy with the same kind, namespace and name as a stored one replaces it.`,
		Example: `  palisade policy import -f examples/starwars/l3-l4.yaml`,
		Args:    cobra.NoArgs,
	}
	files.register(cmd)
	kvf := addKvstoreFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		loaded, err := files.load(cmd.InOrStdin())
		printWarnings(cmd.ErrOrStderr(), loaded)
		if err != nil {
			return fmt.Errorf("nothing imported:\n%w", err)
		}
		var ops []kvstore.Op
		var names []string
		for _, lf := range loaded {
			for _, p := range lf.policies {
				b, err := p.CanonicalJSON()
				if err != nil {
					return err
				}
				ops = append(ops, kvstore.OpPut(agent.PolicyKey(p.Key()), b, kvstore.NoLease))
				names = append(names, p.Key().Kind+" "+p.Key().DocName())
			}
		}
		if len(ops) == 0 {
			return fmt.Errorf("nothing imported: the files hold no policy")
		}
		kv, err := connectKvstore(cmd.Context(), kvf)
		if err != nil {
			return err
		}
		defer kv.Close()
		res, err := kv.Txn(cmd.Context(), nil, ops, nil)
		if err != nil && strings.Contains(err.Error(), "too many operations in txn request") {
			return fmt.Errorf("nothing imported: etcd refuses a transaction of %d policies (its --max-txn-ops is lower; etcd's default is 128, `palisade kvstore serve` allows %d): raise it, or split the file", len(ops), embedded.DefaultMaxTxnOps)
		}
		if err != nil {
			return fmt.Errorf("import %d %s: %w", len(ops), plural(len(ops), "policy", "policies"), err)
		}
		w := cmd.OutOrStdout()
		for _, n := range names {
			fmt.Fprintf(w, "imported %s\n", n)
		}
		fmt.Fprintf(w, "%d %s imported at revision %d\n", len(ops), plural(len(ops), "policy", "policies"), res.Revision)
		return nil
	}
	return cmd
}

// storedPolicy is one policy as `policy get -o json|yaml` shows it.
type storedPolicy struct {
	Kind      string      `json:"kind"`
	Namespace string      `json:"namespace,omitempty"`
	Name      string      `json:"name"`
	Revision  int64       `json:"revision"`
	Policy    *api.Policy `json:"policy"`
}

func listStoredPolicies(ctx context.Context, kv *kvstore.Client) ([]storedPolicy, error) {
	kvs, _, err := kv.List(ctx, agent.PoliciesPrefix)
	if err != nil {
		return nil, fmt.Errorf("list policies: %w", err)
	}
	var out []storedPolicy
	for _, e := range kvs {
		p, err := api.ParseStored(e.Value)
		if err != nil {
			return nil, fmt.Errorf("stored policy %s: %w", e.Key, err)
		}
		k := p.Key()
		out = append(out, storedPolicy{Kind: k.Kind, Namespace: k.Namespace, Name: k.Name, Revision: e.ModRevision, Policy: p})
	}
	return out, nil
}

func newPolicyGetCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "get [NAME]",
		Short: "List the stored policies, or show one",
		Args:  cobra.MaximumNArgs(1),
	}
	out := addOutputFlag(cmd)
	kvf := addKvstoreFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		kv, err := connectKvstore(cmd.Context(), kvf)
		if err != nil {
			return err
		}
		defer kv.Close()
		pols, err := listStoredPolicies(cmd.Context(), kv)
		if err != nil {
			return err
		}
		if len(args) == 1 {
			pols = slices.DeleteFunc(pols, func(p storedPolicy) bool { return p.Name != args[0] })
			if len(pols) == 0 {
				return fmt.Errorf("no policy named %q (see `palisade policy get`)", args[0])
			}
		}
		return out.render(cmd.OutOrStdout(), pols, func(w io.Writer) {
			fmt.Fprintln(w, "KIND\tNAMESPACE\tNAME\tRULES\tREVISION\tDESCRIPTION")
			for _, p := range pols {
				rules := p.Policy.Rules()
				desc := ""
				for _, r := range rules {
					if r.Rule.Description != "" {
						desc = r.Rule.Description
						break
					}
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%s\n", p.Kind, dashIfEmpty(p.Namespace), p.Name, len(rules), p.Revision, desc)
			}
		})
	}
	return cmd
}

func newPolicyDeleteCommand() *cobra.Command {
	var (
		files policyFileFlags
		all   bool
	)
	cmd := &cobra.Command{
		Use:   "delete [NAME ...] | -f FILE | --all",
		Short: "Delete stored policies by name, those a file defines, or all",
		Args:  cobra.ArbitraryArgs,
	}
	cmd.Flags().StringArrayVarP(&files.files, "file", "f", nil, "delete the policies this file defines")
	cmd.Flags().StringVarP(&files.namespace, "namespace", "n", "default", "namespace of the policies to delete")
	cmd.Flags().BoolVar(&all, "all", false, "delete every stored policy")
	kvf := addKvstoreFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if !all && len(args) == 0 && len(files.files) == 0 {
			return fmt.Errorf("name the policies to delete, or give -f FILE or --all")
		}
		kv, err := connectKvstore(cmd.Context(), kvf)
		if err != nil {
			return err
		}
		defer kv.Close()
		stored, err := listStoredPolicies(cmd.Context(), kv)
		if err != nil {
			return err
		}
		want := map[api.Key]bool{}
		if len(files.files) > 0 {
			loaded, err := files.load(cmd.InOrStdin())
			if err != nil {
				return fmt.Errorf("nothing deleted:\n%w", err)
			}
			for _, lf := range loaded {
				for _, p := range lf.policies {
					want[p.Key()] = true
				}
			}
		}
		var ops []kvstore.Op
		for _, p := range stored {
			k := p.Policy.Key()
			named := slices.Contains(args, p.Name) && (p.Namespace == "" || p.Namespace == files.namespace)
			if all || named || want[k] {
				ops = append(ops, kvstore.OpDelete(agent.PolicyKey(k)))
				fmt.Fprintf(cmd.OutOrStdout(), "deleting %s %s\n", k.Kind, k.DocName())
			}
		}
		if len(ops) == 0 {
			return fmt.Errorf("no stored policy matches (see `palisade policy get`)")
		}
		if _, err := kv.Txn(cmd.Context(), nil, ops, nil); err != nil {
			return fmt.Errorf("delete policies: %w", err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%d %s deleted\n", len(ops), plural(len(ops), "policy", "policies"))
		return nil
	}
	return cmd
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
