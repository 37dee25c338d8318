package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/palisade-mesh/palisade/kvstore"
)

// importResult is figure 1 over a series of imports.
type importResult struct {
	imports, endpoints int
	// perEndpoint: for every (import, member), from the start of `palisade policy import` until
	// the member's agent reports a policy revision past the one the member had before.
	perEndpoint []time.Duration
	// fromCommit: the same, from the moment the harness's own etcd watch saw the import commit.
	fromCommit []time.Duration
	// lastEndpoint: per import, until the last of the members.
	lastEndpoint []time.Duration
	// cli: per import, the run time of `palisade policy import`.
	cli []time.Duration
	// traffic: per import and probe, until the first connection on the newly allowed port (one
	// probe into a member of each node, from a member of the other node).
	traffic []time.Duration
	// trafficLag: per import and probe, first allowed connection minus the time the target's
	// agent reported the new revision (negative: the kernel enforced it before the API said so).
	trafficLag []time.Duration
	// Where the time goes, per import and agent (from the agents' logs, see agentSteps): from the
	// start of the CLI to the etcd commit; from the commit to the agent's policy engine having the
	// new policies; from then until the agent's pass enforced them on its endpoints, and that
	// pass's own duration; from then until the harness's poll saw the last of its endpoints.
	toCommit, toApplied, toEnforced, pass, toSeen []time.Duration
	noBreakdown                                   error // why some imports have no breakdown
	// regenerations and regenSeconds: per import, summed over both agents, from their metrics;
	// agentCPU: the CPU time both agent processes used per import (probes and polls included).
	regenerations, regenSeconds, agentCPU []float64
}

// probeLimit bounds every wait for a change to take effect.
const probeLimit = 15 * time.Second

// measureImports runs one warm-up import and then `imports` counted ones, alternating the port
// figure 1's policy admits members on.
func (b *bench) measureImports(ctx context.Context, imports int) (importResult, error) {
	res := importResult{imports: imports, endpoints: len(b.members)}
	commits, stopWatch, err := b.watchCommits(ctx)
	if err != nil {
		return res, err
	}
	defer stopWatch()
	for r := 0; r <= imports; r++ {
		step := importStep{round: r, file: b.policies.portA, port: memberPortA, oldPort: memberPortB}
		if r%2 == 1 {
			step.file, step.port, step.oldPort = b.policies.portB, memberPortB, memberPortA
		}
		if err := b.importRound(ctx, &res, commits, step); err != nil {
			return res, fmt.Errorf("import %d: %w", r, err)
		}
		// Let the agents go idle, so that rounds do not overlap.
		time.Sleep(100 * time.Millisecond)
	}
	return res, nil
}

// importStep is one import of figure 1: the policy file and the port it admits members on
// instead of oldPort. Round 0 warms up and is not counted.
type importStep struct {
	round         int
	file          string
	port, oldPort int
}

// probePair is a source member and the member (on the other node) it connects to.
type probePair struct{ from, to *endpoint }

func (b *bench) importRound(ctx context.Context, res *importResult, commits <-chan time.Time, step importStep) error {
	before, err := b.memberRevisions(ctx)
	if err != nil {
		return err
	}
	regenBefore, secondsBefore, err := b.regenerationMetrics(ctx)
	if err != nil {
		return err
	}
	cpuBefore, err := b.agentCPU()
	if err != nil {
		return err
	}
	offsets := make([]int64, len(b.agents))
	for n, a := range b.agents {
		if offsets[n], err = a.logOffset(); err != nil {
			return err
		}
	}
	for len(commits) > 0 {
		<-commits
	}

	pairs := []probePair{{from: b.members[1], to: b.members[0]}, {from: b.members[0], to: b.members[1]}}
	var (
		wg        sync.WaitGroup
		seen      = make([]map[uint32]time.Time, len(b.agents))
		connected = make([]time.Time, len(pairs))
		errs      = make([]error, len(b.agents)+len(pairs))
	)
	for n, a := range b.agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen[n], errs[n] = pollRevisions(ctx, a, before[n], b.cfg.poll)
		}()
	}
	for p, pair := range pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			connected[p], _, errs[len(b.agents)+p] = firstConnect(ctx, pair.from.ns, pair.to.addr(step.port), b.cfg.probeInterval, probeLimit)
		}()
	}
	start := time.Now()
	cliTime, err := b.importPolicy(ctx, step.file)
	wg.Wait()
	cpuAfter, cpuErr := b.agentCPU()
	errs = append(errs, cpuErr)
	if err := errors.Join(append(errs, err)...); err != nil {
		return err
	}
	var commit time.Time
	select {
	case commit = <-commits:
	case <-time.After(5 * time.Second):
		return errors.New("the harness's etcd watch did not see the import")
	}

	if err := b.checkFlip(ctx, step, pairs[step.round%2]); err != nil {
		return err
	}
	if step.round == 0 {
		return nil
	}

	regenAfter, secondsAfter, err := b.regenerationMetrics(ctx)
	if err != nil {
		return err
	}
	res.regenerations = append(res.regenerations, regenAfter-regenBefore)
	res.regenSeconds = append(res.regenSeconds, secondsAfter-secondsBefore)
	res.agentCPU = append(res.agentCPU, cpuAfter-cpuBefore)
	res.cli = append(res.cli, cliTime)
	var last time.Duration
	for _, s := range seen {
		for _, at := range s {
			d := at.Sub(start)
			res.perEndpoint = append(res.perEndpoint, d)
			res.fromCommit = append(res.fromCommit, at.Sub(commit))
			last = max(last, d)
		}
	}
	res.lastEndpoint = append(res.lastEndpoint, last)
	res.toCommit = append(res.toCommit, commit.Sub(start))
	for n, a := range b.agents {
		steps, err := a.importSteps(offsets[n])
		if err != nil {
			// An agent built before it logged its passes (-palisade): no breakdown.
			res.noBreakdown = err
			continue
		}
		var lastSeen time.Time
		for _, at := range seen[n] {
			if at.After(lastSeen) {
				lastSeen = at
			}
		}
		res.toApplied = append(res.toApplied, steps.applied.Sub(commit))
		res.toEnforced = append(res.toEnforced, steps.enforced.Sub(steps.applied))
		res.pass = append(res.pass, steps.pass)
		res.toSeen = append(res.toSeen, lastSeen.Sub(steps.enforced))
	}
	for p, pair := range pairs {
		res.traffic = append(res.traffic, connected[p].Sub(start))
		n := b.agentIndex(pair.to.agent)
		res.trafficLag = append(res.trafficLag, connected[p].Sub(seen[n][pair.to.id]))
	}
	return nil
}

// memberRevisions returns, per agent, the policy revision of each of its figure-1 members.
func (b *bench) memberRevisions(ctx context.Context) ([]map[uint32]uint64, error) {
	out := make([]map[uint32]uint64, len(b.agents))
	for n, a := range b.agents {
		eps, err := a.endpoints(ctx)
		if err != nil {
			return nil, err
		}
		out[n] = map[uint32]uint64{}
		for _, ep := range eps {
			// Only the members count; the agent moves every endpoint to the new revision.
			if b.isMemberOf(a, ep.GetId()) {
				out[n][ep.GetId()] = ep.GetPolicyRevision()
			}
		}
	}
	return out, nil
}

// checkFlip verifies that the import really changed the kernel's policy: the port the previous
// policy admitted is closed now (for one probe pair per round, alternating), and, in the first
// rounds, a peer no rule admits stays out.
func (b *bench) checkFlip(ctx context.Context, step importStep, pair probePair) error {
	if connects(ctx, pair.from.ns, pair.to.addr(step.oldPort), 300*time.Millisecond) {
		return fmt.Errorf("member %s still reaches %s after the policy stopped admitting port %d", pair.from.ns.Name, pair.to.addr(step.oldPort), step.oldPort)
	}
	if step.round <= 1 && connects(ctx, b.intruder.ns, b.members[0].addr(step.port), 300*time.Millisecond) {
		return fmt.Errorf("the intruder reaches %s, which only members may reach", b.members[0].addr(step.port))
	}
	return nil
}

// pollRevisions lists the agent's endpoints every interval until each endpoint of before reports
// a policy revision past the one it had, and returns when each was first seen so.
func pollRevisions(ctx context.Context, a *agentProc, before map[uint32]uint64, interval time.Duration) (map[uint32]time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, probeLimit)
	defer cancel()
	seen := make(map[uint32]time.Time, len(before))
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		eps, err := a.endpoints(ctx)
		if err != nil {
			return seen, err
		}
		now := time.Now()
		for _, ep := range eps {
			rev, tracked := before[ep.GetId()]
			if _, done := seen[ep.GetId()]; !tracked || done || ep.GetPolicyRevision() <= rev {
				continue
			}
			if !ep.GetIngressEnforced() || ep.GetState() != "ready" {
				return seen, fmt.Errorf("agent %s: endpoint %d at revision %d is %s, ingress enforced %v (%s)",
					a.node.Name, ep.GetId(), ep.GetPolicyRevision(), ep.GetState(), ep.GetIngressEnforced(), ep.GetLastError())
			}
			seen[ep.GetId()] = now
		}
		if len(seen) == len(before) {
			return seen, nil
		}
		select {
		case <-ctx.Done():
			return seen, fmt.Errorf("agent %s: %d of %d endpoints reached a new policy revision within %s", a.node.Name, len(seen), len(before), probeLimit)
		case <-tick.C:
		}
	}
}

// watchCommits timestamps every write of figure 1's policy as the harness's own etcd watch sees
// it. The watch is synced (has listed the key) when it returns.
func (b *bench) watchCommits(ctx context.Context) (<-chan time.Time, func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	commits := make(chan time.Time, 8)
	synced := make(chan struct{})
	done := make(chan struct{})
	events := b.kv.Watch(ctx, importPolicyKey)
	go func() {
		defer close(done)
		var once sync.Once
		for ev := range events {
			switch {
			case ev.Type == kvstore.EventSynced:
				once.Do(func() { close(synced) })
			case ev.Type == kvstore.EventUpsert && ev.Key == importPolicyKey:
				select {
				case commits <- time.Now():
				default:
				}
			}
		}
	}()
	stop := func() {
		cancel()
		<-done
	}
	select {
	case <-synced:
		return commits, stop, nil
	case <-time.After(10 * time.Second):
		stop()
		return nil, nil, errors.New("watch of the imported policy did not sync")
	}
}

func (b *bench) isMemberOf(a *agentProc, id uint32) bool {
	for _, m := range b.members {
		if m.agent == a && m.id == id {
			return true
		}
	}
	return false
}

func (b *bench) agentIndex(a *agentProc) int {
	for n, x := range b.agents {
		if x == a {
			return n
		}
	}
	panic("unknown agent")
}

// regenerationMetrics sums, over both agents, the endpoint regenerations and the time spent in
// them since the agents started.
func (b *bench) regenerationMetrics(ctx context.Context) (count, seconds float64, err error) {
	for _, a := range b.agents {
		families, err := a.metrics(ctx)
		if err != nil {
			return 0, 0, err
		}
		c, err := metricSum(families, "palisade_agent_endpoint_regenerations_total")
		if err != nil {
			return 0, 0, fmt.Errorf("agent %s: %w", a.node.Name, err)
		}
		s, err := metricSum(families, "palisade_agent_endpoint_regeneration_seconds")
		if err != nil {
			return 0, 0, fmt.Errorf("agent %s: %w", a.node.Name, err)
		}
		count += c
		seconds += s
	}
	return count, seconds, nil
}

// agentCPU sums the CPU time both agents have used.
func (b *bench) agentCPU() (float64, error) {
	cpus, err := b.agentCPUs()
	var sum float64
	for _, c := range cpus {
		sum += c
	}
	return sum, err
}
