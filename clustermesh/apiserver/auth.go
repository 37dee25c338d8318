package apiserver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
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

// caller is what authentication learned about a call. A Watch stream keeps it so that it can be
// checked again while the stream lives: the token and the certificate are verified when the
// stream opens, and a stream can outlive both.
type caller struct {
	cluster string
	bearer  string
	claims  *token.Claims
	// certExpiry is when the client's certificate expires; the TLS layer checks it only at the
	// handshake. (certs.CA.Issue never lets a certificate outlast its CA.)
	certExpiry time.Time
}

// callerFrom is the caller an interceptor authenticated.
func callerFrom(ctx context.Context) *caller {
	c, _ := ctx.Value(callerKey{}).(*caller)
	return c
}

// authenticate learns the calling cluster from the verified client certificate and checks the
// call's access token against it. The error is a gRPC status, with the failure's reason for the
// metrics.
func (s *Server) authenticate(ctx context.Context) (*caller, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, s.refuse(codes.Unauthenticated, "no_peer", "no peer information on the call")
	}
	tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil, s.refuse(codes.Unauthenticated, "no_tls", "the mesh API is served over mTLS only")
	}
	id, err := meshtls.PeerID(tlsInfo.State)
	if err != nil {
		return nil, s.refuse(codes.Unauthenticated, "certificate", err.Error())
	}
	md, _ := metadata.FromIncomingContext(ctx)
	bearer := strings.Join(md.Get(clustermesh.AuthorizationKey), "")
	claims, err := s.opts.Verifier.Check(bearer, id.Cluster, token.ScopeRead)
	if err != nil {
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
		return nil, s.refuse(code, reason, err.Error())
	}
	return &caller{cluster: id.Cluster, bearer: bearer, claims: claims, certExpiry: tlsInfo.State.PeerCertificates[0].NotAfter}, nil
}

// recheck verifies a stream's token again, as when it opened: with the verifier's clock and
// leeway, and against the revocation list as it is now. It returns the status that ends the
// stream, or nil while the token is still good.
func (s *Server) recheck(c *caller) error {
	err := s.tokens.check(c)
	if err == nil {
		return nil
	}
	reason, msg := "invalid_token", fmt.Sprintf("mesh access token no longer valid: %v", err)
	switch {
	case errors.Is(err, token.ErrRevoked):
		reason, msg = "revoked", fmt.Sprintf("mesh access token revoked: token %s of cluster %s is on the revocation list", c.claims.ID, c.cluster)
	case errors.Is(err, jwt.ErrTokenExpired):
		reason, msg = "expired", fmt.Sprintf("mesh access token expired: token %s of cluster %s expired at %s",
			c.claims.ID, c.cluster, c.claims.ExpiresAt.UTC().Format(time.RFC3339))
	}
	s.log.Warn("closing mesh Watch stream", "client", c.cluster, "token", c.claims.ID, "reason", reason, "error", err)
	return s.refuse(codes.Unauthenticated, reason, msg+"; Watch stream closed")
}

// certificateExpired is the status that ends a stream when the client's certificate expires.
func (s *Server) certificateExpired(c *caller) error {
	s.log.Warn("closing mesh Watch stream", "client", c.cluster, "reason", "certificate_expired", "notAfter", c.certExpiry)
	return s.refuse(codes.Unauthenticated, "certificate_expired", fmt.Sprintf("mesh client certificate expired: the certificate of cluster %s expired at %s; Watch stream closed",
		c.cluster, c.certExpiry.UTC().Format(time.RFC3339)))
}

// tokenChecks re-verifies the tokens of open Watch streams. The agents of one client cluster
// usually share a token, so a token is verified (an ECDSA signature check) at most once per
// interval however many streams carry it.
type tokenChecks struct {
	verifier *token.Verifier
	interval time.Duration

	mu     sync.Mutex
	tokens map[tokenKey]*tokenCheck
}

type tokenKey struct{ cluster, bearer string }

type tokenCheck struct {
	streams int // open streams carrying the token; the entry goes with the last
	at      time.Time
	err     error
}

func newTokenChecks(v *token.Verifier, interval time.Duration) *tokenChecks {
	return &tokenChecks{verifier: v, interval: interval, tokens: map[tokenKey]*tokenCheck{}}
}

// hold registers a stream carrying c's token, which authenticate has just verified.
func (t *tokenChecks) hold(c *caller) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := tokenKey{c.cluster, c.bearer}
	tc, ok := t.tokens[k]
	if !ok {
		tc = &tokenCheck{at: time.Now()}
		t.tokens[k] = tc
	}
	tc.streams++
}

func (t *tokenChecks) release(c *caller) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := tokenKey{c.cluster, c.bearer}
	if tc := t.tokens[k]; tc != nil {
		if tc.streams--; tc.streams <= 0 {
			delete(t.tokens, k)
		}
	}
}

// check returns the result of the token's latest verification, verifying it again when that is
// older than the interval. A token once refused stays refused.
func (t *tokenChecks) check(c *caller) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	tc := t.tokens[tokenKey{c.cluster, c.bearer}]
	if tc == nil { // not held: verify without remembering
		_, err := t.verifier.Check(c.bearer, c.cluster, token.ScopeRead)
		return err
	}
	if tc.err == nil && time.Since(tc.at) >= t.interval {
		_, tc.err = t.verifier.Check(c.bearer, c.cluster, token.ScopeRead)
		tc.at = time.Now()
	}
	return tc.err
}

func (s *Server) refuse(code codes.Code, reason, msg string) error {
	s.metrics.authFailures.WithLabelValues(reason).Inc()
	return status.Error(code, msg)
}

// admit authenticates a call and charges it to its cluster's rate limit.
func (s *Server) admit(ctx context.Context) (context.Context, error) {
	c, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if !s.limits.allow(c.cluster) {
		s.metrics.limited.WithLabelValues("rate").Inc()
		return nil, status.Errorf(codes.ResourceExhausted, "rate limit: cluster %s may make %g calls per second (burst %d); retry later",
			c.cluster, s.opts.RateLimit, s.opts.RateBurst)
	}
	return context.WithValue(ctx, callerKey{}, c), nil
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
