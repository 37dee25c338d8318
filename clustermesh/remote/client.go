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
	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/policy"
	"github.com/palisade-mesh/palisade/policy/api"
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
	// scope is the selector set the current stream watches with; nil for a full watch.
	scope [][]api.Requirement
	// selectorsRefused: the selector set is beyond the server's limits and a full watch is used
	// instead (logged once until a usable set comes back).
	selectorsRefused bool

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

// Delivered returns what the consumer holds from this client, as upserts: a replacing client
// takes it from its Options.Initial. Call it only after Run returned.
func (c *Client) Delivered() Changes { return c.delivered.changes() }

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
	scope     [][]api.Requirement // the selectors watched with; nil for a full watch
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
	if c.opts.Initial != nil {
		c.delivered = viewOf(c.opts.Initial())
		c.updateStatus(func(s *Status) {
			s.Identities, s.IPCache, s.Nodes = len(c.delivered.identities), len(c.delivered.ipcache), len(c.delivered.nodes)
		})
	}
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
	// lost handles the end of a connection (cur already stopped).
	lost := func(err error) {
		c.ended(err)
		if !graceActive && c.delivered.size() > 0 {
			graceActive = true
			grace.Reset(c.opts.StaleGrace)
			c.updateStatus(func(s *Status) { s.Stale, s.StaleUntil = true, time.Now().Add(c.opts.StaleGrace) })
		}
		delay := bo.NextBackOff()
		c.opts.Logger.Debug("reconnecting", "in", delay)
		retry.Reset(delay)
	}
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
				lost(ev.err)
			case ev.connected != nil:
				c.connected(*ev.connected, ev.valid, ev.scope)
			case ev.resp != nil:
				synced, err := c.handle(ev.resp)
				if err != nil {
					// Beyond a limit: the stream ends, what was delivered stays until the grace
					// period ends, and the retry backs off like after any other failure.
					cur.stop()
					cur = nil
					lost(err)
				} else if synced {
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

// serverMaxRequestBytes is the mesh API server's receive limit (clustermesh/apiserver), less
// room for the gRPC framing: a larger watch request is refused before it is read.
const serverMaxRequestBytes = 4<<20 - 4<<10

// checkSelectors returns the selectors as the server will read them, or why it would refuse
// them (it answers InvalidArgument to every retry, so the remote would stay unreachable).
func checkSelectors(sels []*apiv1.MeshSelector) ([][]api.Requirement, error) {
	if len(sels) > clustermesh.MaxSelectors {
		return nil, fmt.Errorf("%d selectors, the mesh API accepts at most %d", len(sels), clustermesh.MaxSelectors)
	}
	reqs := make([][]api.Requirement, 0, len(sels))
	for i, s := range sels {
		r, err := clustermesh.SelectorFromProto(s)
		if err != nil {
			return nil, fmt.Errorf("selector %d: %w", i, err)
		}
		reqs = append(reqs, r)
	}
	if n := proto.Size(&apiv1.MeshWatchRequest{Selectors: sels}); n > serverMaxRequestBytes {
		return nil, fmt.Errorf("the watch request takes %d bytes, the mesh API server reads at most %d", n, serverMaxRequestBytes)
	}
	return reqs, nil
}

// start begins a connection attempt watching the current selectors, or everything when there
// are none or the server would refuse them.
func (c *Client) start(ctx context.Context) *attempt {
	sels := c.selectors()
	key := c.selectorsKey(sels)
	var scope [][]api.Requirement
	refusal := ""
	if len(sels) > 0 {
		var err error
		if scope, err = checkSelectors(sels); err != nil {
			refusal = "watching everything: the selectors exceed the mesh API's limits: " + err.Error()
			if !c.selectorsRefused {
				c.opts.Logger.Warn("the selectors exceed the mesh API's limits; watching everything instead", "selectors", len(sels), "error", err)
			}
			sels, scope = nil, nil
		}
	}
	c.selectorsRefused = refusal != ""
	ctx, cancel := context.WithCancel(ctx)
	a := &attempt{cancel: cancel, events: make(chan event, 16), done: make(chan struct{}), selectors: key}
	c.updateStatus(func(s *Status) { s.Selectors, s.SelectorsWarning = len(sels), refusal })
	go func() {
		defer close(a.done)
		err := c.connect(ctx, sels, scope, a.events)
		select {
		case a.events <- event{ended: true, err: err}:
		case <-ctx.Done():
		}
	}()
	return a
}

// connect dials the server, checks who it is and streams its state into events until the stream
// ends or ctx is cancelled.
func (c *Client) connect(ctx context.Context, sels []*apiv1.MeshSelector, scope [][]api.Requirement, events chan<- event) error {
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
		req.Selectors, scope = nil, nil
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
	if !send(event{connected: &info, valid: valid, scope: scope}) {
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

func (c *Client) connected(info Info, valid validator, scope [][]api.Requirement) {
	c.valid, c.pending, c.streamSynced, c.warned, c.scope = valid, newView(), false, false, scope
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

// handle takes one response of the stream; it reports whether it completed a sync, or why the
// stream must end (the remote cluster went beyond a limit; nothing of the response was taken).
func (c *Client) handle(resp *apiv1.MeshWatchResponse) (bool, error) {
	target := c.pending
	if c.streamSynced {
		target = c.delivered
	}
	changes := make([]change, 0, len(resp.Changes))
	var rejected uint64
	// Identities this response upserted (true) or deleted (false) so far, over what target holds.
	idsNow := map[identity.ID]bool{}
	for _, m := range resp.Changes {
		ch, err := c.valid.convert(m)
		if err == nil && c.scope != nil && !ch.deleted {
			err = c.outOfScope(ch, target, idsNow)
		}
		if err != nil {
			rejected++
			if !c.warned {
				c.warned = true
				c.opts.Logger.Warn("ignoring an invalid object from the remote cluster (further ones on this stream are logged at debug level)", "error", err)
			} else {
				c.opts.Logger.Debug("ignoring an invalid object from the remote cluster", "error", err)
			}
			// An upsert replaces: what its key held goes, rather than staying in force.
			del, ok := rejectedKey(m)
			if ch.kind != 0 {
				del, ok = ch.deletion(), true
			}
			if !ok {
				continue
			}
			ch = del
		}
		if ch.kind == kindIdentity {
			idsNow[ch.id] = !ch.deleted
		}
		changes = append(changes, ch)
	}
	if rejected > 0 {
		c.updateStatus(func(s *Status) { s.Rejected += rejected })
	}
	if err := c.checkLimits(target, changes); err != nil {
		return false, err
	}
	if c.streamSynced {
		if out := c.delivered.applyLive(changes); !out.Empty() {
			c.deliver(out)
		}
		return false, nil
	}
	for _, ch := range changes {
		c.pending.apply(ch)
	}
	if !resp.SyncDone {
		return false, nil
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
	return true, nil
}

// outOfScope says why a valid upsert of a selected watch is not taken: an identity none of the
// watched selectors selects, or an ipcache entry of an identity the client does not hold. A
// correct server sends neither; a compromised one could fill the datapath with them.
func (c *Client) outOfScope(ch change, target *view, idsNow map[identity.ID]bool) error {
	switch ch.kind {
	case kindIdentity:
		for _, sel := range c.scope {
			if policy.Matches(sel, ch.labels) {
				return nil
			}
		}
		return fmt.Errorf("identity %d matches none of the watched selectors", ch.id)
	case kindIPCache:
		held, seen := idsNow[ch.entry.Identity]
		if !seen {
			_, held = target.identities[ch.entry.Identity]
		}
		if !held {
			return fmt.Errorf("ipcache %s: identity %d was not sent for the watched selectors", ch.entry.Prefix, ch.entry.Identity)
		}
	}
	return nil
}

// checkLimits refuses changes that would make target hold more than the options allow.
func (c *Client) checkLimits(target *view, changes []change) error {
	ids, ips, nodes := target.sizesAfter(changes)
	for _, l := range []struct {
		what       string
		n, max     int
		optionName string
	}{
		{"identities", ids, c.opts.MaxIdentities, "MaxIdentities"},
		{"ipcache entries", ips, c.opts.MaxIPCache, "MaxIPCache"},
		{"nodes", nodes, c.opts.MaxNodes, "MaxNodes"},
	} {
		if l.n > l.max {
			return fmt.Errorf("remote cluster %q sent more than %d %s (the limit %s); ending the stream and keeping what was delivered before", c.opts.Config.Name, l.max, l.what, l.optionName)
		}
	}
	return nil
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
