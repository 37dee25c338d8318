package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
)

func newNodeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "node",
		Aliases: []string{"nodes"},
		Short:   "Show the nodes of this cluster",
	}
	client := addAgentClientFlags(cmd)
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the cluster's nodes and their health",
		Args:    cobra.NoArgs,
	}
	out := addOutputFlag(list)
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		var resp *apiv1.ListNodesResponse
		if err := client.call(cmd.Context(), func(ctx context.Context, c apiv1.AgentClient) (err error) {
			resp, err = c.ListNodes(ctx, &apiv1.ListNodesRequest{})
			return err
		}); err != nil {
			return fmt.Errorf("list nodes: %w", err)
		}
		return out.render(cmd.OutOrStdout(), resp.GetNodes(), func(w io.Writer) {
			fmt.Fprintln(w, "NAME\tCLUSTER\tADDRESS\tPOD CIDR\tSTATE\tVERSION")
			for _, n := range resp.GetNodes() {
				name := n.GetName()
				if n.GetLocal() {
					name += " (this node)"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", name, n.GetCluster(), strings.Join(n.GetAddresses(), ","),
					strings.Join(n.GetPodCidrs(), ","), n.GetState(), n.GetVersion())
			}
		})
	}
	cmd.AddCommand(list)
	return cmd
}
