package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
)

func newEndpointCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "endpoint",
		Aliases: []string{"endpoints", "ep"},
		Short:   "Manage the endpoints of this node",
	}
	client := addAgentClientFlags(cmd)
	cmd.AddCommand(newEndpointCreateCommand(client), newEndpointDeleteCommand(client),
		newEndpointListCommand(client), newEndpointGetCommand(client))
	return cmd
}

func newEndpointCreateCommand(client *agentClient) *cobra.Command {
	var (
		req    apiv1.CreateEndpointRequest
		labels []string
	)
	out := outputFormat("table")
	cmd := &cobra.Command{
		Use:   "create --netns PATH --labels key=value,...",
		Short: "Make a network namespace an endpoint of this node",
		Example: `  ip netns add deathstar
  palisade endpoint create --netns /var/run/netns/deathstar --labels org=empire,class=deathstar`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.NetnsPath == "" {
				return fmt.Errorf("--netns is required")
			}
			if !strings.Contains(req.NetnsPath, "/") {
				req.NetnsPath = "/var/run/netns/" + req.NetnsPath
			}
			req.Labels = labels
			var ep *apiv1.Endpoint
			if err := client.call(cmd.Context(), func(ctx context.Context, c apiv1.AgentClient) (err error) {
				ep, err = c.CreateEndpoint(ctx, &req)
				return err
			}); err != nil {
				return fmt.Errorf("create endpoint: %w", err)
			}
			return printEndpoints(cmd.OutOrStdout(), out, []*apiv1.Endpoint{ep})
		},
	}
	cmd.Flags().StringVar(&req.NetnsPath, "netns", "", "network namespace path or name under /var/run/netns")
	cmd.Flags().StringSliceVar(&labels, "labels", nil, "labels, key=value (k8s source) or source:key=value")
	cmd.Flags().StringVar(&req.Namespace, "namespace", "default", "the endpoint's namespace (policies are scoped by it)")
	cmd.Flags().StringVar(&req.Name, "name", "", "a name for people (default: the namespace's name)")
	cmd.Flags().VarP(&out, "output", "o", "output format: table, json or yaml")
	return cmd
}

func newEndpointDeleteCommand(client *agentClient) *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID",
		Short: "Remove an endpoint and release its address and identity",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseEndpointID(args[0])
			if err != nil {
				return err
			}
			if err := client.call(cmd.Context(), func(ctx context.Context, c apiv1.AgentClient) error {
				_, err := c.DeleteEndpoint(ctx, &apiv1.DeleteEndpointRequest{Id: id})
				return err
			}); err != nil {
				return fmt.Errorf("delete endpoint %d: %w", id, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "endpoint %d deleted\n", id)
			return nil
		},
	}
}

func newEndpointListCommand(client *agentClient) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the endpoints of this node",
		Args:    cobra.NoArgs,
	}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		var resp *apiv1.ListEndpointsResponse
		if err := client.call(cmd.Context(), func(ctx context.Context, c apiv1.AgentClient) (err error) {
			resp, err = c.ListEndpoints(ctx, &apiv1.ListEndpointsRequest{})
			return err
		}); err != nil {
			return fmt.Errorf("list endpoints: %w", err)
		}
		return printEndpoints(cmd.OutOrStdout(), *out, resp.GetEndpoints())
	}
	return cmd
}

func newEndpointGetCommand(client *agentClient) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "get ID",
		Short: "Show one endpoint",
		Args:  cobra.ExactArgs(1),
	}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		id, err := parseEndpointID(args[0])
		if err != nil {
			return err
		}
		var ep *apiv1.Endpoint
		if err := client.call(cmd.Context(), func(ctx context.Context, c apiv1.AgentClient) (err error) {
			ep, err = c.GetEndpoint(ctx, &apiv1.GetEndpointRequest{Id: id})
			return err
		}); err != nil {
			return fmt.Errorf("get endpoint %d: %w", id, err)
		}
		return printEndpoints(cmd.OutOrStdout(), *out, []*apiv1.Endpoint{ep})
	}
	return cmd
}

func parseEndpointID(s string) (uint32, error) {
	id, err := strconv.ParseUint(s, 10, 16)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("endpoint ID %q: want a number from 1 to 65535 (see `palisade endpoint list`)", s)
	}
	return uint32(id), nil
}

func printEndpoints(w io.Writer, out outputFormat, eps []*apiv1.Endpoint) error {
	return out.render(w, eps, func(tw io.Writer) {
		fmt.Fprintln(tw, "ID\tNAME\tIDENTITY\tIPV4\tINGRESS\tEGRESS\tSTATE\tLABELS")
		for _, ep := range eps {
			state := ep.GetState()
			if ep.GetLastError() != "" {
				state += " (" + ep.GetLastError() + ")"
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", ep.GetId(), ep.GetNamespace()+"/"+ep.GetName(),
				ep.GetIdentity(), ep.GetIpv4(), enforcement(ep.GetIngressEnforced()), enforcement(ep.GetEgressEnforced()),
				state, strings.Join(userLabels(ep.GetLabels()), ","))
		}
	})
}

func enforcement(on bool) string {
	if on {
		return "enforced"
	}
	return "open"
}

// userLabels hides the labels every endpoint carries (namespace, cluster) from the table.
func userLabels(ls []string) []string {
	var out []string
	for _, l := range ls {
		if strings.HasPrefix(l, "k8s:io.kubernetes.pod.namespace=") || strings.HasPrefix(l, "k8s:io.cilium.k8s.policy.cluster=") {
			continue
		}
		out = append(out, l)
	}
	return out
}
