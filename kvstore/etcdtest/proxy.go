package etcdtest

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
)

// Proxy forwards TCP connections from a 127.0.0.1 port to an etcd endpoint. Cut drops every
// connection and refuses new ones, as a network partition between a client and its etcd would;
// Restore lets clients in again on the same address. The server keeps running meanwhile, so other
// clients can change the store while the proxied client is away.
type Proxy struct {
	t       testing.TB
	network string // of the target: tcp or unix
	target  string
	scheme  string // http or https, as the target's
	addr    string // the proxy's listen address, stable across Cut and Restore

	mu    sync.Mutex
	l     net.Listener // nil while cut
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// NewProxy starts a proxy to srv's first endpoint. It is stopped when the test ends.
func NewProxy(t testing.TB, srv Endpointer) *Proxy {
	t.Helper()
	ep := srv.Endpoints()[0]
	scheme, addr, _ := strings.Cut(ep, "://")
	p := &Proxy{t: t, network: "tcp", target: addr, scheme: "http", conns: map[net.Conn]struct{}{}}
	switch scheme {
	case "https":
		p.scheme = "https"
	case "unix":
		p.network = "unix"
	case "unixs":
		p.network, p.scheme = "unix", "https"
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p.addr = l.Addr().String()
	p.serve(l)
	t.Cleanup(func() {
		p.Cut()
		p.wg.Wait()
	})
	return p
}

// Endpoints is the proxy's endpoint.
func (p *Proxy) Endpoints() []string { return []string{p.scheme + "://" + p.addr} }

// Cut closes every proxied connection and stops accepting new ones.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	for c := range p.conns {
		c.Close()
	}
}

// Restore accepts connections again on the same address.
func (p *Proxy) Restore() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		return
	}
	l, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy listen again on %s: %v", p.addr, err)
	}
	p.serve(l)
}

// serve runs the accept loop on l; callers hold p.mu or own p exclusively.
func (p *Proxy) serve(l net.Listener) {
	p.l = l
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			in, err := l.Accept()
			if err != nil {
				return // closed by Cut
			}
			p.forward(in)
		}
	}()
}

func (p *Proxy) forward(in net.Conn) {
	out, err := net.Dial(p.network, p.target)
	if err != nil {
		in.Close()
		return
	}
	p.mu.Lock()
	if p.l == nil { // cut while we dialled
		p.mu.Unlock()
		in.Close()
		out.Close()
		return
	}
	p.conns[in], p.conns[out] = struct{}{}, struct{}{}
	p.mu.Unlock()
	pipe := func(dst, src net.Conn) {
		defer p.wg.Done()
		io.Copy(dst, src)
		// Either direction ending ends the connection, as a reset would.
		dst.Close()
		src.Close()
		p.mu.Lock()
		delete(p.conns, dst)
		delete(p.conns, src)
		p.mu.Unlock()
	}
	p.wg.Add(2)
	go pipe(out, in)
	go pipe(in, out)
}
