package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
)

func newStatusCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the health of this node's agent",
		Args:  cobra.NoArgs,
	}
	client := addAgentClientFlags(cmd)
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		var st *apiv1.StatusResponse
		if err := client.call(cmd.Context(), func(ctx context.Context, c apiv1.AgentClient) (err error) {
			st, err = c.Status(ctx, &apiv1.StatusRequest{})
			return err
		}); err != nil {
			return fmt.Errorf("agent status: %w", err)
		}
		return out.render(cmd.OutOrStdout(), st, func(w io.Writer) {
			fmt.Fprintf(w, "Node:\t%s (cluster %s, ID %d)\n", st.GetNode(), st.GetCluster(), st.GetClusterId())
			fmt.Fprintf(w, "Version:\t%s, up %s\n", st.GetVersion(), time.Since(st.GetStarted().AsTime()).Round(time.Second))
			for _, comp := range []*apiv1.ComponentStatus{st.GetKvstore(), st.GetDatapath(), st.GetHealth()} {
				fmt.Fprintf(w, "%s:\t%s\t%s\n", titleWord(comp.GetName()), okWord(comp.GetOk()), comp.GetMessage())
			}
			fmt.Fprintf(w, "Endpoints:\t%d/%d ready\n", st.GetEndpointsReady(), st.GetEndpoints())
			fmt.Fprintf(w, "Identities:\t%d\n", st.GetIdentities())
			fmt.Fprintf(w, "Policy:\t%d %s, revision %d\n", st.GetPolicies(), plural(int(st.GetPolicies()), "policy", "policies"), st.GetPolicyRevision())
			if cm := st.GetClustermesh(); cm != nil {
				fmt.Fprintf(w, "Clustermesh:\t%s\t%s\n", okWord(cm.GetOk()), cm.GetMessage())
				for _, c := range st.GetClusters() {
					fmt.Fprintf(w, "  %s:\t%s\t%s\n", c.GetName(), okWord(c.GetOk()), c.GetMessage())
				}
			}
		})
	}
	return cmd
}

func okWord(ok bool) string {
	if ok {
		return "OK"
	}
	return "FAILING"
}

func titleWord(s string) string {
	if s == "" {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}
