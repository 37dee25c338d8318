package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/monitor"
)

func newMonitorCommand() *cobra.Command {
	var (
		req   apiv1.MonitorRequest
		types []string
	)
	cmd := &cobra.Command{
		Use:   "monitor",
		Short: "Stream policy verdicts, drops and L7 requests as they happen",
		Example: `  palisade monitor --type drop
  palisade monitor --type l7 -o json`,
		Args: cobra.NoArgs,
	}
	client := addAgentClientFlags(cmd)
	out := addOutputFlag(cmd)
	cmd.Flags().StringSliceVar(&types, "type", nil, "event types: drop, policy, l7, trace, agent (default all)")
	cmd.Flags().Uint32Var(&req.FromIdentity, "from-identity", 0, "only events from this source identity")
	cmd.Flags().Uint32Var(&req.ToIdentity, "to-identity", 0, "only events to this destination identity")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		for _, t := range types {
			if _, err := monitor.ParseType(t); err != nil {
				return err
			}
		}
		req.Types = types
		c, closeFn, err := client.dial()
		if err != nil {
			return err
		}
		defer closeFn()
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		stream, err := c.Monitor(ctx, &req)
		if err != nil {
			return fmt.Errorf("monitor: %w", err)
		}
		w := cmd.OutOrStdout()
		for {
			ev, err := stream.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled || ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("monitor: %w", err)
			}
			if ev.GetLost() > 0 {
				fmt.Fprintf(os.Stderr, "warning: %d events lost (reading too slowly)\n", ev.GetLost())
			}
			if err := printMonitorEvent(w, *out, ev); err != nil {
				return err
			}
		}
	}
	return cmd
}

func printMonitorEvent(w io.Writer, out outputFormat, pe *apiv1.MonitorEvent) error {
	ev := monitorEventFromProto(pe)
	if out == "table" {
		_, err := fmt.Fprintln(w, ev.String())
		return err
	}
	if out == "json" {
		// One object a line, so `palisade monitor -o json | jq` streams.
		b, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	if _, err := fmt.Fprintln(w, "---"); err != nil {
		return err
	}
	return out.render(w, ev, nil)
}

func monitorEventFromProto(pe *apiv1.MonitorEvent) monitor.Event {
	ev := monitor.Event{
		Time:      pe.GetTime().AsTime(),
		Node:      pe.GetNode(),
		Type:      monitor.Type(pe.GetType()),
		Verdict:   monitor.Verdict(pe.GetVerdict()),
		Reason:    pe.GetReason(),
		Direction: pe.GetDirection(),
		Protocol:  pe.GetProtocol(),
		Source:    peerFromProto(pe.GetSource()),
		Dest:      peerFromProto(pe.GetDestination()),
		Message:   pe.GetMessage(),
	}
	if l := pe.GetL7(); l != nil {
		ev.L7 = &monitor.L7{Protocol: l.GetProtocol(), Method: l.GetMethod(), Host: l.GetHost(), Path: l.GetPath(),
			Status: int(l.GetStatus()), Latency: l.GetLatency().AsDuration(), Fields: l.GetFields()}
	}
	return ev
}

func peerFromProto(p *apiv1.Peer) monitor.Peer {
	out := monitor.Peer{Identity: p.GetIdentity(), Endpoint: uint16(p.GetEndpoint()), Labels: p.GetLabels(), Cluster: p.GetCluster()}
	if ap, err := netip.ParseAddrPort(p.GetAddr()); err == nil {
		out.Addr = ap
	}
	return out
}
