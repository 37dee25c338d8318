package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/palisade-mesh/palisade/monitor"
)

// Options configure a Proxy. Zero values take the documented defaults.
type Options struct {
	// SourceIdentity resolves a client address to its security identity (the agent passes the
	// datapath's ipcache). Required.
	SourceIdentity func(netip.Addr) (uint32, bool)
	// Publish receives one access-log event per request. Default: discarded.
	Publish func(monitor.Event)
	// Logger for connection-level errors. Default: slog.Default().
	Logger *slog.Logger

	// HeaderTimeout bounds reading a request's headers once its first byte arrived (slowloris).
	// Default 10s.
	HeaderTimeout time.Duration
	// IdleTimeout closes a client connection that sends no request for this long. Default 60s.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's or response's header block. Default 64 KiB.
	MaxHeaderBytes int
	// MaxDrainBytes bounds how much of a denied request's body is read and discarded to keep the
	// connection usable; a longer body closes the connection instead. Default 1 MiB.
	MaxDrainBytes int64
	// DialTimeout bounds connecting to the upstream server. Default 5s.
	DialTimeout time.Duration
	// MaxIdleUpstream is how many idle upstream connections an endpoint keeps per destination.
	// Default 32.
	MaxIdleUpstream int
}

func (o Options) withDefaults() Options {
	if o.Publish == nil {
		o.Publish = func(monitor.Event) {}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.HeaderTimeout == 0 {
		o.HeaderTimeout = 10 * time.Second
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 60 * time.Second
	}
	if o.MaxHeaderBytes == 0 {
		o.MaxHeaderBytes = 64 << 10
	}
	if o.MaxDrainBytes == 0 {
		o.MaxDrainBytes = 1 << 20
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.MaxIdleUpstream == 0 {
		o.MaxIdleUpstream = 32
	}
	return o
}

// Proxy serves the redirected flows of a node's endpoints. Close it to stop everything.
type Proxy struct {
	opts   Options
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	endpoints map[uint32]*Endpoint
	closed    bool
}

// New returns a proxy with no endpoints.
func New(opts Options) (*Proxy, error) {
	if opts.SourceIdentity == nil {
		return nil, errors.New("proxy options: SourceIdentity is required")
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Proxy{opts: opts.withDefaults(), ctx: ctx, cancel: cancel, endpoints: make(map[uint32]*Endpoint)}, nil
}

// EndpointConfig names an endpoint whose ingress traffic the proxy filters.
type EndpointConfig struct {
	ID       uint32
	Identity uint32
	Netns    Netns
}

// Endpoint returns the proxy state of an endpoint, creating it on first use. An endpoint denies
// everything until its first SetPolicy.
func (p *Proxy) Endpoint(cfg EndpointConfig) (*Endpoint, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("proxy is closed")
	}
	if ep, ok := p.endpoints[cfg.ID]; ok {
		ep.setIdentity(cfg.Identity)
		return ep, nil
	}
	ep := newEndpoint(p, cfg)
	p.endpoints[cfg.ID] = ep
	return ep, nil
}

// RemoveEndpoint closes the endpoint's listeners and connections.
func (p *Proxy) RemoveEndpoint(id uint32) {
	p.mu.Lock()
	ep := p.endpoints[id]
	delete(p.endpoints, id)
	p.mu.Unlock()
	if ep != nil {
		ep.close()
	}
}

// Close stops every endpoint and waits for their goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	eps := p.endpoints
	p.endpoints = map[uint32]*Endpoint{}
	p.mu.Unlock()
	p.cancel()
	for _, ep := range eps {
		ep.close()
	}
	return nil
}

func (p *Proxy) sourceIdentity(addr net.Addr) uint32 {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return 0
	}
	id, ok := p.opts.SourceIdentity(ta.AddrPort().Addr().Unmap())
	if !ok {
		return 0
	}
	return id
}
