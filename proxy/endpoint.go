package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/policy"
)

// Endpoint is the proxy of one endpoint: its listeners (one per proxy port), its current policy
// and its pool of upstream connections.
type Endpoint struct {
	p        *Proxy
	id       uint32
	netns    Netns
	identity atomic.Uint32
	rules    atomic.Pointer[rules]

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// upstreamOverride replaces the original destination (tests without the datapath redirect,
	// where the listener itself is what clients dial).
	upstreamOverride string

	mu        sync.Mutex
	listeners map[uint16]*net.TCPListener
	conns     map[net.Conn]struct{}
	idle      map[string][]*upstream
	dials     atomic.Int64    // upstream connections made (tests check pooling)
	h2        *http.Transport // HTTP/2 cleartext upstreams (gRPC), created on first use
	closed    bool
}

func newEndpoint(p *Proxy, cfg EndpointConfig) *Endpoint {
	ctx, cancel := context.WithCancel(p.ctx)
	ep := &Endpoint{
		p: p, id: cfg.ID, netns: cfg.Netns, ctx: ctx, cancel: cancel,
		listeners: map[uint16]*net.TCPListener{},
		conns:     map[net.Conn]struct{}{},
		idle:      map[string][]*upstream{},
	}
	ep.identity.Store(cfg.Identity)
	ep.rules.Store(&rules{})
	return ep
}

func (ep *Endpoint) setIdentity(id uint32) { ep.identity.Store(id) }

// SetPolicy installs the endpoint's computed policy; requests after this call are judged by it.
// The proxy only reads ingress entries. The map must not be modified afterwards.
func (ep *Endpoint) SetPolicy(ms policy.MapState) {
	ep.rules.Store(&rules{ms: ms})
}

// Listen opens the listener for proxyPort inside the endpoint's namespace and serves it. The
// caller registers the returned listener with the datapath; the proxy port is only that
// registration's key, the listener's own port is ephemeral. Listening again on a port that has a
// listener returns the existing one.
func (ep *Endpoint) Listen(proxyPort uint16) (*net.TCPListener, error) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.closed {
		return nil, fmt.Errorf("endpoint %d: proxy endpoint is closed", ep.id)
	}
	if ln, ok := ep.listeners[proxyPort]; ok {
		return ln, nil
	}
	ln, err := ep.netns.Listen(ep.ctx, "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("endpoint %d proxy port %d: %w", ep.id, proxyPort, err)
	}
	ep.listeners[proxyPort] = ln
	ep.wg.Add(1)
	go ep.acceptLoop(ln)
	return ln, nil
}

// CloseListener stops accepting on proxyPort; connections already accepted continue.
func (ep *Endpoint) CloseListener(proxyPort uint16) {
	ep.mu.Lock()
	ln := ep.listeners[proxyPort]
	delete(ep.listeners, proxyPort)
	ep.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
}

func (ep *Endpoint) close() {
	ep.mu.Lock()
	ep.closed = true
	for _, ln := range ep.listeners {
		ln.Close()
	}
	ep.listeners = map[uint16]*net.TCPListener{}
	for c := range ep.conns {
		c.Close()
	}
	for _, ups := range ep.idle {
		for _, u := range ups {
			u.conn.Close()
		}
	}
	ep.idle = map[string][]*upstream{}
	h2 := ep.h2
	ep.mu.Unlock()
	if h2 != nil {
		h2.CloseIdleConnections()
	}
	ep.cancel()
	ep.wg.Wait()
}

func (ep *Endpoint) track(c net.Conn) bool {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.closed {
		return false
	}
	ep.conns[c] = struct{}{}
	return true
}

func (ep *Endpoint) untrack(c net.Conn) {
	ep.mu.Lock()
	delete(ep.conns, c)
	ep.mu.Unlock()
}

func (ep *Endpoint) acceptLoop(ln *net.TCPListener) {
	defer ep.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				ep.p.opts.Logger.Warn("proxy accept", "endpoint", ep.id, "error", err)
			}
			return
		}
		if !ep.track(c) {
			c.Close()
			return
		}
		ep.wg.Add(1)
		go func() {
			defer ep.wg.Done()
			defer ep.untrack(c)
			defer c.Close()
			ep.serve(c)
		}()
	}
}

// serve dispatches a redirected connection by the parser of the rules that apply to it.
func (ep *Endpoint) serve(c net.Conn) {
	cc := newClientConn(ep, c)
	d := cc.decide()
	switch {
	case !d.allowed:
		// The datapath only redirects what policy allows; this flow lost its allow in between.
		return
	case d.l7 == nil:
		ep.relay(cc)
	case d.l7.Parser == policy.ParserHTTP:
		ep.serveHTTP(cc)
	default:
		ep.serveGeneric(cc, d.l7.Parser)
	}
}

// relay passes a connection through unfiltered: a rule without L7 rules allows its source.
func (ep *Endpoint) relay(cc *clientConn) {
	up, err := ep.dialUpstream(cc.origDst)
	if err != nil {
		ep.p.opts.Logger.Warn("proxy upstream", "endpoint", ep.id, "error", err)
		return
	}
	defer up.conn.Close()
	pipe(cc.conn, up.conn)
}

// pipe copies both directions until either ends, then closes both.
func pipe(a, b net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(b, a)
		closeWrite(b)
	}()
	_, _ = io.Copy(a, b)
	closeWrite(a)
	<-done
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
		return
	}
	_ = c.Close()
}

// upstream is a connection to the original destination, with its buffers.
type upstream struct {
	addr string
	conn net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
}

func (ep *Endpoint) dialUpstream(addr string) (*upstream, error) {
	ctx, cancel := context.WithTimeout(ep.ctx, ep.p.opts.DialTimeout)
	defer cancel()
	c, err := ep.netns.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	ep.dials.Add(1)
	sock := newSockIO(c)
	return &upstream{addr: addr, conn: c, br: bufio.NewReaderSize(sock, 16<<10), bw: bufio.NewWriterSize(sock, 16<<10)}, nil
}

// getUpstream returns an idle pooled connection to addr, or a new one.
func (ep *Endpoint) getUpstream(addr string) (*upstream, error) {
	ep.mu.Lock()
	if ups := ep.idle[addr]; len(ups) > 0 {
		u := ups[len(ups)-1]
		ep.idle[addr] = ups[:len(ups)-1]
		ep.mu.Unlock()
		return u, nil
	}
	ep.mu.Unlock()
	return ep.dialUpstream(addr)
}

// putUpstream returns a connection that finished a response cleanly to the pool.
func (ep *Endpoint) putUpstream(u *upstream) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.closed || len(ep.idle[u.addr]) >= ep.p.opts.MaxIdleUpstream || u.br.Buffered() > 0 {
		u.conn.Close()
		return
	}
	ep.idle[u.addr] = append(ep.idle[u.addr], u)
}

// clientConn is one redirected connection.
type clientConn struct {
	ep      *Endpoint
	conn    net.Conn
	origDst string
	dport   uint16
	srcID   uint32
	// The connection's addresses as the access log shows them, converted once per connection.
	srcAddr, dstAddr netip.AddrPort
}

func newClientConn(ep *Endpoint, c net.Conn) *clientConn {
	cc := &clientConn{ep: ep, conn: c, origDst: c.LocalAddr().String(), srcAddr: addrPort(c.RemoteAddr()), dstAddr: addrPort(c.LocalAddr())}
	if la, ok := c.LocalAddr().(*net.TCPAddr); ok {
		cc.dport = uint16(la.Port)
	}
	cc.srcID = ep.p.sourceIdentity(c.RemoteAddr())
	if ep.upstreamOverride != "" {
		cc.origDst = ep.upstreamOverride
		if _, port, err := net.SplitHostPort(ep.upstreamOverride); err == nil {
			if n, err := strconv.Atoi(port); err == nil {
				cc.dport = uint16(n)
			}
		}
	}
	return cc
}

// decide returns what the endpoint's current policy says about this connection's source.
func (cc *clientConn) decide() decision {
	return cc.ep.rules.Load().lookup(identity.ID(cc.srcID), cc.dport)
}

// rules is an immutable policy snapshot with a per-(source, port) decision cache.
type rules struct {
	ms    policy.MapState
	cache sync.Map // uint64(src)<<16|port -> decision
}

// decision is what applies to a source on a port: denied, allowed without L7 rules (l7 nil), or
// allowed subject to l7.
type decision struct {
	allowed bool
	l7      *policy.L7Policy
}

func (r *rules) lookup(src identity.ID, port uint16) decision {
	key := uint64(src)<<16 | uint64(port)
	if d, ok := r.cache.Load(key); ok {
		return d.(decision)
	}
	var d decision
	if v, ok := r.ms.Lookup(src, policy.Ingress, policy.ProtoTCP, port); ok && !v.Deny {
		d = decision{allowed: true, l7: v.L7}
		if v.Redirect && v.L7 == nil {
			// A redirect with no rules cannot happen from the engine; deny rather than guess.
			d = decision{}
		}
	}
	r.cache.Store(key, d)
	return d
}
