package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/monitor"
)

// apiServer serves the agent API on the local unix socket.
type apiServer struct {
	apiv1.UnimplementedAgentServer
	a *Agent
}

// listenSocket removes a stale socket left by a crashed agent and listens with owner-only
// permissions: the API can create endpoints, so only root may use it.
func listenSocket(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("agent socket dir: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale agent socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("agent socket permissions: %w", err)
	}
	return ln, nil
}

func (s *apiServer) Status(ctx context.Context, _ *apiv1.StatusRequest) (*apiv1.StatusResponse, error) {
	st := s.a.Status(ctx)
	st.Clustermesh, st.Clusters = s.a.mesh.summary()
	return st, nil
}

func (s *apiServer) ClusterMeshStatus(context.Context, *apiv1.ClusterMeshStatusRequest) (*apiv1.ClusterMeshStatusResponse, error) {
	return s.a.mesh.status(), nil
}

func (s *apiServer) CreateEndpoint(ctx context.Context, req *apiv1.CreateEndpointRequest) (*apiv1.Endpoint, error) {
	ep, err := s.a.CreateEndpoint(ctx, EndpointRequest{
		NetnsPath: req.GetNetnsPath(),
		Labels:    req.GetLabels(),
		Namespace: req.GetNamespace(),
		Name:      req.GetName(),
	})
	if err != nil {
		return nil, grpcError(err)
	}
	return ep, nil
}

func (s *apiServer) DeleteEndpoint(ctx context.Context, req *apiv1.DeleteEndpointRequest) (*apiv1.DeleteEndpointResponse, error) {
	if err := s.a.DeleteEndpoint(ctx, req.GetId()); err != nil {
		return nil, grpcError(err)
	}
	return &apiv1.DeleteEndpointResponse{}, nil
}

func (s *apiServer) GetEndpoint(_ context.Context, req *apiv1.GetEndpointRequest) (*apiv1.Endpoint, error) {
	ep, ok := s.a.Endpoint(req.GetId())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "endpoint %d not found", req.GetId())
	}
	return ep, nil
}

func (s *apiServer) ListEndpoints(context.Context, *apiv1.ListEndpointsRequest) (*apiv1.ListEndpointsResponse, error) {
	return &apiv1.ListEndpointsResponse{Endpoints: s.a.Endpoints()}, nil
}

func (s *apiServer) ListNodes(ctx context.Context, _ *apiv1.ListNodesRequest) (*apiv1.ListNodesResponse, error) {
	nodes, err := s.a.Nodes(ctx)
	if err != nil {
		return nil, grpcError(err)
	}
	return &apiv1.ListNodesResponse{Nodes: nodes}, nil
}

func (s *apiServer) Monitor(req *apiv1.MonitorRequest, stream grpc.ServerStreamingServer[apiv1.MonitorEvent]) error {
	f := monitor.Filter{FromIdentity: req.GetFromIdentity(), ToIdentity: req.GetToIdentity()}
	for _, t := range req.GetTypes() {
		typ, err := monitor.ParseType(t)
		if err != nil {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		f.Types = append(f.Types, typ)
	}
	sub := s.a.hub.Subscribe(stream.Context(), f, 4096)
	var reported uint64
	for ev := range sub.C {
		msg := monitorEventToProto(ev)
		if lost := sub.Lost(); lost != reported {
			msg.Lost = lost - reported
			reported = lost
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
	return nil
}

func monitorEventToProto(e monitor.Event) *apiv1.MonitorEvent {
	out := &apiv1.MonitorEvent{
		Time:        timestamppb.New(e.Time),
		Node:        e.Node,
		Type:        string(e.Type),
		Verdict:     string(e.Verdict),
		Reason:      e.Reason,
		Direction:   e.Direction,
		Protocol:    e.Protocol,
		Source:      peerToProto(e.Source),
		Destination: peerToProto(e.Dest),
		Message:     e.Message,
	}
	if l := e.L7; l != nil {
		out.L7 = &apiv1.L7{Protocol: l.Protocol, Method: l.Method, Host: l.Host, Path: l.Path, Status: int32(l.Status), Fields: l.Fields}
		if l.Latency > 0 {
			out.L7.Latency = durationpb.New(l.Latency)
		}
	}
	return out
}

func peerToProto(p monitor.Peer) *apiv1.Peer {
	out := &apiv1.Peer{Identity: p.Identity, Endpoint: uint32(p.Endpoint), Labels: p.Labels, Cluster: p.Cluster}
	if p.Addr.IsValid() {
		out.Addr = p.Addr.String()
	}
	return out
}

// Errors the API maps to gRPC status codes.
var (
	errNotFound   = errors.New("not found")
	errBadRequest = errors.New("bad request")
)

func grpcError(err error) error {
	switch {
	case errors.Is(err, errNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, errBadRequest):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}
