package agent

import (
	"errors"
	"net/netip"
	"sync"

	"github.com/palisade-mesh/palisade/bpf"
	"github.com/palisade-mesh/palisade/monitor"
	"github.com/palisade-mesh/palisade/policy"
	"github.com/palisade-mesh/palisade/proxy"
	"github.com/palisade-mesh/palisade/proxy/parser"

	// Generic L7 parsers selectable with l7proto.
	_ "github.com/palisade-mesh/palisade/proxy/parser/memcached"
	_ "github.com/palisade-mesh/palisade/proxy/parser/r2d2"
)

// Proxy ports are keys of the datapath's SOCKHASH, one per endpoint and redirected port range;
// they are not the listeners' own ports (those are ephemeral, inside the endpoint's namespace).
const (
	firstProxyPort = 10000
	lastProxyPort  = 60000
)

// proxyKey is one redirected port range of one endpoint.
type proxyKey struct {
	endpoint      uint32
	port, endPort uint16
}

// l7Proxy wires the in-process L7 proxy to the endpoints: it allocates proxy ports, opens the
// per-endpoint listeners in their namespaces, registers them with the datapath and hands the
// proxy each endpoint's computed policy.
type l7Proxy struct {
	a     *Agent
	proxy *proxy.Proxy

	mu    sync.Mutex
	ports map[proxyKey]uint16
	used  map[uint16]proxyKey
	next  uint16
	// After a restart, the proxy ports the pinned datapath still names are handed back to the
	// same endpoint and port, so no flow is ever steered to another endpoint's listener.
	adoptOnce sync.Once
	preferred map[uint32]map[uint16]uint16 // endpoint -> destination port -> proxy port
	reserved  map[uint16]uint32            // proxy port -> endpoint it is kept for
}

func newL7Proxy(a *Agent) (*l7Proxy, error) {
	p, err := proxy.New(proxy.Options{
		SourceIdentity: func(addr netip.Addr) (uint32, bool) {
			id, err := a.dp.LookupIPCache(addr)
			return id, err == nil
		},
		Publish: func(ev monitor.Event) {
			ev.Node = a.cfg.NodeName
			a.hub.Publish(ev)
		},
		Logger: a.log.With("component", "proxy"),
	})
	if err != nil {
		return nil, err
	}
	return &l7Proxy{a: a, proxy: p, ports: map[proxyKey]uint16{}, used: map[uint16]proxyKey{}, next: firstProxyPort,
		preferred: map[uint32]map[uint16]uint16{}, reserved: map[uint16]uint32{}}, nil
}

// redirectable reports whether the datapath can send a MapState key's traffic to the proxy:
// ingress TCP only (see package bpf).
func redirectable(k policy.Key) bool {
	return k.Direction == policy.Ingress && (k.Proto == policy.ProtoTCP || k.Proto == policy.ProtoAny)
}

// prepare makes sure the endpoint has a registered listener for every redirected key of ms and
// gives the proxy the new policy. It returns the proxy port of each key, for datapathEntries.
// Call release after the datapath has the new entries.
func (l *l7Proxy) prepare(ep *endpoint, ms policy.MapState) (map[policy.Key]uint16, error) {
	var keys []policy.Key
	for _, k := range ms.Keys() {
		if v := ms[k]; v.Redirect && !v.Deny && redirectable(k) && !coveredByAllow(ms, k) {
			keys = append(keys, k)
		}
	}
	l.adoptOnce.Do(l.adopt)
	defer l.forgetReserved(ep.rec.ID)
	if len(keys) == 0 {
		return nil, nil // release closes what the endpoint had
	}
	pe, err := l.proxy.Endpoint(proxy.EndpointConfig{ID: ep.rec.ID, Identity: uint32(ep.rec.Identity), Netns: proxy.Netns{Path: ep.rec.NetnsPath}})
	if err != nil {
		return nil, err
	}
	l.checkRules(ep, ms, keys)
	pe.SetPolicy(ms)
	out := make(map[policy.Key]uint16, len(keys))
	for _, k := range keys {
		port, err := l.allocate(proxyKey{endpoint: ep.rec.ID, port: k.Port, endPort: k.EndPort})
		if err != nil {
			return nil, err
		}
		ln, err := pe.Listen(port)
		if err != nil {
			return nil, err
		}
		if err := l.a.dp.RegisterProxySocket(port, ln); err != nil {
			pe.CloseListener(port)
			return nil, err
		}
		out[k] = port
	}
	return out, nil
}

// checkRules logs L7 rules the proxy cannot apply: an unknown l7proto (its connections are
// closed) or a rule its parser rejects (it matches nothing). Both fail closed.
func (l *l7Proxy) checkRules(ep *endpoint, ms policy.MapState, keys []policy.Key) {
	for _, k := range keys {
		l7 := ms[k].L7
		if l7 == nil || l7.Parser == policy.ParserHTTP {
			continue
		}
		proto, ok := parser.Lookup(l7.Parser)
		if !ok {
			l.a.log.Warn("L7 rules name a protocol the proxy has no parser for; its connections are closed",
				"endpoint", ep.rec.ID, "l7proto", l7.Parser, "known", parser.Names())
			continue
		}
		for _, rule := range l7.Generic {
			if proto.ValidateRule == nil {
				break
			}
			if err := proto.ValidateRule(rule); err != nil {
				l.a.log.Warn("L7 rule matches nothing", "endpoint", ep.rec.ID, "l7proto", l7.Parser, "error", err)
			}
		}
	}
}

// release closes the endpoint's listeners whose ports the datapath no longer uses, and the
// endpoint's proxy when it needs none.
func (l *l7Proxy) release(ep *endpoint, inUse map[policy.Key]uint16) {
	keep := map[uint16]bool{}
	for _, p := range inUse {
		keep[p] = true
	}
	l.mu.Lock()
	var drop []uint16
	for k, p := range l.ports {
		if k.endpoint == ep.rec.ID && !keep[p] {
			drop = append(drop, p)
			delete(l.ports, k)
			delete(l.used, p)
		}
	}
	l.mu.Unlock()
	if len(drop) == 0 {
		return
	}
	pe, err := l.proxy.Endpoint(proxy.EndpointConfig{ID: ep.rec.ID, Identity: uint32(ep.rec.Identity)})
	if err != nil {
		return
	}
	for _, p := range drop {
		if err := l.a.dp.UnregisterProxySocket(p); err != nil {
			l.a.log.Warn("unregister proxy socket", "endpoint", ep.rec.ID, "proxy_port", p, "error", err)
		}
		pe.CloseListener(p)
	}
	if len(keep) == 0 {
		l.proxy.RemoveEndpoint(ep.rec.ID)
	}
}

// removeEndpoint closes everything the proxy holds for a deleted endpoint.
func (l *l7Proxy) removeEndpoint(id uint32) {
	l.mu.Lock()
	var ports []uint16
	for k, p := range l.ports {
		if k.endpoint == id {
			ports = append(ports, p)
			delete(l.ports, k)
			delete(l.used, p)
		}
	}
	l.mu.Unlock()
	l.forgetReserved(id)
	for _, p := range ports {
		_ = l.a.dp.UnregisterProxySocket(p)
	}
	l.proxy.RemoveEndpoint(id)
}

// adopt reads the proxy ports the pinned datapath's policies already use (left by a previous run
// of the agent) and keeps each for its endpoint and port. It runs before the first allocation,
// so no endpoint regenerated early takes a port that another endpoint's flows still go to.
func (l *l7Proxy) adopt() {
	eps, err := l.a.dp.Endpoints()
	if err != nil {
		l.a.log.Warn("list datapath endpoints for their proxy ports", "error", err)
		return
	}
	for _, ep := range eps {
		installed, err := l.a.dp.Policy(ep.ID)
		if err != nil {
			l.a.log.Warn("read installed policy for its proxy ports", "endpoint", ep.ID, "error", err)
			continue
		}
		l.mu.Lock()
		for _, e := range installed {
			if e.ProxyPort == 0 || e.Direction != bpf.Ingress {
				continue
			}
			if _, kept := l.reserved[e.ProxyPort]; kept {
				continue
			}
			if l.preferred[ep.ID] == nil {
				l.preferred[ep.ID] = map[uint16]uint16{}
			}
			l.preferred[ep.ID][e.Port] = e.ProxyPort
			l.reserved[e.ProxyPort] = ep.ID
		}
		l.mu.Unlock()
	}
}

// forgetReserved releases the adopted ports an endpoint's policy no longer uses.
func (l *l7Proxy) forgetReserved(id uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for p, owner := range l.reserved {
		if owner == id {
			delete(l.reserved, p)
		}
	}
	delete(l.preferred, id)
}

func (l *l7Proxy) allocate(k proxyKey) (uint16, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p, ok := l.ports[k]; ok {
		return p, nil
	}
	if p, ok := l.preferred[k.endpoint][k.port]; ok && l.reserved[p] == k.endpoint {
		if _, taken := l.used[p]; !taken {
			delete(l.reserved, p)
			l.ports[k], l.used[p] = p, k
			return p, nil
		}
	}
	for range lastProxyPort - firstProxyPort + 1 {
		p := l.next
		l.next++
		if l.next > lastProxyPort {
			l.next = firstProxyPort
		}
		_, kept := l.reserved[p]
		if _, taken := l.used[p]; !taken && !kept {
			l.ports[k], l.used[p] = p, k
			return p, nil
		}
	}
	return 0, errors.New("no free proxy port")
}

func (l *l7Proxy) close() {
	if l != nil {
		_ = l.proxy.Close()
	}
}

// withProxyPorts sets the proxy port of the datapath entries of redirected keys. Entries of a key
// whose expansion is not TCP (UDP, SCTP from an any-protocol key) stay out: the proxy cannot
// take them, and leaving them out drops that traffic rather than passing it unchecked.
func withProxyPorts(ports map[policy.Key]uint16) []bpf.PolicyEntry {
	var extra []bpf.PolicyEntry
	for k, port := range ports {
		extra = append(extra, bpf.PolicyEntry{
			Identity:  uint32(k.Identity),
			Direction: bpf.Ingress,
			Protocol:  bpf.ProtoTCP,
			Port:      k.Port,
			EndPort:   k.EndPort,
			ProxyPort: port,
		})
	}
	return extra
}

// unenforcedL7 counts redirect entries the proxy cannot serve (egress, UDP, SCTP): their traffic
// is dropped.
func unenforcedL7(ms policy.MapState, ports map[policy.Key]uint16) int {
	n := 0
	for k, v := range ms {
		if _, served := ports[k]; v.Redirect && !v.Deny && !served && !coveredByAllow(ms, k) {
			n++
		}
	}
	return n
}
