package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/kvstore"
)

// identityView is one identity as `palisade identity` prints it.
type identityView struct {
	ID      uint32   `json:"id"`
	Kind    string   `json:"kind"`
	Cluster uint32   `json:"cluster,omitempty"`
	Labels  []string `json:"labels"`
	// Nodes referencing the identity; absent for reserved identities, which are never stored.
	Nodes   []string `json:"nodes,omitempty"`
	Invalid string   `json:"invalid,omitempty"`
}

func newIdentityCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "identity",
		Short: "Inspect the numeric security identities of a cluster",
		Long: `Identities are the numbers policy is enforced on: reserved ones (host, world, ...) and the
cluster-scoped ones allocated in the cluster's etcd for each label set.`,
	}
	kvf := addKvstoreFlags(cmd.PersistentFlags())
	cmd.AddCommand(newIdentityListCommand(kvf), newIdentityGetCommand(kvf))
	return cmd
}

func newIdentityListCommand(kvf *kvstoreFlags) *cobra.Command {
	var noReserved bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List identities with their labels and the nodes using them",
		Args:  cobra.NoArgs,
	}
	out := addOutputFlag(cmd)
	cmd.Flags().BoolVar(&noReserved, "no-reserved", false, "leave out the reserved identities")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx := cmd.Context()
		kv, err := connectKvstore(ctx, kvf)
		if err != nil {
			return err
		}
		defer kv.Close()
		layout, err := clusterLayout(ctx, kv)
		if err != nil {
			return err
		}
		stored, err := identity.ListStored(ctx, kv)
		if err != nil {
			return err
		}
		views := []identityView{}
		if !noReserved {
			for _, id := range identity.ReservedIDs() {
				views = append(views, reservedView(id))
			}
		}
		for _, si := range stored {
			views = append(views, storedView(layout, si))
		}
		return out.render(cmd.OutOrStdout(), views, func(w io.Writer) { identityTable(w, views) })
	}
	return cmd
}

func newIdentityGetCommand(kvf *kvstoreFlags) *cobra.Command {
	var byLabels []string
	cmd := &cobra.Command{
		Use:   "get (ID | RESERVED-NAME | --labels LABEL,...)",
		Short: "Show one identity, by number, reserved name or labels",
		Example: `  palisade identity get 65792
  palisade identity get world
  palisade identity get --labels k8s:app=web,k8s:io.kubernetes.pod.namespace=default,k8s:io.cilium.k8s.policy.cluster=cluster1`,
		Args: cobra.MaximumNArgs(1),
	}
	out := addOutputFlag(cmd)
	cmd.Flags().StringSliceVar(&byLabels, "labels", nil, "look the identity up by its labels")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if (len(args) == 1) == (len(byLabels) > 0) {
			return fmt.Errorf("give either an identity (number or reserved name) or --labels")
		}
		var (
			id   identity.ID
			lbls identity.Labels
			err  error
		)
		if len(args) == 1 {
			if id, err = identity.ParseID(args[0]); err != nil {
				return err
			}
			if _, ok := identity.ReservedLabels(id); ok {
				v := reservedView(id)
				return out.render(cmd.OutOrStdout(), v, func(w io.Writer) { identityTable(w, []identityView{v}) })
			}
		} else if lbls, err = identity.ParseLabels(byLabels...); err != nil {
			return err
		}
		ctx := cmd.Context()
		kv, err := connectKvstore(ctx, kvf)
		if err != nil {
			return err
		}
		defer kv.Close()
		layout, err := clusterLayout(ctx, kv)
		if err != nil {
			return err
		}
		var (
			si    identity.StoredIdentity
			found bool
		)
		if lbls != nil {
			si, found, err = identity.LookupStored(ctx, kv, lbls)
		} else {
			si, found, err = identity.GetStored(ctx, kv, id)
		}
		switch {
		case err != nil:
			return err
		case !found && lbls != nil:
			return fmt.Errorf("no identity for labels %s in etcd at %s", lbls, strings.Join(kv.Endpoints(), ","))
		case !found:
			return fmt.Errorf("identity %d not found in etcd at %s", id, strings.Join(kv.Endpoints(), ","))
		}
		v := storedView(layout, si)
		return out.render(cmd.OutOrStdout(), v, func(w io.Writer) { identityTable(w, []identityView{v}) })
	}
	return cmd
}

// clusterLayout reads the cluster's identity layout; a cluster without a configuration yet has the
// default one.
func clusterLayout(ctx context.Context, kv *kvstore.Client) (identity.Layout, error) {
	cfg, found, err := identity.GetClusterConfig(ctx, kv)
	if err != nil || !found {
		return identity.DefaultLayout, err
	}
	return cfg.Layout()
}

func reservedView(id identity.ID) identityView {
	lbls, _ := identity.ReservedLabels(id)
	return identityView{ID: uint32(id), Kind: identity.KindReserved.String(), Labels: labelStrings(lbls)}
}

func storedView(layout identity.Layout, si identity.StoredIdentity) identityView {
	return identityView{
		ID:      uint32(si.ID),
		Kind:    layout.KindOf(si.ID).String(),
		Cluster: layout.ClusterOf(si.ID),
		Labels:  labelStrings(si.Labels),
		Nodes:   si.Nodes,
		Invalid: si.Invalid,
	}
}

func labelStrings(lbls identity.Labels) []string {
	out := make([]string, len(lbls))
	for i, l := range lbls {
		out[i] = l.String()
	}
	return out
}

func identityTable(w io.Writer, views []identityView) {
	fmt.Fprintln(w, "ID\tKIND\tCLUSTER\tLABELS\tNODES")
	for _, v := range views {
		cluster, nodes := "-", "-"
		if v.Cluster != 0 {
			cluster = fmt.Sprint(v.Cluster)
		}
		if v.Kind != identity.KindReserved.String() {
			nodes = fmt.Sprint(len(v.Nodes))
		}
		labels := strings.Join(v.Labels, ",")
		if v.Invalid != "" {
			labels = "<invalid: " + v.Invalid + ">"
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", v.ID, v.Kind, cluster, labels, nodes)
	}
}
