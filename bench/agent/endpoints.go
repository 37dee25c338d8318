package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/test/topology"
)

// Ports the endpoints listen on: figure 1 alternates its policy between the two member ports,
// figure 2's server listens on serverPort.
const (
	memberPortA = 8080
	memberPortB = 8081
	serverPort  = 9000
)

// createEndpoint registers a new bare namespace with an agent, the way `palisade endpoint create`
// does, and returns the endpoint.
func (a *agentProc) createEndpoint(ctx context.Context, ns *topology.Namespace, k8sNamespace string, labels []string) (*endpoint, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	ep, err := a.api.CreateEndpoint(ctx, &apiv1.CreateEndpointRequest{NetnsPath: ns.Path, Labels: labels, Namespace: k8sNamespace})
	if err != nil {
		return nil, fmt.Errorf("create endpoint %s on %s: %w", ns.Name, a.node.Name, err)
	}
	return &endpoint{ns: ns, agent: a, id: ep.GetId(), ip: ep.GetIpv4()}, nil
}

// createMembers creates figure 1's endpoints (member i on node i%2, belonging to world app i so
// that figure 3's rules select it too), the intruder, and figure 2's server, with their listeners.
// The two agents work in parallel; each creates its endpoints one at a time.
func (b *bench) createMembers(ctx context.Context) error {
	b.members = make([]*endpoint, b.cfg.endpoints)
	var wg sync.WaitGroup
	errs := make([]error, len(b.agents))
	for n, a := range b.agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := n; i < len(b.members); i += len(b.agents) {
				ns, err := b.topo.AddNamespace(fmt.Sprintf("m%d", i))
				if err != nil {
					errs[n] = err
					return
				}
				m, err := a.createEndpoint(ctx, ns, worldNamespace(i), memberLabels(i))
				if err != nil {
					errs[n] = err
					return
				}
				b.members[i] = m
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, m := range b.members[:2] {
		if err := b.listeners.listen(m.ns, memberPortA, memberPortB); err != nil {
			return err
		}
	}

	ns, err := b.topo.AddNamespace("intruder")
	if err != nil {
		return err
	}
	if b.intruder, err = b.agents[1].createEndpoint(ctx, ns, worldNamespace(0), []string{"app=intruder", "bench=intruder"}); err != nil {
		return err
	}
	// Before any policy selects the members every path is open, so the drops figure 1 sees later
	// come from policy, not from wiring.
	for _, from := range []*endpoint{b.members[1], b.intruder} {
		if _, _, err := firstConnect(ctx, from.ns, b.members[0].addr(memberPortA), b.cfg.probeInterval, probeLimit); err != nil {
			return fmt.Errorf("before any policy: %w", err)
		}
	}
	if ns, err = b.topo.AddNamespace("server"); err != nil {
		return err
	}
	if b.server, err = b.agents[0].createEndpoint(ctx, ns, createNamespace, []string{"role=" + serverRole}); err != nil {
		return err
	}
	return b.listeners.listen(b.server.ns, serverPort)
}

// memberLabels are the labels of figure 1's endpoint i: those of world app i (without a version)
// plus the label figure 1's policy selects.
func memberLabels(i int) []string {
	return []string{"app=" + worldApp(i), "tier=" + worldTier(i), "bench=agent"}
}

func (m *endpoint) addr(port int) string { return net.JoinHostPort(m.ip, strconv.Itoa(port)) }

// listeners accept and close connections inside endpoint namespaces until closed.
type listeners struct {
	mu  sync.Mutex
	lns []net.Listener
	wg  sync.WaitGroup
}

func (l *listeners) listen(ns *topology.Namespace, ports ...int) error {
	for _, port := range ports {
		ln, err := ns.Listen("tcp4", fmt.Sprintf(":%d", port))
		if err != nil {
			return err
		}
		l.mu.Lock()
		l.lns = append(l.lns, ln)
		l.mu.Unlock()
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return // closed
				}
				c.Close()
			}
		}()
	}
	return nil
}

func (l *listeners) close() error {
	l.mu.Lock()
	for _, ln := range l.lns {
		ln.Close()
	}
	l.lns = nil
	l.mu.Unlock()
	l.wg.Wait()
	return nil
}
