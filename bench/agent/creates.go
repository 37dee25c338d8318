package main

import (
	"context"
	"fmt"
	"log"
	"time"
)

// createResult is figure 2.
type createResult struct {
	// total: from the CreateEndpoint call until the new endpoint's first connection to the
	// server that the policy admits it to.
	total []time.Duration
	// rpc: the CreateEndpoint call alone (it returns when the endpoint's own policy is in the
	// kernel); the rest of total is the server's side learning the new endpoint.
	rpc []time.Duration
	// byKind splits total by where the endpoint is (the server's node or the other) and whether
	// its labels had an identity already.
	byKind map[string][]time.Duration
}

// slowCreate is figure 2's target: a sample above it is logged with what its probe saw.
const slowCreate = 150 * time.Millisecond

// createKinds in the order they cycle and print.
var createKinds = []string{
	"server's node, new identity",
	"other node, new identity",
	"server's node, existing identity",
	"other node, existing identity",
}

// measureCreates creates endpoints one by one, alternating the node and whether the endpoint's
// labels are new (a new identity: allocation, and every agent learns it before the server's
// policy admits it) or shared with earlier clients (only its address is new), and times each
// until its first connection to the server.
func (b *bench) measureCreates(ctx context.Context) (createResult, error) {
	res := createResult{byKind: map[string][]time.Duration{}}
	// The server's policy is enforced: a peer it does not admit stays out.
	if connects(ctx, b.intruder.ns, b.server.addr(serverPort), 300*time.Millisecond) {
		return res, fmt.Errorf("the intruder reaches figure 2's server at %s", b.server.addr(serverPort))
	}
	// One warm-up client per node creates the shared identity and warms both agents' paths.
	for n, a := range b.agents {
		if _, _, err := b.createClient(ctx, a, fmt.Sprintf("w%d", n), "shared"); err != nil {
			return res, fmt.Errorf("warm-up client on %s: %w", a.node.Name, err)
		}
	}
	for i := range b.cfg.creates {
		kind := i % len(createKinds)
		a := b.agents[kind%2]
		client := fmt.Sprintf("c%d", i)
		if kind >= 2 {
			client = "shared"
		}
		rpc, total, err := b.createClient(ctx, a, fmt.Sprintf("c%d", i), client)
		if err != nil {
			return res, fmt.Errorf("client %d on %s: %w", i, a.node.Name, err)
		}
		res.rpc = append(res.rpc, rpc)
		res.total = append(res.total, total)
		res.byKind[createKinds[kind]] = append(res.byKind[createKinds[kind]], total)
		time.Sleep(50 * time.Millisecond)
	}
	return res, nil
}

// createClient creates a figure-2 client in a fresh namespace (made beforehand, as a container
// runtime does) and returns how long CreateEndpoint took and how long until the client's first
// connection to the server.
func (b *bench) createClient(ctx context.Context, a *agentProc, nsName, client string) (rpc, total time.Duration, err error) {
	ns, err := b.topo.AddNamespace(nsName)
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	m, err := a.createEndpoint(ctx, ns, createNamespace, []string{"role=" + clientRole, "client=" + client})
	if err != nil {
		return 0, 0, err
	}
	rpc = time.Since(start)
	at, stats, err := firstConnect(ctx, m.ns, b.server.addr(serverPort), b.cfg.probeInterval, probeLimit)
	if err != nil {
		return 0, 0, err
	}
	total = at.Sub(start)
	if total > slowCreate {
		log.Printf("slow: client %s (%s) on %s: CreateEndpoint %s, first connection after %s, %d attempts, last failure: %v",
			nsName, client, a.node.Name, rpc.Round(time.Millisecond), total.Round(time.Millisecond), stats.attempts, stats.lastErr)
	}
	return rpc, total, nil
}
