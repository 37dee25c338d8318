package remote

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/certs/meshtls"
	"github.com/palisade-mesh/palisade/clustermesh"
)

const (
	// maxRecvMsgSize bounds one response of the server (a chunk of the initial state).
	maxRecvMsgSize   = 16 << 20
	keepaliveTime    = 30 * time.Second
	keepaliveTimeout = 10 * time.Second
)

// Client imports one remote cluster. Create it with New, run it with Run; Status, UpdateSelectors
// and Name are safe to call from any goroutine.
type Client struct {
	opts     Options
	tls      *tls.Config
	token    *tokenFile
	reselect chan struct{}

	// Owned by Run's goroutine.
	delivered    *view // what the consumer holds
	pending      *view // the current stream's state until its initial state is complete
	streamSynced bool
	valid        validator
	warned       bool // a rejection was logged at warning level on this stream

	mu     sync.Mutex
	status Status
}

// New checks the options and loads the certificate, key, CA bundle and token. It does not connect.
func New(opts Options) (*Client, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	cfg := opts.Config
	src, err := meshtls.NewSource(meshtls.SourceOptions{CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, CAFile: cfg.CAFile, Logger: opts.Logger})
	if err != nil {
		return nil, fmt.Errorf("remote cluster %s: %w", cfg.Name, err)
	}
	tlsCfg, err := meshtls.ClientConfig(src, meshtls.ClientOptions{ServerCluster: cfg.Name})
	if err != nil {
		return nil, fmt.Errorf("remote cluster %s: %w", cfg.Name, err)
	}
	tok, err := openTokenFile(cfg.TokenFile, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("remote cluster %s: %w", cfg.Name, err)
	}
	c := &Client{
		opts:      opts,
		tls:       tlsCfg,
		token:     tok,
		reselect:  make(chan struct{}, 1),
		delivered: newView(),
		status:    Status{Cluster: cfg.Name, Address: cfg.Address},
	}
	return c, nil
}

// Name is the remote cluster's name.
func (c *Client) Name() string { return c.opts.Config.Name }

// Config is the configuration the client was made with.
func (c *Client) Config() clustermesh.RemoteConfig { return c.opts.Config }

// UpdateSelectors makes the client look at Options.Selectors again; if the set changed, the
// stream restarts with the new set and, once complete, only the differences are delivered.
func (c *Client) UpdateSelectors() {
	select {
	case c.reselect <- struct{}{}:
	default:
	}
}

// Status returns a snapshot of the client's state.
func (c *Client) Status() Status {
	_, expiry, _ := c.token.current()
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.status
	st.TokenExpiry = expiry
	if st.Info != nil {
		info := *st.Info
		st.Info = &info
	}
	return st
}

func (c *Client) updateStatus(fn func(*Status)) {
	c.mu.Lock()
	fn(&c.status)
	c.mu.Unlock()
}

// event is what a connection attempt reports to Run.
type event struct {
	connected *Info // Info accepted and the watch stream open
	valid     validator
	resp      *apiv1.MeshWatchResponse
	ended     bool // the attempt is over, with err
	err       error
}

// attempt is one connection: dial, Info, Watch, receive. It runs on its own goroutine, owned by
// Run, which stops it by cancelling and waiting.
type attempt struct {
	cancel    context.CancelFunc
	events    chan event
	done      chan struct{}
	selectors string // canonical form of the selectors it watches with
}

func (a *attempt) stop() {
	a.cancel()
	<-a.done
}

// Run connects and imports until ctx ends, reconnecting with exponential backoff and jitter. What
// was delivered stays with the consumer when Run returns (the caller decides whether to withdraw
// it). Run returns nil when ctx ends; call it once.
func (c *Client) Run(ctx context.Context) error {
	bo := &backoff.ExponentialBackOff{
		InitialInterval:     c.opts.MinBackoff,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         c.opts.MaxBackoff,
	}
	bo.Reset()
	var (
		cur         *attempt
		startNow    = true
		retry       = newStoppedTimer()
		grace       = newStoppedTimer()
		graceActive bool
	)
	defer func() {
		if cur != nil {
			cur.stop()
		}
		retry.Stop()
		grace.Stop()
	}()
	for {
		if cur == nil && startNow {
			cur = c.start(ctx)
			startNow = false
		}
		var events chan event
		if cur != nil {
			events = cur.events
		}
		select {
		case <-ctx.Done():
			return nil
		case ev := <-events:
			switch {
			case ev.ended:
				<-cur.done
				cur = nil
				c.ended(ev.err)
				if !graceActive && c.delivered.size() > 0 {
					graceActive = true
					grace.Reset(c.opts.StaleGrace)
					c.updateStatus(func(s *Status) { s.Stale, s.StaleUntil = true, time.Now().Add(c.opts.StaleGrace) })
				}
				delay := bo.NextBackOff()
				c.opts.Logger.Debug("reconnecting", "in", delay)
				retry.Reset(delay)
			case ev.connected != nil:
				c.connected(*ev.connected, ev.valid)
			case ev.resp != nil:
				if c.handle(ev.resp) {
					bo.Reset()
					if graceActive {
						graceActive = false
						grace.Stop()
					}
				}
			}
		case <-c.reselect:
			if cur != nil && c.selectorsKey(c.selectors()) != cur.selectors {
				c.opts.Logger.Info("selectors changed; restarting the watch")
				cur.stop()
				cur = nil
				c.pending, c.streamSynced = nil, false
				c.updateStatus(func(s *Status) { s.Synced = false })
				startNow = true
			}
		case <-retry.C:
			startNow = true
		case <-grace.C:
			graceActive = false
			c.expire()
		}
	}
}

func newStoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

func (c *Client) selectors() []*apiv1.MeshSelector {
	if c.opts.Selectors == nil {
		return nil
	}
	reqs := c.opts.Selectors()
	out := make([]*apiv1.MeshSelector, 0, len(reqs))
	for _, r := range reqs {
		out = append(out, clustermesh.SelectorToProto(r))
	}
	return out
}

// selectorsKey is a canonical form of a selector set, to tell whether it changed.
func (c *Client) selectorsKey(sels []*apiv1.MeshSelector) string {
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(&apiv1.MeshWatchRequest{Selectors: sels})
	if err != nil {
		return fmt.Sprint(sels) // cannot happen with valid messages; still a stable key
	}
	return string(raw)
}

// start begins a connection attempt watching the current selectors.
func (c *Client) start(ctx context.Context) *attempt {
	sels := c.selectors()
	ctx, cancel := context.WithCancel(ctx)
	a := &attempt{cancel: cancel, events: make(chan event, 16), done: make(chan struct{}), selectors: c.selectorsKey(sels)}
	c.updateStatus(func(s *Status) { s.Selectors = len(sels) })
	go func() {
		defer close(a.done)
		err := c.connect(ctx, sels, a.events)
		select {
		case a.events <- event{ended: true, err: err}:
		case <-ctx.Done():
		}
	}()
	return a
}

// connect dials the server, checks who it is and streams its state into events until the stream
// ends or ctx is cancelled.
func (c *Client) connect(ctx context.Context, sels []*apiv1.MeshSelector, events chan<- event) error {
	cfg := c.opts.Config
	conn, err := grpc.NewClient(cfg.Address,
		grpc.WithTransportCredentials(credentials.NewTLS(c.tls)),
		grpc.WithPerRPCCredentials(c.token),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize)),
		// Pings find a server that vanished without closing the connection (a partition); the
		// mesh API server accepts one every 10s at most.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
	)
	if err != nil {
		return fmt.Errorf("dial %s: %w", cfg.Address, err)
	}
	defer conn.Close()
	mesh := apiv1.NewMeshClient(conn)

	infoCtx, cancel := context.WithTimeout(ctx, c.opts.CallTimeout)
	mi, err := mesh.Info(infoCtx, &apiv1.MeshInfoRequest{})
	cancel()
	if err != nil {
		return fmt.Errorf("ask %s who it is (Info): %w", cfg.Address, err)
	}
	info, valid, err := c.checkInfo(mi)
	if err != nil {
		return err
	}
	req := &apiv1.MeshWatchRequest{Selectors: sels}
	if len(sels) > 0 && !info.Has(clustermesh.CapabilityWatchSelectors) {
		c.opts.Logger.Warn("the server cannot watch by selector; watching everything", "selectors", len(sels))
		req.Selectors = nil
	}
	stream, err := mesh.Watch(ctx, req)
	if err != nil {
		return fmt.Errorf("watch %s: %w", cfg.Address, err)
	}
	send := func(ev event) bool {
		select {
		case events <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	if !send(event{connected: &info, valid: valid}) {
		return ctx.Err()
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("watch %s: %w", cfg.Address, err)
		}
		if !send(event{resp: resp}) {
			return ctx.Err()
		}
	}
}

// checkInfo accepts the server's answer to Info or says why not.
func (c *Client) checkInfo(m *apiv1.MeshInfo) (Info, validator, error) {
	info := infoFromProto(m)
	name, layout := c.opts.Config.Name, c.opts.Layout
	if info.Cluster != name {
		return info, validator{}, fmt.Errorf("the mesh API server at %s serves cluster %q, but this configuration is for cluster %q", c.opts.Config.Address, info.Cluster, name)
	}
	if err := layout.ValidateClusterID(info.ClusterID); err != nil {
		return info, validator{}, fmt.Errorf("cluster %q: %w", name, err)
	}
	if info.MaxConnectedClusters != 0 && int(info.MaxConnectedClusters) != layout.MaxConnectedClusters {
		return info, validator{}, fmt.Errorf("cluster %q uses the identity layout for %d clusters, this cluster the one for %d: every cluster of a mesh must use the same", name, info.MaxConnectedClusters, layout.MaxConnectedClusters)
	}
	if !info.Has(clustermesh.CapabilityWatch) {
		return info, validator{}, fmt.Errorf("cluster %q: its mesh API server does not offer %q (capabilities %v)", name, clustermesh.CapabilityWatch, info.Capabilities)
	}
	if c.opts.Check != nil {
		if err := c.opts.Check(info); err != nil {
			return info, validator{}, fmt.Errorf("refused: %w", err)
		}
	}
	return info, validator{cluster: name, clusterID: info.ClusterID, layout: layout}, nil
}

func (c *Client) connected(info Info, valid validator) {
	c.valid, c.pending, c.streamSynced, c.warned = valid, newView(), false, false
	c.opts.Logger.Info("connected", "address", c.opts.Config.Address, "cluster_id", info.ClusterID, "version", info.Version)
	c.updateStatus(func(s *Status) {
		s.Connected, s.Synced, s.Info = true, false, &info
	})
}

func (c *Client) ended(err error) {
	c.pending, c.streamSynced = nil, false
	if err == nil {
		err = errors.New("connection ended")
	}
	c.opts.Logger.Warn("remote cluster unavailable", "address", c.opts.Config.Address, "error", err)
	c.updateStatus(func(s *Status) {
		s.Connected, s.Synced = false, false
		s.LastError, s.LastErrorTime = err.Error(), time.Now()
	})
}

// handle takes one response of the stream; it reports whether it completed a sync.
func (c *Client) handle(resp *apiv1.MeshWatchResponse) bool {
	changes := make([]change, 0, len(resp.Changes))
	var rejected uint64
	for _, m := range resp.Changes {
		ch, err := c.valid.convert(m)
		if err != nil {
			rejected++
			if !c.warned {
				c.warned = true
				c.opts.Logger.Warn("ignoring an invalid object from the remote cluster (further ones on this stream are logged at debug level)", "error", err)
			} else {
				c.opts.Logger.Debug("ignoring an invalid object from the remote cluster", "error", err)
			}
			continue
		}
		changes = append(changes, ch)
	}
	if rejected > 0 {
		c.updateStatus(func(s *Status) { s.Rejected += rejected })
	}
	if c.streamSynced {
		if out := c.delivered.applyLive(changes); !out.Empty() {
			c.deliver(out)
		}
		return false
	}
	for _, ch := range changes {
		c.pending.apply(ch)
	}
	if !resp.SyncDone {
		return false
	}
	out := diff(c.delivered, c.pending)
	out.Synced = true
	c.delivered, c.pending, c.streamSynced = c.pending, nil, true
	c.opts.Logger.Info("synced", "identities", len(c.delivered.identities), "ipcache", len(c.delivered.ipcache), "nodes", len(c.delivered.nodes),
		"upserted", len(out.Identities)+len(out.IPCache)+len(out.Nodes), "deleted", len(out.DeletedIdentities)+len(out.DeletedIPCache)+len(out.DeletedNodes))
	c.deliver(out)
	c.updateStatus(func(s *Status) {
		s.Synced, s.Stale, s.StaleUntil, s.LastSync = true, false, time.Time{}, time.Now()
		s.LastError, s.LastErrorTime = "", time.Time{}
	})
	return true
}

// expire withdraws everything delivered: the connection has been lost for the grace period.
func (c *Client) expire() {
	c.opts.Logger.Warn("remote cluster unavailable for the grace period; withdrawing its entries",
		"identities", len(c.delivered.identities), "ipcache", len(c.delivered.ipcache), "nodes", len(c.delivered.nodes))
	out := diff(c.delivered, newView())
	c.delivered = newView()
	c.deliver(out)
	c.updateStatus(func(s *Status) { s.Stale, s.StaleUntil = false, time.Time{} })
}

func (c *Client) deliver(ch Changes) {
	c.opts.Consumer.Apply(ch)
	c.updateStatus(func(s *Status) {
		s.Identities, s.IPCache, s.Nodes = len(c.delivered.identities), len(c.delivered.ipcache), len(c.delivered.nodes)
	})
}
