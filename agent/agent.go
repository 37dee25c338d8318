package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/palisade-mesh/palisade/agent/ipam"
	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/bpf"
	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/monitor"
)

// Version is reported in the node registry and status; cmd sets it from the build.
var Version = "dev"

// Agent is the node daemon. Create it with New, run it with Run.
type Agent struct {
	cfg      Config
	log      *slog.Logger
	registry *prometheus.Registry
	filter   *identity.Filter
	cluster  identity.ClusterConfig

	kv      *kvstore.Client
	alloc   *identity.Allocator
	dp      *bpf.Datapath
	ipam    *ipam.IPAM
	store   *stateStore
	hub     *monitor.Hub
	routes  *nodeRoutes
	ipcache *clusterIPCache
	policy  *policyState
	mesh    *clusterMesh // remote clusters (clustermesh.go)
	l7      *l7Proxy
	metrics *metrics
	started time.Time
	health  healthState // gossip membership (health.go)

	// session holds the node's leased keys (node entry, ipcache entries); replaced when lost.
	sessionMu sync.Mutex
	session   *kvstore.Session

	mu        sync.Mutex
	endpoints map[uint32]*endpoint
	// createMu serialises endpoint creation and deletion so IDs and names are decided once.
	createMu sync.Mutex

	regen chan struct{} // coalesced requests to recompute every endpoint's policy

	// runCtx and bg own work started from callbacks (e.g. identity loss); stopping the agent
	// cancels it and waits for it.
	runCtx  context.Context
	stopRun context.CancelFunc
	bg      sync.WaitGroup
}

// background runs fn on its own goroutine under the agent's run context.
func (a *Agent) background(fn func(context.Context)) {
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		fn(a.runCtx)
	}()
}

// New connects to the kvstore, checks the cluster configuration, opens (or adopts) the datapath
// and loads the saved endpoint state. It does not start serving: Run does.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Agent, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	log = log.With("node", cfg.NodeName, "cluster", cfg.ClusterName)
	if !cfg.NodeIP.IsValid() {
		ip, err := firstGlobalIPv4(cfg.PodCIDR)
		if err != nil {
			return nil, err
		}
		cfg.NodeIP = ip
	}
	filter, err := identity.NewFilter(cfg.LabelPatterns)
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg:       cfg,
		log:       log,
		registry:  prometheus.NewRegistry(),
		filter:    filter,
		hub:       monitor.NewHub(),
		endpoints: make(map[uint32]*endpoint),
		regen:     make(chan struct{}, 1),
		started:   time.Now(),
		cluster: identity.ClusterConfig{
			Name:                 cfg.ClusterName,
			ID:                   cfg.ClusterID,
			MaxConnectedClusters: cfg.MaxConnectedClusters,
		},
	}
	a.runCtx, a.stopRun = context.WithCancel(context.Background())
	a.routes = newNodeRoutes(cfg.NodeName, log)
	a.ipcache = newClusterIPCache()
	a.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	ok := false
	defer func() {
		if !ok {
			a.closeResources()
		}
	}()
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	if a.store, err = newStateStore(cfg.StateDir); err != nil {
		return nil, err
	}
	if a.ipam, err = ipam.Open(cfg.PodCIDR, filepath.Join(cfg.StateDir, "ipam.json")); err != nil {
		return nil, err
	}
	// Forwarding between endpoints and to other nodes happens in this (the node's) namespace.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return nil, fmt.Errorf("enable IPv4 forwarding: %w", err)
	}
	if a.dp, err = bpf.Open(bpf.Options{PinDir: cfg.BPFPinDir, Logger: log}); err != nil {
		return nil, fmt.Errorf("open datapath: %w", err)
	}
	kvCfg := kvstore.Config{
		Endpoints:  cfg.KvstoreEndpoints,
		Prefix:     cfg.KvstorePrefix,
		Registerer: a.registry,
		Logger:     log,
	}
	if cfg.KvstoreCAFile != "" || cfg.KvstoreCertFile != "" {
		kvCfg.TLS = &kvstore.TLSConfig{CAFile: cfg.KvstoreCAFile, CertFile: cfg.KvstoreCertFile, KeyFile: cfg.KvstoreKeyFile}
	}
	if a.kv, err = kvstore.New(ctx, kvCfg); err != nil {
		return nil, fmt.Errorf("connect to kvstore %v: %w", cfg.KvstoreEndpoints, err)
	}
	if a.alloc, err = identity.NewAllocator(ctx, a.kv, identity.AllocatorConfig{
		Node:     cfg.NodeName,
		Cluster:  a.cluster,
		LeaseTTL: cfg.LeaseTTL,
		Logger:   log,
		OnLost:   a.identityLost,
	}); err != nil {
		return nil, err
	}
	if a.policy, err = newPolicyState(a); err != nil {
		return nil, err
	}
	a.mesh = newClusterMesh(meshOptions{
		dir:          cfg.ClusterMeshConfigDir,
		localName:    cfg.ClusterName,
		localID:      cfg.ClusterID,
		layout:       identity.Layout{MaxConnectedClusters: cfg.MaxConnectedClusters},
		syncTimeout:  cfg.ClusterMeshSyncTimeout,
		staleGrace:   cfg.ClusterMeshStaleGrace,
		fullWatch:    cfg.ClusterMeshFullWatch,
		selectorsFor: a.policy.engine.SelectorsFor,
		log:          log.With("component", "clustermesh"),
	}, agentMeshSink{a})
	if a.l7, err = newL7Proxy(a); err != nil {
		return nil, err
	}
	a.metrics = newMetrics(a)
	ok = true
	return a, nil
}

// Run serves until ctx ends. On return the datapath keeps enforcing the last state: nothing is
// detached, and the node's leased keys expire on their own unless a restarted agent renews them.
func (a *Agent) Run(ctx context.Context) error {
	defer a.closeResources()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	ln, err := listenSocket(a.cfg.SocketPath)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	apiv1.RegisterAgentServer(srv, &apiServer{a: a})

	var wg sync.WaitGroup
	goFn := func(name string, fn func(context.Context)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(ctx)
			a.log.Debug("stopped", "component", name)
		}()
	}

	if err := a.renewSession(ctx); err != nil {
		ln.Close()
		return err
	}
	goFn("session", a.keepSession)
	goFn("nodes", a.watchNodes)
	goFn("health", a.runHealth)
	goFn("ipcache", a.watchIPCache)
	goFn("identities", a.watchIdentities)
	goFn("policies", a.watchPolicies)
	goFn("regenerate", a.regenerateLoop)
	goFn("clustermesh", func(ctx context.Context) {
		// Remote pod CIDRs and ipcache entries are checked against the local nodes' pod CIDRs:
		// not before the node registry has listed them.
		if a.routes.waitRegistrySynced(ctx) == nil {
			a.mesh.run(ctx, a.policy.policiesSynced)
		}
	})
	goFn("events", a.forwardEvents)
	goFn("conntrack-gc", func(ctx context.Context) { a.dp.Conntrack().RunGC(ctx, 30*time.Second) })
	if a.cfg.MetricsAddr != "" {
		goFn("metrics", a.serveMetrics)
	}

	// Endpoints come back before the API opens, so a CLI never sees a half-restored node.
	if err := a.policy.waitSynced(ctx); err != nil {
		a.log.Warn("starting before policies and identities synced", "error", err)
	}
	if err := a.mesh.waitSynced(ctx); err != nil {
		a.log.Warn("restoring endpoints before every remote cluster synced", "error", err)
	}
	a.routes.sourceSynced(routesFromMesh)
	a.restoreEndpoints(ctx)
	goFn("ipcache-prune", a.pruneIPCache)

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	a.log.Info("agent running", "socket", a.cfg.SocketPath, "pod_cidr", a.cfg.PodCIDR, "node_ip", a.cfg.NodeIP, "endpoints", len(a.Endpoints()))

	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("agent API: %w", err)
	}
	srv.GracefulStop()
	cancel()
	wg.Wait()
	a.sessionMu.Lock()
	if a.session != nil {
		a.session.Orphan()
	}
	a.sessionMu.Unlock()
	a.log.Info("agent stopped; the datapath keeps enforcing")
	return err
}

func (a *Agent) closeResources() {
	a.stopRun()
	a.bg.Wait()
	a.l7.close()
	if a.alloc != nil {
		// References stay until the lease expires, as after a crash: a restarted agent takes them
		// over, and garbage collection never sees its identities unreferenced meanwhile.
		a.alloc.CloseKeepReferences()
	}
	if a.kv != nil {
		a.kv.Close()
	}
	if a.dp != nil {
		a.dp.Close()
	}
}

func (a *Agent) serveMetrics(ctx context.Context) {
	srv := &http.Server{
		Addr:              a.cfg.MetricsAddr,
		Handler:           promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{}),
		ReadHeaderTimeout: 5 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.log.Error("metrics server", "addr", a.cfg.MetricsAddr, "error", err)
	}
}

// renewSession makes a new node session and (re)writes every leased key the node owns.
func (a *Agent) renewSession(ctx context.Context) error {
	s, err := a.kv.NewSession(ctx, a.cfg.LeaseTTL)
	if err != nil {
		return fmt.Errorf("node session: %w", err)
	}
	a.sessionMu.Lock()
	a.session = s
	a.sessionMu.Unlock()
	if err := a.registerNode(ctx); err != nil {
		return err
	}
	for _, ep := range a.endpointList() {
		if err := a.publishIPCache(ctx, ep); err != nil {
			a.log.Warn("republish ipcache entry", "endpoint", ep.rec.ID, "error", err)
		}
	}
	return nil
}

// keepSession replaces the node session when its lease is lost (etcd unreachable for longer than
// the TTL), retrying until it succeeds.
func (a *Agent) keepSession(ctx context.Context) {
	for {
		a.sessionMu.Lock()
		done := a.session.Done()
		a.sessionMu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-done:
		}
		a.log.Warn("node lease lost; renewing")
		for backoff := time.Second; ; backoff = min(2*backoff, 30*time.Second) {
			if err := a.renewSession(ctx); err == nil {
				break
			} else {
				a.log.Warn("renew node session", "error", err, "retry_in", backoff)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
	}
}

// leaseFor returns the lease to attach a new node-owned key to. While the node session is being
// renewed (after etcd was unreachable for longer than the lease TTL) it waits for the new one.
func (a *Agent) leaseFor(ctx context.Context) (kvstore.LeaseID, error) {
	for {
		a.sessionMu.Lock()
		s := a.session
		a.sessionMu.Unlock()
		if s == nil {
			return 0, errors.New("no node session yet")
		}
		lease, err := s.Acquire(ctx)
		select {
		case <-s.Done():
		default:
			return lease, err
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("wait for the node session to be renewed: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (a *Agent) registerNode(ctx context.Context) error {
	info := NodeInfo{
		Name:       a.cfg.NodeName,
		Cluster:    a.cfg.ClusterName,
		IPs:        []string{a.cfg.NodeIP.String()},
		PodCIDRs:   []string{a.cfg.PodCIDR.String()},
		HealthAddr: a.healthAddr(),
		Version:    Version,
	}
	raw, err := json.Marshal(info)
	if err != nil {
		return err
	}
	lease, err := a.leaseFor(ctx)
	if err != nil {
		return fmt.Errorf("register node: %w", err)
	}
	if err := a.kv.Put(ctx, nodeKey(a.cfg.NodeName), raw, lease); err != nil {
		return fmt.Errorf("register node %s: %w", a.cfg.NodeName, err)
	}
	return nil
}

func (a *Agent) watchNodes(ctx context.Context) {
	for ev := range a.kv.Watch(ctx, nodesPrefix) {
		a.routes.handle(ev)
	}
}

// Nodes lists the cluster's registered nodes.
func (a *Agent) Nodes(ctx context.Context) ([]*apiv1.Node, error) {
	kvs, _, err := a.kv.List(ctx, nodesPrefix)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	var out []*apiv1.Node
	for _, kv := range kvs {
		var n NodeInfo
		if err := json.Unmarshal(kv.Value, &n); err != nil {
			continue
		}
		out = append(out, &apiv1.Node{
			Name: n.Name, Cluster: n.Cluster, Addresses: n.IPs, PodCidrs: n.PodCIDRs,
			State: "registered", Version: n.Version, Local: n.Name == a.cfg.NodeName,
		})
	}
	return a.withHealth(out), nil
}

// forwardEvents turns datapath verdicts into monitor events.
func (a *Agent) forwardEvents(ctx context.Context) {
	events, err := a.dp.Events(ctx)
	if err != nil {
		a.log.Error("datapath events unavailable", "error", err)
		return
	}
	for ev := range events {
		a.hub.Publish(a.monitorEvent(ev))
	}
}
