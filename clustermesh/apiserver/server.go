package apiserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/certs/meshtls"
	"github.com/palisade-mesh/palisade/clustermesh"
	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/kvstore"
)

// gRPC transport limits. Requests are small (selectors are bounded by clustermesh's limits);
// responses are batched below MaxResponseBytes, and a client's default receive limit is 4 MiB.
const (
	maxRecvMsgBytes = 4 << 20
	maxSendMsgBytes = 4 << 20
	// Clients may ping at most this often (also without an active call); faster pings get the
	// connection closed with "too_many_pings".
	keepaliveMinPing = 10 * time.Second
	// The server pings an idle connection after keepaliveTime and drops it when the ping is not
	// answered within keepaliveTimeout: a vanished client's streams are released.
	keepaliveTime    = 30 * time.Second
	keepaliveTimeout = 10 * time.Second
	// gracefulStop bounds how long Close waits for calls to finish before cutting them.
	gracefulStop = 5 * time.Second
	// tokenRecheck is how often an open Watch stream's access token is verified again, so that
	// a revoked or expired token stops the stream within about a second (the revocation list
	// itself is re-read at most once a second).
	tokenRecheck = 500 * time.Millisecond
)

// Server serves the Mesh API of one cluster. Create it with New, serve with Run, stop with Close
// (or by cancelling Run's context).
type Server struct {
	apiv1.UnimplementedMeshServer

	kv      *kvstore.Client
	opts    Options
	cluster identity.ClusterConfig
	log     *slog.Logger
	metrics *metrics
	limits  *limits
	tokens  *tokenChecks
	view    *view
	ln      net.Listener
	grpc    *grpc.Server

	// ctx ends the server: Close, or the end of Run's context. Streams end with it.
	ctx       context.Context
	cancel    context.CancelFunc
	mu        sync.Mutex // guards running and closed
	running   bool
	closed    bool
	runDone   chan struct{}  // closed when Run returns
	senders   sync.WaitGroup // stream sender goroutines
	syncSlots chan struct{}  // one per stream sending its initial state

	heartbeat atomic.Pointer[time.Time] // last heartbeat written
	gcLeader  atomic.Bool
}

// New checks the cluster's configuration in etcd (recording it if the cluster has none), and
// listens on opts.ListenAddress. It serves nothing until Run.
func New(ctx context.Context, kv *kvstore.Client, opts Options) (*Server, error) {
	opts = opts.withDefaults()
	if opts.ReplicaName == "" {
		host, _ := os.Hostname()
		opts.ReplicaName = host + "/" + strconv.Itoa(os.Getpid())
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	log := opts.Logger.With("component", "mesh-apiserver", "cluster", opts.ClusterName)
	cluster, err := checkClusterConfig(ctx, kv, opts)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	if opts.GC.Registerer == nil {
		opts.GC.Registerer = opts.Registerer
	}
	if opts.GC.Logger == nil {
		opts.GC.Logger = log
	}
	ln, err := net.Listen("tcp", opts.ListenAddress)
	if err != nil {
		return nil, fmt.Errorf("mesh API server: listen: %w", err)
	}
	s := &Server{
		kv:        kv,
		opts:      opts,
		cluster:   cluster,
		log:       log,
		metrics:   m,
		limits:    newLimits(opts),
		tokens:    newTokenChecks(opts.Verifier, tokenRecheck),
		view:      newView(log),
		ln:        ln,
		runDone:   make(chan struct{}),
		syncSlots: make(chan struct{}, opts.MaxConcurrentSyncs),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.grpc = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(meshtls.ServerConfig(opts.TLS, meshtls.ServerOptions{Logger: log}))),
		grpc.UnaryInterceptor(s.unaryInterceptor),
		grpc.StreamInterceptor(s.streamInterceptor),
		grpc.MaxRecvMsgSize(maxRecvMsgBytes),
		grpc.MaxSendMsgSize(maxSendMsgBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveMinPing, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
	)
	apiv1.RegisterMeshServer(s.grpc, s)
	return s, nil
}

// checkClusterConfig refuses to serve a cluster whose etcd says it is another cluster.
func checkClusterConfig(ctx context.Context, kv *kvstore.Client, o Options) (identity.ClusterConfig, error) {
	have, found, err := identity.GetClusterConfig(ctx, kv)
	if err != nil {
		return identity.ClusterConfig{}, fmt.Errorf("mesh API server: %w", err)
	}
	if !found {
		cfg, err := identity.EnsureClusterConfig(ctx, kv, identity.ClusterConfig{Name: o.ClusterName, ID: o.ClusterID, MaxConnectedClusters: o.MaxConnectedClusters})
		if err != nil {
			return identity.ClusterConfig{}, fmt.Errorf("mesh API server: %w", err)
		}
		return cfg, nil
	}
	if have.Name != o.ClusterName || have.ID != o.ClusterID {
		return identity.ClusterConfig{}, fmt.Errorf("mesh API server: cluster config mismatch: etcd (%v, prefix %q) holds cluster %q with ID %d, but this server is configured for cluster %q with ID %d",
			kv.Endpoints(), kv.Prefix(), have.Name, have.ID, o.ClusterName, o.ClusterID)
	}
	return have, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Synced reports whether the server's view has listed the cluster's state once.
func (s *Server) Synced() bool { return s.view.isSynced() }

// IsGCLeader reports whether this replica runs the cluster's identity garbage collection now.
func (s *Server) IsGCLeader() bool { return s.gcLeader.Load() }

// Run serves until ctx ends or Close is called, then stops every stream and background task. It
// returns an error only when serving failed; it may be called once.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return nil // Close came first
	case s.running:
		s.mu.Unlock()
		return errors.New("mesh API server: Run called twice")
	}
	s.running = true
	s.mu.Unlock()
	defer close(s.runDone)
	stop := context.AfterFunc(ctx, s.cancel)
	defer stop()

	var bg sync.WaitGroup
	tasks := []func(context.Context){
		func(ctx context.Context) { s.view.run(ctx, s.kv) },
		s.writeHeartbeats,
	}
	if !s.opts.DisableGC {
		tasks = append(tasks, s.runGCElection)
	}
	for _, task := range tasks {
		bg.Add(1)
		go func() {
			defer bg.Done()
			task(s.ctx)
		}()
	}
	served := make(chan error, 1)
	go func() { served <- s.grpc.Serve(s.ln) }()
	s.log.Info("mesh API server listening", "address", s.ln.Addr().String(), "clusterID", s.cluster.ID)

	var err error
	select {
	case <-s.ctx.Done():
	case err = <-served:
		err = fmt.Errorf("mesh API server: serve: %w", err)
		s.cancel()
	}
	// Streams end with s.ctx; unary calls get gracefulStop to finish.
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(gracefulStop):
		s.grpc.Stop()
		<-stopped
	}
	if err == nil {
		err = <-served
		if errors.Is(err, grpc.ErrServerStopped) {
			err = nil
		}
	}
	bg.Wait()
	s.senders.Wait()
	s.log.Info("mesh API server stopped")
	return err
}

// Close stops the server and waits until Run has returned. Safe to call more than once, and
// without Run.
func (s *Server) Close() error {
	s.cancel()
	s.mu.Lock()
	first, running := !s.closed, s.running
	s.closed = true
	s.mu.Unlock()
	if running {
		<-s.runDone
		return nil
	}
	if first {
		// Run never started (and now never will): nobody else owns the listener.
		return s.ln.Close()
	}
	return nil
}

// Info names the cluster.
func (s *Server) Info(context.Context, *apiv1.MeshInfoRequest) (*apiv1.MeshInfo, error) {
	info := &apiv1.MeshInfo{
		Cluster:              s.cluster.Name,
		ClusterId:            s.cluster.ID,
		Version:              s.opts.Version,
		Capabilities:         []string{clustermesh.CapabilityWatch, clustermesh.CapabilityWatchSelectors, clustermesh.CapabilityResolveSelector},
		MaxConnectedClusters: uint32(s.cluster.MaxConnectedClusters),
	}
	if hb := s.heartbeat.Load(); hb != nil {
		info.Heartbeat = timestamppb.New(*hb)
	}
	return info, nil
}

// ResolveSelector answers which identities match a selector now.
func (s *Server) ResolveSelector(ctx context.Context, req *apiv1.ResolveSelectorRequest) (*apiv1.ResolveSelectorResponse, error) {
	reqs, err := parseSelector(req.GetSelector())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.waitSynced(ctx); err != nil {
		return nil, err
	}
	return &apiv1.ResolveSelectorResponse{Identities: s.view.resolve(reqs)}, nil
}

// waitSynced holds a call until the view has listed the cluster once: answering before would
// present a partial state as the whole.
func (s *Server) waitSynced(ctx context.Context) error {
	select {
	case <-s.view.synced:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-s.ctx.Done():
		return status.Error(codes.Unavailable, "mesh API server is shutting down")
	}
}

// Watch streams the cluster's state, then sync_done, then its changes.
func (s *Server) Watch(req *apiv1.MeshWatchRequest, stream grpc.ServerStreamingServer[apiv1.MeshWatchResponse]) error {
	ctx := stream.Context()
	kinds, selectors, err := parseWatchRequest(req)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	c := callerFrom(ctx)
	cluster := c.cluster
	s.tokens.hold(c)
	defer s.tokens.release(c)
	ok, first := s.limits.openStream(cluster)
	if !ok {
		s.metrics.limited.WithLabelValues("streams").Inc()
		return status.Errorf(codes.ResourceExhausted, "stream limit: cluster %s already has %d Watch streams open, the most allowed", cluster, s.opts.MaxStreamsPerCluster)
	}
	s.metrics.streams.Inc()
	if first {
		s.metrics.clients.Inc()
	}
	defer func() {
		s.metrics.streams.Dec()
		if s.limits.closeStream(cluster) {
			s.metrics.clients.Dec()
		}
	}()
	if err := s.waitSynced(ctx); err != nil {
		return err
	}

	// A stream's initial state is a list of every object it selects, held until sent: bounding
	// the streams that hold one bounds that memory when many clients (re)connect at once.
	select {
	case s.syncSlots <- struct{}{}:
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-s.ctx.Done():
		return status.Error(codes.Unavailable, "mesh API server is shutting down")
	}
	var releaseOnce sync.Once
	releaseSlot := func() { releaseOnce.Do(func() { <-s.syncSlots }) }
	defer releaseSlot()

	sub := newSubscriber(kinds, selectors, s.opts.SendQueueLength)
	snapshot := s.view.subscribe(sub)
	defer s.view.unsubscribe(sub)
	log := s.log.With("client", cluster, "selectors", len(selectors))
	log.Debug("watch started", "initial", len(snapshot))

	// The sends run on their own goroutine so that a client that stops reading, which blocks a
	// send on flow control, can still be cut off: returning from this handler ends the stream,
	// which unblocks that send.
	sent := make(chan error, 1)
	s.senders.Add(1)
	go func() {
		defer s.senders.Done()
		sent <- s.send(ctx, stream, sub, snapshot, releaseSlot)
	}()
	// The token and the certificate were checked when the stream opened; the stream may live for
	// days, so it ends when either stops being good.
	recheck := time.NewTicker(tokenRecheck)
	defer recheck.Stop()
	certExpired := time.NewTimer(time.Until(c.certExpiry))
	defer certExpired.Stop()
	for {
		select {
		case err := <-sent:
			return err
		case <-sub.tooSlow:
			s.metrics.slowDisconnect.Inc()
			log.Warn("disconnecting slow mesh client", "queueLength", s.opts.SendQueueLength)
			return status.Errorf(codes.ResourceExhausted, "client too slow: more than %d changes waiting to be sent; reconnect to resync", s.opts.SendQueueLength)
		case <-s.ctx.Done():
			return status.Error(codes.Unavailable, "mesh API server is shutting down")
		case <-recheck.C:
			if err := s.recheck(c); err != nil {
				return err
			}
		case <-certExpired.C:
			return s.certificateExpired(c)
		}
	}
}

// send writes the snapshot, the sync marker and then the queued changes to stream until the
// stream or the server ends. synced is called once the initial state is sent.
func (s *Server) send(ctx context.Context, stream grpc.ServerStreamingServer[apiv1.MeshWatchResponse], sub *subscriber, snapshot []*change, synced func()) error {
	if err := s.sendBatches(stream, snapshot); err != nil {
		return err
	}
	if err := stream.Send(&apiv1.MeshWatchResponse{SyncDone: true}); err != nil {
		return err
	}
	synced()
	for {
		select {
		case <-sub.notify:
			if err := s.sendBatches(stream, sub.take()); err != nil {
				return err
			}
		case <-sub.tooSlow:
			return nil // the handler ends the stream
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.ctx.Done():
			return nil
		}
	}
}

// sendBatches sends changes in responses of at most MaxChangesPerResponse changes and
// MaxResponseBytes bytes (a single larger change goes alone).
func (s *Server) sendBatches(stream grpc.ServerStreamingServer[apiv1.MeshWatchResponse], changes []*change) error {
	for len(changes) > 0 {
		n, size := 0, 0
		for n < len(changes) && n < s.opts.MaxChangesPerResponse {
			if n > 0 && size+changes[n].size > s.opts.MaxResponseBytes {
				break
			}
			size += changes[n].size
			n++
		}
		resp := &apiv1.MeshWatchResponse{Changes: make([]*apiv1.MeshChange, n)}
		for i, c := range changes[:n] {
			resp.Changes[i] = c.msg
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		s.metrics.eventsSent.Add(float64(n))
		changes = changes[n:]
	}
	return nil
}
