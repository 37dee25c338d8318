package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

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
			fmt.Fprintln(w, "NAME\tADDRESS\tSTATE\tSINCE\tRTT\tPOD CIDR\tVERSION")
			now := time.Now()
			for _, n := range resp.GetNodes() {
				name := n.GetName()
				if n.GetLocal() {
					name += " (this node)"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, strings.Join(n.GetAddresses(), ","), n.GetState(),
					nodeSince(n, now), nodeRTT(n), strings.Join(n.GetPodCidrs(), ","), n.GetVersion())
			}
		})
	}
	cmd.AddCommand(list, newGossipKeysCommand())
	return cmd
}

// nodeSince shows how long a node has been in its state, e.g. "12s ago".
func nodeSince(n *apiv1.Node, now time.Time) string {
	if n.GetSince() == nil {
		return "-"
	}
	return now.Sub(n.GetSince().AsTime()).Round(time.Second).String() + " ago"
}

// nodeRTT shows this node's last probe round trip to n.
func nodeRTT(n *apiv1.Node) string {
	if n.GetRtt() == nil {
		return "-"
	}
	return n.GetRtt().AsDuration().Round(time.Microsecond).String()
}
