package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/palisade-mesh/palisade/identity"
)

// memoryResult is figure 3. Slices are per agent, in the order of bench.agents.
type memoryResult struct {
	before, afterIdentities, afterRules []memory
	// allocate: the simulated node allocating every identity through the allocator.
	allocate time.Duration
	// identityLag: from the last allocation until the agent lists every identity.
	identityLag []time.Duration
	// imports: the `policy import` runs, one after the other.
	imports    time.Duration
	importRuns int
	// identityCPU and ruleCPU: the CPU time each agent used in those two steps.
	identityCPU, ruleCPU []float64
	// ruleAbsorb: from the first import's start until every endpoint of the agent is regenerated
	// at the agent's final policy revision; ruleLag: the same from the last import's end.
	ruleAbsorb, ruleLag []time.Duration
	// memberEntries: the median datapath policy entries of a figure-1 member, before and after.
	entriesBefore, entriesAfter []uint32
	// The first agent restarted into the loaded world: until its API answers (endpoints
	// restored), until every endpoint is at its final revision, and its memory then.
	restartReady, restartConverged time.Duration
	restarted                      memory
}

// allocateWorkers is how many allocations the simulated node runs at once, as a node starting
// many pods would.
const allocateWorkers = 16

// absorbLimit bounds each wait for the agents to take in the world.
const absorbLimit = 3 * time.Minute

func (b *bench) measureMemory(ctx context.Context) (memoryResult, error) {
	res := memoryResult{
		identityLag: make([]time.Duration, len(b.agents)),
		ruleAbsorb:  make([]time.Duration, len(b.agents)),
		ruleLag:     make([]time.Duration, len(b.agents)),
	}
	var err error
	if res.before, err = b.memories(ctx); err != nil {
		return res, err
	}
	baseIDs := make([]uint32, len(b.agents))
	basePolicies := make([]uint32, len(b.agents))
	for n, a := range b.agents {
		st, err := a.status(ctx)
		if err != nil {
			return res, err
		}
		baseIDs[n], basePolicies[n] = st.GetIdentities(), st.GetPolicies()
	}
	if res.entriesBefore, err = b.memberEntries(ctx); err != nil {
		return res, err
	}

	log.Printf("allocating %d identities as node bench-sim", b.cfg.identities)
	cpu, err := b.agentCPUs()
	if err != nil {
		return res, err
	}
	start := time.Now()
	if err := b.allocateWorld(ctx); err != nil {
		return res, err
	}
	allocated := time.Now()
	res.allocate = allocated.Sub(start)
	if err := b.waitAgents(ctx, func(n int) (bool, error) {
		st, err := b.agents[n].status(ctx)
		return err == nil && st.GetIdentities() >= baseIDs[n]+uint32(b.cfg.identities), err
	}, func(n int, at time.Time) { res.identityLag[n] = at.Sub(allocated) }); err != nil {
		return res, fmt.Errorf("absorb identities: %w", err)
	}
	if res.identityCPU, err = b.agentCPUsSince(cpu); err != nil {
		return res, err
	}
	if res.afterIdentities, err = b.memories(ctx); err != nil {
		return res, err
	}

	files, err := writeWorldRules(b.dir, b.cfg.rules, b.cfg.identities/worldVersions)
	if err != nil {
		return res, err
	}
	log.Printf("importing %d rules in %d imports", b.cfg.rules, len(files))
	if cpu, err = b.agentCPUs(); err != nil {
		return res, err
	}
	start = time.Now()
	for _, f := range files {
		if _, err := b.importPolicy(ctx, f); err != nil {
			return res, err
		}
	}
	imported := time.Now()
	res.imports, res.importRuns = imported.Sub(start), len(files)
	if err := b.waitAgents(ctx, func(n int) (bool, error) {
		return b.converged(ctx, n, basePolicies[n]+uint32(b.cfg.rules))
	}, func(n int, at time.Time) {
		res.ruleAbsorb[n] = at.Sub(start)
		res.ruleLag[n] = at.Sub(imported)
	}); err != nil {
		return res, fmt.Errorf("absorb rules: %w", err)
	}
	if res.ruleCPU, err = b.agentCPUsSince(cpu); err != nil {
		return res, err
	}
	if res.afterRules, err = b.memories(ctx); err != nil {
		return res, err
	}
	if res.entriesAfter, err = b.memberEntries(ctx); err != nil {
		return res, err
	}
	return res, b.restartIntoWorld(ctx, &res, basePolicies[0]+uint32(b.cfg.rules))
}

// allocateWorld allocates the world's identities through the real allocator, as another node of
// the cluster whose pods carry those labels. The simulated node holds them until the end.
func (b *bench) allocateWorld(ctx context.Context) error {
	sets, err := worldIdentities(b.cfg.identities)
	if err != nil {
		return err
	}
	alloc, err := identity.NewAllocator(ctx, b.kv, identity.AllocatorConfig{
		Node:     "bench-sim",
		Cluster:  identity.ClusterConfig{Name: clusterName, ID: clusterID, MaxConnectedClusters: identity.DefaultLayout.MaxConnectedClusters},
		LeaseTTL: time.Minute,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return fmt.Errorf("simulated node's allocator: %w", err)
	}
	b.onClose(alloc.Close)
	var (
		next   atomic.Int64
		wg     sync.WaitGroup
		errs   = make([]error, allocateWorkers)
		failed atomic.Bool
	)
	for w := range allocateWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < len(sets) && !failed.Load(); i = int(next.Add(1)) - 1 {
				if _, _, err := alloc.Allocate(ctx, sets[i]); err != nil {
					errs[w] = fmt.Errorf("allocate identity for %s: %w", sets[i], err)
					failed.Store(true)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// converged reports whether agent n has all the policies it should and every one of its
// endpoints is ready at its current policy revision.
func (b *bench) converged(ctx context.Context, n int, policies uint32) (bool, error) {
	a := b.agents[n]
	st, err := a.status(ctx)
	if err != nil || st.GetPolicies() < policies {
		return false, err
	}
	eps, err := a.endpoints(ctx)
	if err != nil {
		return false, err
	}
	for _, ep := range eps {
		if ep.GetState() != "ready" || ep.GetPolicyRevision() < st.GetPolicyRevision() {
			return false, nil
		}
	}
	return true, nil
}

// waitAgents polls done for each agent until it holds, calling at with the time it first held.
func (b *bench) waitAgents(ctx context.Context, done func(n int) (bool, error), at func(n int, t time.Time)) error {
	ctx, cancel := context.WithTimeout(ctx, absorbLimit)
	defer cancel()
	finished := make([]bool, len(b.agents))
	for {
		all := true
		for n := range b.agents {
			if finished[n] {
				continue
			}
			ok, err := done(n)
			if err != nil {
				return err
			}
			if ok {
				finished[n] = true
				at(n, time.Now())
			} else {
				all = false
			}
		}
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("agents not done after %s: %w", absorbLimit, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// restartIntoWorld restarts the first agent with the world in etcd: it restores its endpoints
// and recomputes them all, which is the cold path of a node joining a loaded cluster.
func (b *bench) restartIntoWorld(ctx context.Context, res *memoryResult, policies uint32) error {
	a := b.agents[0]
	log.Printf("restarting the agent of %s into the loaded world", a.node.Name)
	a.stop()
	start := time.Now()
	if err := a.start(ctx); err != nil {
		return err
	}
	res.restartReady = time.Since(start)
	deadline := time.Now().Add(absorbLimit)
	for {
		ok, err := b.converged(ctx, 0, policies)
		if err != nil {
			return err
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("restarted agent on %s not converged after %s", a.node.Name, absorbLimit)
		}
		time.Sleep(20 * time.Millisecond)
	}
	res.restartConverged = time.Since(start)
	var err error
	res.restarted, err = a.memory(ctx)
	return err
}

// agentCPUs returns the CPU time each agent has used so far.
func (b *bench) agentCPUs() ([]float64, error) {
	out := make([]float64, len(b.agents))
	for n, a := range b.agents {
		s, err := a.cpuSeconds()
		if err != nil {
			return nil, err
		}
		out[n] = s
	}
	return out, nil
}

// agentCPUsSince returns the CPU time each agent has used since agentCPUs returned before.
func (b *bench) agentCPUsSince(before []float64) ([]float64, error) {
	now, err := b.agentCPUs()
	for n := range now {
		now[n] -= before[n]
	}
	return now, err
}

func (b *bench) memories(ctx context.Context) ([]memory, error) {
	out := make([]memory, len(b.agents))
	for n, a := range b.agents {
		m, err := a.memory(ctx)
		if err != nil {
			return nil, err
		}
		out[n] = m
	}
	return out, nil
}

// memberEntries returns, per agent, the median count of datapath policy entries of its figure-1
// members: evidence that the world's rules select them.
func (b *bench) memberEntries(ctx context.Context) ([]uint32, error) {
	out := make([]uint32, len(b.agents))
	for n, a := range b.agents {
		eps, err := a.endpoints(ctx)
		if err != nil {
			return nil, err
		}
		var entries []uint32
		for _, ep := range eps {
			if b.isMemberOf(a, ep.GetId()) {
				entries = append(entries, ep.GetPolicyEntries())
			}
		}
		if len(entries) == 0 {
			return nil, fmt.Errorf("agent %s lists none of its members", a.node.Name)
		}
		slices.Sort(entries)
		out[n] = entries[len(entries)/2]
	}
	return out, nil
}
