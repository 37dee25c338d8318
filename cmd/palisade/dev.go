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
		Short: "Run a local playground cluster (or a mesh of clusters) in network namespaces",
		Long: `The playground runs a whole cluster on this machine, inside network namespaces: etcd in a
control-plane namespace, one namespace per node with its agent, and endpoints with demo workloads.
With --clusters N it runs N clusters (cluster1.., IDs 1..) in one topology, each with its own etcd
and mesh API server, connected pairwise in a cluster mesh. Nothing is reachable from, or sends
traffic outside, this machine. Needs root.`,
		Example: `  palisade dev up --nodes 2
  palisade dev endpoint add deathstar --node node1 --labels org=empire,class=deathstar --workload deathstar
  palisade dev endpoint add xwing --node node2 --labels org=alliance,class=xwing
  palisade dev request --from xwing --to deathstar -X POST /v1/request-landing
  palisade dev down

  palisade dev up --clusters 3 --nodes 2
  palisade dev endpoint add deathstar --node c1n1 --labels org=empire,class=deathstar --workload deathstar
  palisade dev endpoint add tiefighter --node c2n1 --labels org=empire,class=tiefighter
  palisade policy import -f examples/multicluster/cross-cluster-l7.yaml --kvstore-endpoints $(palisade dev kvstore --cluster cluster1)
  palisade dev request --from cluster2/tiefighter --to cluster1/deathstar -X POST /v1/request-landing
  palisade clustermesh status --socket $(palisade dev socket --node c1n1)`,
	}
	dir := cmd.PersistentFlags().String("dir", playground.DefaultDir, "the playground's state directory")
	cmd.AddCommand(newDevUpCommand(dir), newDevDownCommand(dir), newDevStatusCommand(dir),
		newDevEndpointCommand(dir), newDevRequestCommand(dir), newDevKvstoreCommand(dir),
		newDevSocketCommand(dir), newDevServeDeathstarCommand())
	return cmd
}

func newDevUpCommand(dir *string) *cobra.Command {
	var opts playground.Options
	cmd := &cobra.Command{
		Use:   "up [--clusters N] [--nodes N]",
		Short: "Start a playground cluster, or several clusters in a mesh",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Dir = *dir
			// Ctrl-C while starting removes what was started so far.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			st, err := playground.Up(ctx, opts, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			nodes := st.Nodes()
			if st.Mesh() {
				fmt.Fprintf(w, "playground mesh is up: %d clusters of %d nodes (mesh CA in %s)\n", len(st.Clusters), len(st.Clusters[0].Nodes), st.CADir)
			} else {
				fmt.Fprintf(w, "playground %q is up with %d nodes\n", st.Clusters[0].Name, len(nodes))
			}
			for _, c := range st.Clusters {
				fmt.Fprintf(w, "\n%s (ID %d)\n", c.Name, c.ID)
				fmt.Fprintf(w, "  etcd:  --kvstore-endpoints %s\n", c.KvstoreEndpoint())
				if c.MeshAddress != "" {
					fmt.Fprintf(w, "  mesh API server: %s   (cluster directory %s)\n", c.MeshAddress, c.MeshDir)
				}
				for _, n := range c.Nodes {
					fmt.Fprintf(w, "  %s: --socket %s   (pod CIDR %s, log %s)\n", n.Name, n.Socket, n.PodCIDR, n.Agent.Log)
				}
			}
			fmt.Fprintf(w, "\nnext: palisade dev endpoint add NAME --node %s --labels key=value\n", nodes[0].Name)
			return nil
		},
	}
	cmd.Flags().IntVar(&opts.Clusters, "clusters", 1, "number of clusters (1..8); more than one runs a mesh of cluster1.. with a mesh API server each")
	cmd.Flags().IntVar(&opts.Nodes, "nodes", 2, "number of nodes per cluster (1..8)")
	cmd.Flags().StringVar(&opts.Cluster, "cluster-name", "", `cluster name of a single-cluster playground (default "playground")`)
	cmd.Flags().Uint32Var(&opts.ClusterID, "cluster-id", 0, "cluster ID of a single-cluster playground (default 1)")
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
		Short: "List the playground's clusters, nodes and endpoints",
		Args:  cobra.NoArgs,
	}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		st, err := playground.Load(*dir)
		if err != nil {
			return err
		}
		return out.render(cmd.OutOrStdout(), st, func(w io.Writer) {
			fmt.Fprintln(w, "CLUSTER\tID\tKVSTORE\tMESH API SERVER\tNODES")
			for _, c := range st.Clusters {
				names := make([]string, len(c.Nodes))
				for i, n := range c.Nodes {
					names[i] = n.Name
				}
				fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\n", c.Name, c.ID, c.KvstoreEndpoint(), orDash(c.MeshAddress), strings.Join(names, ","))
			}
			fmt.Fprintln(w)
			fmt.Fprintln(w, "ENDPOINT\tCLUSTER\tNODE\tID\tIDENTITY\tIPV4\tLABELS")
			for _, e := range st.Endpoints {
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", e.Name, e.Cluster, e.Node, e.ID, e.Identity, e.IPv4, strings.Join(e.Labels, ","))
			}
		})
	}
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// newDevKvstoreCommand prints a cluster's etcd URL, for scripts:
// --kvstore-endpoints $(palisade dev kvstore --cluster cluster1).
func newDevKvstoreCommand(dir *string) *cobra.Command {
	var cluster string
	cmd := &cobra.Command{
		Use:   "kvstore [--cluster NAME]",
		Short: "Print the etcd endpoint of a playground cluster (for --kvstore-endpoints)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := playground.Load(*dir)
			if err != nil {
				return err
			}
			c, err := st.Cluster(cluster)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), c.KvstoreEndpoint())
			return nil
		},
	}
	cmd.Flags().StringVar(&cluster, "cluster", "", "cluster name (default: the first cluster)")
	return cmd
}

// newDevSocketCommand prints a node's agent socket, for scripts:
// --socket $(palisade dev socket --node c1n1).
func newDevSocketCommand(dir *string) *cobra.Command {
	var node string
	cmd := &cobra.Command{
		Use:   "socket [--node NAME]",
		Short: "Print the agent socket of a playground node (for --socket)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := playground.Load(*dir)
			if err != nil {
				return err
			}
			n, err := st.Node(node)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), n.Socket)
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "node name (default: the first node)")
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
			name := ep.Name
			if st.Mesh() {
				name = ep.QualifiedName()
			}
			fmt.Fprintf(w, "endpoint %s on %s: ID %d, identity %d, %s\n", name, ep.Node, ep.ID, ep.Identity, ep.IPv4)
		})
	}
	add.Flags().StringVar(&node, "node", "", "node to put the endpoint on (default: the first node)")
	add.Flags().StringSliceVar(&labels, "labels", nil, "labels, key=value")
	add.Flags().StringVar(&workload, "workload", "", "workload to run: deathstar (HTTP on port 80), or none")
	cmd.AddCommand(add)
	return cmd
}

func newDevRequestCommand(dir *string) *cobra.Command {
	var (
		from, to, method string
		timeout, within  time.Duration
		untilStatus      int
	)
	cmd := &cobra.Command{
		Use:   "request --from NAME --to NAME [-X METHOD] PATH",
		Short: "Send an HTTP request from one playground endpoint to another",
		Long: `Request sends one HTTP request from inside the source endpoint's network namespace to the
destination endpoint's address, and prints the answer, or "dropped" when no connection was made
within --timeout. With --until-status it repeats the request until the answer has that status
(or --within passes) and says how many requests that took and how long.`,
		Example: `  palisade dev request --from xwing --to deathstar -X POST /v1/request-landing
  palisade dev request --from cluster2/tiefighter --to cluster1/deathstar -X POST /v1/request-landing \
    --until-status 200 --timeout 100ms --within 10s`,
		Args: cobra.ExactArgs(1),
	}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		st, err := playground.Load(*dir)
		if err != nil {
			return err
		}
		if untilStatus == 0 {
			resp, err := st.Request(cmd.Context(), from, to, method, args[0], timeout)
			if err != nil {
				return err
			}
			return out.render(cmd.OutOrStdout(), resp, func(w io.Writer) {
				fmt.Fprintf(w, "%s %s %s -> %s: %s\n", from, method, args[0], to, resp.Verdict())
			})
		}
		resp, attempts, took, err := st.RequestUntil(cmd.Context(), from, to, method, args[0], timeout, untilStatus, within)
		if err != nil {
			return err
		}
		view := struct {
			playground.Response
			Attempts int   `json:"attempts"`
			TookMS   int64 `json:"tookMs"`
		}{resp, attempts, took.Milliseconds()}
		return out.render(cmd.OutOrStdout(), view, func(w io.Writer) {
			requests := "requests"
			if attempts == 1 {
				requests = "request"
			}
			fmt.Fprintf(w, "%s %s %s -> %s: %s (after %d %s, %s)\n", from, method, args[0], to, resp.Verdict(), attempts, requests, took.Round(time.Millisecond))
		})
	}
	cmd.Flags().StringVar(&from, "from", "", "source endpoint: NAME, or CLUSTER/NAME in a mesh")
	cmd.Flags().StringVar(&to, "to", "", "destination endpoint: NAME, or CLUSTER/NAME in a mesh")
	cmd.Flags().StringVarP(&method, "request", "X", "GET", "HTTP method")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Second, "how long to wait for a connection and an answer")
	cmd.Flags().IntVar(&untilStatus, "until-status", 0, "repeat the request until the answer has this HTTP status")
	cmd.Flags().DurationVar(&within, "within", 10*time.Second, "with --until-status: give up after this long")
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
