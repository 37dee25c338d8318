package apiserver

import (
	"context"
	"errors"
	"strings"
	"sync"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/palisade-mesh/palisade/certs/meshtls"
	"github.com/palisade-mesh/palisade/certs/token"
	"github.com/palisade-mesh/palisade/clustermesh"
)

type callerKey struct{}

// callerFrom is the client cluster an interceptor authenticated.
func callerFrom(ctx context.Context) string {
	c, _ := ctx.Value(callerKey{}).(string)
	return c
}

// authenticate learns the calling cluster from the verified client certificate and checks the
// call's access token against it. The error is a gRPC status, with the failure's reason for the
// metrics.
func (s *Server) authenticate(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", s.refuse(codes.Unauthenticated, "no_peer", "no peer information on the call")
	}
	tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", s.refuse(codes.Unauthenticated, "no_tls", "the mesh API is served over mTLS only")
	}
	id, err := meshtls.PeerID(tlsInfo.State)
	if err != nil {
		return "", s.refuse(codes.Unauthenticated, "certificate", err.Error())
	}
	md, _ := metadata.FromIncomingContext(ctx)
	bearer := strings.Join(md.Get(clustermesh.AuthorizationKey), "")
	if _, err := s.opts.Verifier.Check(bearer, id.Cluster, token.ScopeRead); err != nil {
		code, reason := codes.Unauthenticated, "invalid_token"
		switch {
		case errors.Is(err, token.ErrNoToken):
			reason = "no_token"
		case errors.Is(err, token.ErrRevoked):
			reason = "revoked"
		case errors.Is(err, token.ErrSubjectMismatch):
			code, reason = codes.PermissionDenied, "subject_mismatch"
		case errors.Is(err, token.ErrMissingScope):
			code, reason = codes.PermissionDenied, "missing_scope"
		}
		s.log.Warn("mesh API call refused", "cluster", id.Cluster, "reason", reason, "error", err)
		return "", s.refuse(code, reason, err.Error())
	}
	return id.Cluster, nil
}

func (s *Server) refuse(code codes.Code, reason, msg string) error {
	s.metrics.authFailures.WithLabelValues(reason).Inc()
	return status.Error(code, msg)
}

// admit authenticates a call and charges it to its cluster's rate limit.
func (s *Server) admit(ctx context.Context) (context.Context, error) {
	cluster, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if !s.limits.allow(cluster) {
		s.metrics.limited.WithLabelValues("rate").Inc()
		return nil, status.Errorf(codes.ResourceExhausted, "rate limit: cluster %s may make %g calls per second (burst %d); retry later",
			cluster, s.opts.RateLimit, s.opts.RateBurst)
	}
	return context.WithValue(ctx, callerKey{}, cluster), nil
}

func (s *Server) unaryInterceptor(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	ctx, err := s.admit(ctx)
	if err != nil {
		return nil, err
	}
	return next(ctx, req)
}

func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, next grpc.StreamHandler) error {
	ctx, err := s.admit(ss.Context())
	if err != nil {
		return err
	}
	return next(srv, &callerStream{ServerStream: ss, ctx: ctx})
}

// callerStream carries the authenticated caller in its context.
type callerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c *callerStream) Context() context.Context { return c.ctx }

// limits are the per-client-cluster rate limiters and Watch stream counts.
type limits struct {
	rate       rate.Limit
	burst      int
	maxStreams int

	mu       sync.Mutex
	limiters map[string]*rate.Limiter
	streams  map[string]int
}

func newLimits(o Options) *limits {
	return &limits{
		rate: rate.Limit(o.RateLimit), burst: o.RateBurst, maxStreams: o.MaxStreamsPerCluster,
		limiters: map[string]*rate.Limiter{}, streams: map[string]int{},
	}
}

func (l *limits) allow(cluster string) bool {
	l.mu.Lock()
	lim, ok := l.limiters[cluster]
	if !ok {
		// One limiter per cluster that passed authentication: bounded by the clusters the
		// mesh CA and this cluster's tokens admit.
		lim = rate.NewLimiter(l.rate, l.burst)
		l.limiters[cluster] = lim
	}
	l.mu.Unlock()
	return lim.Allow()
}

// openStream counts a Watch stream of cluster; ok is false at the limit. first says the cluster
// had no stream before.
func (l *limits) openStream(cluster string) (ok, first bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.streams[cluster]
	if n >= l.maxStreams {
		return false, false
	}
	l.streams[cluster] = n + 1
	return true, n == 0
}

// closeStream uncounts a stream; last says it was the cluster's last.
func (l *limits) closeStream(cluster string) (last bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.streams[cluster]--
	if l.streams[cluster] <= 0 {
		delete(l.streams, cluster)
		return true
	}
	return false
}
