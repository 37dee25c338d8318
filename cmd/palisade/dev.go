package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/palisade-mesh/palisade/internal/demo"
	"github.com/palisade-mesh/palisade/internal/playground"
)

func newDevCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a local playground cluster in network namespaces",
		Long: `The playground runs a whole cluster on this machine, inside network namespaces: etcd in a
control-plane namespace, one namespace per node with its agent, and endpoints with demo workloads.
Nothing is reachable from, or sends traffic outside, this machine. Needs root.`,
		Example: `  palisade dev up --nodes 2
  palisade dev endpoint add deathstar --node node1 --labels org=empire,class=deathstar --workload deathstar
  palisade dev endpoint add xwing --node node2 --labels org=alliance,class=xwing
  palisade dev request --from xwing --to deathstar -X POST /v1/request-landing
  palisade dev down`,
	}
	dir := cmd.PersistentFlags().String("dir", playground.DefaultDir, "the playground's state directory")
	cmd.AddCommand(newDevUpCommand(dir), newDevDownCommand(dir), newDevStatusCommand(dir),
		newDevEndpointCommand(dir), newDevRequestCommand(dir), newDevServeDeathstarCommand())
	return cmd
}

func newDevUpCommand(dir *string) *cobra.Command {
	var opts playground.Options
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start a playground cluster",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Dir = *dir
			st, err := playground.Up(cmd.Context(), opts, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "playground %q is up with %d nodes\n\n", st.Cluster, len(st.Nodes))
			fmt.Fprintf(w, "etcd:  --kvstore-endpoints %s\n", st.KvstoreEndpoint())
			for _, n := range st.Nodes {
				fmt.Fprintf(w, "%s: --socket %s   (pod CIDR %s, log %s)\n", n.Name, n.Socket, n.PodCIDR, n.Agent.Log)
			}
			fmt.Fprintf(w, "\nnext: palisade dev endpoint add NAME --node %s --labels key=value\n", st.Nodes[0].Name)
			return nil
		},
	}
	cmd.Flags().IntVar(&opts.Nodes, "nodes", 2, "number of nodes (1..8)")
	cmd.Flags().StringVar(&opts.Cluster, "cluster-name", "playground", "cluster name")
	cmd.Flags().Uint32Var(&opts.ClusterID, "cluster-id", 1, "cluster ID")
	return cmd
}

func newDevDownCommand(dir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop the playground and remove every trace of it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := playground.Load(*dir)
			if err != nil {
				return err
			}
			if err := st.Down(); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "playground removed")
			return nil
		},
	}
}

func newDevStatusCommand(dir *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "List the playground's nodes and endpoints",
		Args:  cobra.NoArgs,
	}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		st, err := playground.Load(*dir)
		if err != nil {
			return err
		}
		return out.render(cmd.OutOrStdout(), st, func(w io.Writer) {
			fmt.Fprintln(w, "ENDPOINT\tNODE\tID\tIDENTITY\tIPV4\tLABELS")
			for _, e := range st.Endpoints {
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\t%s\n", e.Name, e.Node, e.ID, e.Identity, e.IPv4, strings.Join(e.Labels, ","))
			}
		})
	}
	return cmd
}

func newDevEndpointCommand(dir *string) *cobra.Command {
	cmd := &cobra.Command{Use: "endpoint", Short: "Add endpoints with demo workloads"}
	var (
		node, workload string
		labels         []string
	)
	add := &cobra.Command{
		Use:   "add NAME --node NODE --labels key=value,...",
		Short: "Create a namespace, make it an endpoint of a node and start its workload",
		Args:  cobra.ExactArgs(1),
	}
	out := addOutputFlag(add)
	add.RunE = func(cmd *cobra.Command, args []string) error {
		st, err := playground.Load(*dir)
		if err != nil {
			return err
		}
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		ep, err := st.AddEndpoint(cmd.Context(), args[0], node, labels, workload, exe)
		if err != nil {
			return err
		}
		return out.render(cmd.OutOrStdout(), ep, func(w io.Writer) {
			fmt.Fprintf(w, "endpoint %s on %s: ID %d, identity %d, %s\n", ep.Name, ep.Node, ep.ID, ep.Identity, ep.IPv4)
		})
	}
	add.Flags().StringVar(&node, "node", "node1", "node to put the endpoint on")
	add.Flags().StringSliceVar(&labels, "labels", nil, "labels, key=value")
	add.Flags().StringVar(&workload, "workload", "", "workload to run: deathstar (HTTP on port 80), or none")
	cmd.AddCommand(add)
	return cmd
}

func newDevRequestCommand(dir *string) *cobra.Command {
	var (
		from, to, method string
		timeout          time.Duration
	)
	cmd := &cobra.Command{
		Use:   "request --from NAME --to NAME [-X METHOD] PATH",
		Short: "Send an HTTP request from one playground endpoint to another",
		Args:  cobra.ExactArgs(1),
	}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		st, err := playground.Load(*dir)
		if err != nil {
			return err
		}
		resp, err := st.Request(cmd.Context(), from, to, method, args[0], timeout)
		if err != nil {
			return err
		}
		return out.render(cmd.OutOrStdout(), resp, func(w io.Writer) {
			fmt.Fprintf(w, "%s %s %s -> %s: %s\n", from, method, args[0], to, resp.Verdict())
		})
	}
	cmd.Flags().StringVar(&from, "from", "", "source endpoint")
	cmd.Flags().StringVar(&to, "to", "", "destination endpoint")
	cmd.Flags().StringVarP(&method, "request", "X", "GET", "HTTP method")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Second, "how long to wait for a connection and an answer")
	_ = cmd.MarkFlagRequired("from")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

// newDevServeDeathstarCommand is the deathstar workload; the playground runs it in an endpoint.
func newDevServeDeathstarCommand() *cobra.Command {
	var name, listen string
	cmd := &cobra.Command{
		Use:    "serve-deathstar",
		Short:  "Serve the deathstar's HTTP API (run by the playground inside an endpoint)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			srv := &http.Server{Handler: demo.DeathstarHandler(name), ReadHeaderTimeout: 5 * time.Second}
			go func() {
				<-ctx.Done()
				shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = srv.Shutdown(shutdown)
			}()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "deathstar", "name in the API description")
	cmd.Flags().StringVar(&listen, "listen", ":80", "address to listen on")
	return cmd
}
