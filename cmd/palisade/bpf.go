package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/palisade-mesh/palisade/bpf"
)

// newBPFCommand inspects the pinned eBPF datapath directly, without the agent: useful when the
// agent is down (enforcement continues from the pins) or to debug what the kernel really holds.
func newBPFCommand() *cobra.Command {
	var pinDir string
	cmd := &cobra.Command{
		Use:   "bpf",
		Short: "Inspect the pinned eBPF datapath of this node (root)",
		Long: `Reads the maps the agent pinned under --pin-dir without loading programs or touching any
attachment: endpoints, ipcache, per-endpoint policy with counters, conntrack and event counters.
Conntrack entries can be flushed and garbage-collected.`,
	}
	cmd.PersistentFlags().StringVar(&pinDir, "pin-dir", bpf.DefaultPinDir, "bpffs directory of the datapath's pins")
	open := func(cmd *cobra.Command) (*bpf.Datapath, error) {
		return bpf.OpenPinned(pinDir, slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)))
	}
	cmd.AddCommand(newBPFEndpointsCommand(open), newBPFIPCacheCommand(open), newBPFPolicyCommand(open),
		newBPFConntrackCommand(open), newBPFEventsCommand(open))
	return cmd
}

type datapathOpener func(*cobra.Command) (*bpf.Datapath, error)

func newBPFEndpointsCommand(open datapathOpener) *cobra.Command {
	cmd := &cobra.Command{Use: "endpoints", Short: "List the endpoints registered in the datapath", Args: cobra.NoArgs}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		dp, err := open(cmd)
		if err != nil {
			return err
		}
		defer dp.Close()
		eps, err := dp.Endpoints()
		if err != nil {
			return err
		}
		slices.SortFunc(eps, func(a, b bpf.EndpointState) int { return int(a.ID) - int(b.ID) })
		return out.render(cmd.OutOrStdout(), eps, func(w io.Writer) {
			fmt.Fprintln(w, "ID\tIFINDEX\tIPV4\tPROXY STEERING\tPOLICY ENTRIES")
			for _, e := range eps {
				entries := strconv.Itoa(e.PolicyEntries)
				if e.PolicyEntries < 0 {
					entries = "none (all traffic dropped)"
				}
				fmt.Fprintf(w, "%d\t%d\t%s\t%v\t%s\n", e.ID, e.IfIndex, e.IPv4, e.ProxySteering, entries)
			}
		})
	}
	return cmd
}

func newBPFIPCacheCommand(open datapathOpener) *cobra.Command {
	cmd := &cobra.Command{Use: "ipcache", Short: "List prefix to identity entries", Args: cobra.NoArgs}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		dp, err := open(cmd)
		if err != nil {
			return err
		}
		defer dp.Close()
		m, err := dp.IPCache()
		if err != nil {
			return err
		}
		type row struct {
			Prefix   netip.Prefix `json:"prefix"`
			Identity uint32       `json:"identity"`
		}
		rows := make([]row, 0, len(m))
		for p, id := range m {
			rows = append(rows, row{p, id})
		}
		slices.SortFunc(rows, func(a, b row) int {
			return a.Prefix.Addr().Compare(b.Prefix.Addr())*64 + a.Prefix.Bits() - b.Prefix.Bits()
		})
		return out.render(cmd.OutOrStdout(), rows, func(w io.Writer) {
			fmt.Fprintln(w, "PREFIX\tIDENTITY")
			for _, r := range rows {
				fmt.Fprintf(w, "%s\t%d\n", r.Prefix, r.Identity)
			}
		})
	}
	return cmd
}

func newBPFPolicyCommand(open datapathOpener) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy ENDPOINT-ID",
		Short: "List an endpoint's policy map entries with their packet and byte counters",
		Args:  cobra.ExactArgs(1),
	}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		id, err := strconv.ParseUint(args[0], 10, 32)
		if err != nil || id == 0 {
			return fmt.Errorf("endpoint ID %q: want a positive number", args[0])
		}
		dp, err := open(cmd)
		if err != nil {
			return err
		}
		defer dp.Close()
		entries, err := dp.Policy(uint32(id))
		if err != nil {
			return err
		}
		if entries == nil {
			return fmt.Errorf("endpoint %d has no policy installed (its traffic is dropped)", id)
		}
		slices.SortFunc(entries, func(a, b bpf.PolicyStats) int {
			if a.Direction != b.Direction {
				return int(a.Direction) - int(b.Direction)
			}
			if a.Identity != b.Identity {
				return int(a.Identity) - int(b.Identity)
			}
			return int(a.Port) - int(b.Port)
		})
		return out.render(cmd.OutOrStdout(), entries, func(w io.Writer) {
			fmt.Fprintln(w, "DIRECTION\tIDENTITY\tPROTO\tPORT\tVERDICT\tPROXY\tPACKETS\tBYTES")
			for _, e := range entries {
				verdict := "allow"
				if e.Deny {
					verdict = "deny"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", e.Direction, anyIfZero(e.Identity), protoName(e.Protocol),
					anyIfZero(uint32(e.Port)), verdict, anyIfZero(uint32(e.ProxyPort)), e.Packets, e.Bytes)
			}
		})
	}
	return cmd
}

func newBPFConntrackCommand(open datapathOpener) *cobra.Command {
	cmd := &cobra.Command{Use: "ct", Short: "Inspect and clean the connection tracking table"}

	list := &cobra.Command{Use: "list", Short: "List tracked flows", Args: cobra.NoArgs}
	out := addOutputFlag(list)
	var endpoint uint32
	list.Flags().Uint32Var(&endpoint, "endpoint", 0, "only flows admitted by this endpoint's policy")
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		dp, err := open(cmd)
		if err != nil {
			return err
		}
		defer dp.Close()
		flows, err := dp.Conntrack().Dump()
		if err != nil {
			return err
		}
		if endpoint != 0 {
			flows = slices.DeleteFunc(flows, func(f bpf.Flow) bool { return f.Endpoint != endpoint })
		}
		return out.render(cmd.OutOrStdout(), flows, func(w io.Writer) {
			fmt.Fprintln(w, "ENDPOINT\tDIRECTION\tPROTO\tSOURCE\tDESTINATION\tPEER IDENTITY\tSTATE\tPROXY\tPACKETS\tEXPIRES")
			for _, f := range flows {
				fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t%s\n", f.Endpoint, f.Direction, protoName(f.Protocol), f.Src, f.Dst,
					f.Identity, flowState(f), anyIfZero(uint32(f.ProxyPort)), f.Packets, f.Expires.Format("15:04:05"))
			}
		})
	}

	flush := &cobra.Command{
		Use:   "flush",
		Short: "Delete the flows of an endpoint or of a peer identity; their next packet is re-evaluated or dropped",
		Args:  cobra.NoArgs,
	}
	var flushEndpoint, flushIdentity uint32
	flush.Flags().Uint32Var(&flushEndpoint, "endpoint", 0, "flows admitted by this endpoint's policy")
	flush.Flags().Uint32Var(&flushIdentity, "identity", 0, "flows whose peer has this identity")
	flush.RunE = func(cmd *cobra.Command, _ []string) error {
		if (flushEndpoint == 0) == (flushIdentity == 0) {
			return errors.New("give exactly one of --endpoint and --identity")
		}
		dp, err := open(cmd)
		if err != nil {
			return err
		}
		defer dp.Close()
		var n int
		if flushEndpoint != 0 {
			n, err = dp.Conntrack().FlushEndpoint(flushEndpoint)
		} else {
			n, err = dp.Conntrack().FlushIdentity(flushIdentity)
		}
		if err != nil {
			return err
		}
		cmd.Printf("flushed %d flows\n", n)
		return nil
	}

	gc := &cobra.Command{Use: "gc", Short: "Delete expired flows now", Args: cobra.NoArgs}
	gc.RunE = func(cmd *cobra.Command, _ []string) error {
		dp, err := open(cmd)
		if err != nil {
			return err
		}
		defer dp.Close()
		n, err := dp.Conntrack().GC()
		if err != nil {
			return err
		}
		cmd.Printf("removed %d expired flows\n", n)
		return nil
	}
	cmd.AddCommand(list, flush, gc)
	return cmd
}

func newBPFEventsCommand(open datapathOpener) *cobra.Command {
	cmd := &cobra.Command{Use: "events", Short: "Show the verdict event counters (emitted, rate limited, lost)", Args: cobra.NoArgs}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		dp, err := open(cmd)
		if err != nil {
			return err
		}
		defer dp.Close()
		s, err := dp.EventStats()
		if err != nil {
			return err
		}
		return out.render(cmd.OutOrStdout(), s, func(w io.Writer) {
			fmt.Fprintln(w, "EMITTED\tRATE LIMITED\tLOST (READER BEHIND)")
			fmt.Fprintf(w, "%d\t%d\t%d\n", s.Emitted, s.RateLimited, s.RingbufFull)
		})
	}
	return cmd
}

func anyIfZero(v uint32) string {
	if v == 0 {
		return "any"
	}
	return strconv.FormatUint(uint64(v), 10)
}

func protoName(p uint8) string {
	switch p {
	case bpf.ProtoAny:
		return "any"
	case bpf.ProtoTCP:
		return "TCP"
	case bpf.ProtoUDP:
		return "UDP"
	case bpf.ProtoICMP:
		return "ICMP"
	case bpf.ProtoSCTP:
		return "SCTP"
	}
	return strconv.Itoa(int(p))
}

func flowState(f bpf.Flow) string {
	switch {
	case f.Protocol != bpf.ProtoTCP:
		return "-"
	case f.Flags&bpf.FlowClosed != 0:
		return "closed"
	case f.Flags&(bpf.FlowFINOriginal|bpf.FlowFINReply) != 0:
		return "closing"
	case f.Flags&bpf.FlowEstablished != 0:
		return "established"
	}
	return "syn-sent"
}
