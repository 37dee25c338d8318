package main

import (
	"github.com/spf13/cobra"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "palisade",
		Short: "Label-based network policy for many clusters, enforced with eBPF",
		Long: `Palisade gives every workload a numeric security identity derived from its labels and
enforces Cilium-compatible L3/L4/L7 policy between them, within and across clusters.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.AddCommand(newVersionCommand())
	root.AddCommand(newAgentCommand(), newEndpointCommand(), newStatusCommand(), newMonitorCommand(), newNodeCommand(), newDevCommand())
	root.AddCommand(newIdentityCommand())
	root.AddCommand(newPolicyCommand())
	root.AddCommand(newKvstoreCommand())
	root.AddCommand(newBPFCommand())
	root.AddCommand(newCertsCommand())
	root.AddCommand(newClustermeshCommand())
	root.AddCommand(newMeshAPIServerCommand())
	return root
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the palisade version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.Println("palisade", version)
			return nil
		},
	}
}
