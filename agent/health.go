package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/health"
	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/monitor"
)

// healthKeysKey holds the cluster's gossip key set (health.KeySet as JSON). The first agent of a
// cluster creates it; operators rotate keys by rewriting it (see docs/health.md).
const healthKeysKey = "health/keys"

// healthRejoinInterval is how often the agent tries to (re)join registered nodes that gossip does
// not see alive: after a partition longer than memberlist keeps gossiping to the dead, or when
// it started alone.
const healthRejoinInterval = 3 * time.Second

// healthRetryInterval spaces attempts to start gossip after a failure.
const healthRetryInterval = 5 * time.Second

// healthLeaveTimeout bounds the goodbye on shutdown.
const healthLeaveTimeout = 2 * time.Second

// healthState is the agent's gossip membership; h is nil until gossip started (or if it failed).
type healthState struct {
	mu  sync.Mutex
	h   *health.Health
	err error
}

func (s *healthState) get() (*health.Health, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.h, s.err
}

// healthAddr is the gossip address other agents find in this node's registry entry.
func (a *Agent) healthAddr() string {
	return netip.AddrPortFrom(a.cfg.NodeIP, uint16(a.cfg.HealthPort)).String()
}

// runHealth joins the cluster's gossip and keeps it joined until ctx ends, then leaves gracefully
// so the other nodes record this node as left, not dead. Gossip failing to start (keys not
// readable, port taken) is logged, shown in status and retried: enforcement does not depend on it.
func (a *Agent) runHealth(ctx context.Context) {
	var h *health.Health
	for {
		var err error
		h, err = a.startHealth(ctx)
		a.health.mu.Lock()
		a.health.h, a.health.err = h, err
		a.health.mu.Unlock()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		a.log.Error("gossip health unavailable; retrying", "error", err, "retry_in", healthRetryInterval)
		select {
		case <-ctx.Done():
			return
		case <-time.After(healthRetryInterval):
		}
	}
	defer func() {
		if err := h.Leave(healthLeaveTimeout); err != nil {
			a.log.Warn("leave gossip", "error", err)
		}
	}()

	var wg sync.WaitGroup
	defer wg.Wait()
	if a.cfg.HealthKeyFile == "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.watchHealthKeys(ctx, h)
		}()
	}
	seeds := &healthSeeds{addrs: map[string]string{}, changed: make(chan struct{}, 1)}
	wg.Add(1)
	go func() {
		defer wg.Done()
		seeds.watch(ctx, a)
	}()
	t := time.NewTicker(healthRejoinInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-seeds.changed:
		case <-t.C:
		}
		a.joinRegisteredNodes(h, seeds)
	}
}

// healthSeeds mirrors the gossip addresses of the node registry (its own watch, so finding seeds
// costs etcd nothing after the first list).
type healthSeeds struct {
	mu      sync.Mutex
	addrs   map[string]string // node name -> healthAddr
	changed chan struct{}     // a registry event arrived: join now rather than at the next tick
}

func (s *healthSeeds) watch(ctx context.Context, a *Agent) {
	for ev := range a.kv.Watch(ctx, nodesPrefix) {
		name := strings.TrimPrefix(ev.Key, nodesPrefix)
		s.mu.Lock()
		switch ev.Type {
		case kvstore.EventUpsert:
			var n NodeInfo
			if err := json.Unmarshal(ev.Value, &n); err == nil && n.Name != a.cfg.NodeName && n.HealthAddr != "" {
				s.addrs[name] = n.HealthAddr
			}
		case kvstore.EventDelete:
			delete(s.addrs, name)
		}
		s.mu.Unlock()
		select {
		case s.changed <- struct{}{}:
		default:
		}
	}
}

func (s *healthSeeds) snapshot() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.addrs))
	for k, v := range s.addrs {
		out[k] = v
	}
	return out
}

func (a *Agent) startHealth(ctx context.Context) (*health.Health, error) {
	keys, err := a.healthKeys(ctx)
	if err != nil {
		return nil, err
	}
	return health.New(health.Config{
		Meta: health.Meta{
			Node:    a.cfg.NodeName,
			Cluster: a.cfg.ClusterName,
			Addrs:   []string{a.cfg.NodeIP.String()},
			Version: Version,
			Started: a.started,
		},
		BindAddr:   a.cfg.NodeIP,
		Port:       a.cfg.HealthPort,
		Keys:       keys,
		OnChange:   a.healthChanged,
		Logger:     a.log,
		Registerer: a.registry,
	})
}

// healthKeys reads the key set from the key file, or from etcd, creating the cluster's first key
// when there is none yet (create-only, so concurrent first agents agree on one).
func (a *Agent) healthKeys(ctx context.Context) (health.KeySet, error) {
	if f := a.cfg.HealthKeyFile; f != "" {
		raw, err := os.ReadFile(f)
		if err != nil {
			return health.KeySet{}, fmt.Errorf("gossip key file: %w", err)
		}
		ks, err := health.ParseKeySet(raw)
		if err != nil {
			return health.KeySet{}, fmt.Errorf("gossip key file %s: %w", f, err)
		}
		return ks, nil
	}
	kv, found, err := a.kv.Get(ctx, healthKeysKey)
	if err != nil {
		return health.KeySet{}, fmt.Errorf("read gossip keys: %w", err)
	}
	if !found {
		fresh, err := health.NewKeySet()
		if err != nil {
			return health.KeySet{}, err
		}
		raw, err := fresh.Marshal()
		if err != nil {
			return health.KeySet{}, err
		}
		created, err := a.kv.CreateOnly(ctx, healthKeysKey, raw, 0)
		if err != nil {
			return health.KeySet{}, fmt.Errorf("create gossip keys: %w", err)
		}
		if created {
			a.log.Info("created the cluster's gossip key", "key", healthKeysKey)
			return fresh, nil
		}
		if kv, _, err = a.kv.Get(ctx, healthKeysKey); err != nil {
			return health.KeySet{}, fmt.Errorf("read gossip keys: %w", err)
		}
	}
	ks, err := health.ParseKeySet(kv.Value)
	if err != nil {
		return health.KeySet{}, fmt.Errorf("%s in etcd: %w", healthKeysKey, err)
	}
	return ks, nil
}

// watchHealthKeys applies key rotations written to etcd. A bad key set is logged and ignored:
// gossip keeps its current keys.
func (a *Agent) watchHealthKeys(ctx context.Context, h *health.Health) {
	for ev := range a.kv.Watch(ctx, healthKeysKey) {
		if ev.Type != kvstore.EventUpsert || ev.Key != healthKeysKey {
			continue
		}
		ks, err := health.ParseKeySet(ev.Value)
		if err == nil {
			err = h.SetKeys(ks)
		}
		if err != nil {
			a.log.Error("ignoring gossip key update", "key", healthKeysKey, "error", err)
			continue
		}
		a.log.Info("gossip keys updated", "keys", len(ks.Keys))
	}
}

// joinRegisteredNodes joins every registered node that gossip does not see alive or suspect.
func (a *Agent) joinRegisteredNodes(h *health.Health, registered *healthSeeds) {
	var seeds []string
	for name, addr := range registered.snapshot() {
		if m, ok := h.Member(name); ok && (m.State == health.StateAlive || m.State == health.StateSuspect) {
			continue
		}
		seeds = append(seeds, addr)
	}
	if len(seeds) == 0 {
		return
	}
	if n, err := h.Join(seeds); err != nil {
		a.log.Debug("join gossip", "seeds", seeds, "error", err)
	} else {
		a.log.Debug("joined gossip", "seeds", seeds, "answered", n)
	}
}

// healthChanged publishes other nodes' state changes to the monitor.
func (a *Agent) healthChanged(c health.Change) {
	if c.Member.Local {
		return
	}
	msg := fmt.Sprintf("node %s is %s", c.Member.Name, c.Member.State)
	if c.From != "" {
		msg += fmt.Sprintf(" (was %s)", c.From)
	}
	if c.Member.State == health.StateDead {
		msg += "; its endpoints may be unreachable"
	}
	a.hub.Publish(monitor.Event{Time: time.Now(), Node: a.cfg.NodeName, Type: monitor.TypeAgent, Message: msg})
}

// withHealth fills the gossip state of registered nodes and appends members gossip knows but the
// registry no longer lists (a dead node whose lease expired).
func (a *Agent) withHealth(nodes []*apiv1.Node) []*apiv1.Node {
	h, _ := a.health.get()
	if h == nil {
		return nodes
	}
	members := map[string]health.Member{}
	for _, m := range h.Members() {
		members[m.Name] = m
	}
	for _, n := range nodes {
		m, ok := members[n.Name]
		if !ok {
			n.State = "unknown"
			continue
		}
		delete(members, n.Name)
		fillHealth(n, m)
	}
	for _, m := range members {
		n := &apiv1.Node{Name: m.Name, Cluster: m.Meta.Cluster, Addresses: m.Meta.Addrs, Version: m.Meta.Version, Local: m.Local}
		fillHealth(n, m)
		nodes = append(nodes, n)
	}
	slices.SortFunc(nodes, func(x, y *apiv1.Node) int { return strings.Compare(x.Name, y.Name) })
	return nodes
}

func fillHealth(n *apiv1.Node, m health.Member) {
	n.State = string(m.State)
	n.Since = timestamppb.New(m.Since)
	if m.RTT > 0 {
		n.Rtt = durationpb.New(m.RTT)
	}
}

// healthStatus summarises gossip for `palisade status`. Routes and ipcache entries of nodes that
// gossip declared dead are reported stale: they stay until the node's lease expires (etcd
// decides), but their endpoints may be unreachable meanwhile.
func (a *Agent) healthStatus(ctx context.Context) *apiv1.ComponentStatus {
	out := &apiv1.ComponentStatus{Name: "health"}
	h, err := a.health.get()
	if h == nil {
		if err == nil {
			err = errors.New("starting")
		}
		out.Message = "gossip: " + err.Error()
		return out
	}
	counts := map[health.State]int{}
	var dead []string
	for _, m := range h.Members() {
		counts[m.State]++
		if m.State == health.StateDead {
			dead = append(dead, m.Name)
		}
	}
	var parts []string
	for _, s := range health.States {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
		}
	}
	out.Ok = true
	out.Message = fmt.Sprintf("gossip on %s: %s", h.LocalAddr(), strings.Join(parts, ", "))
	if len(dead) > 0 {
		out.Message += "; stale (node dead by gossip, kept until its lease expires): " + a.staleSummary(ctx, dead)
	}
	return out
}

// staleSummary lists, per dead node, the pod CIDR routes and ipcache entries that point at it.
func (a *Agent) staleSummary(ctx context.Context, dead []string) string {
	entries := map[string]int{}
	if kvs, _, err := a.kv.List(ctx, ipcachePrefix); err == nil {
		for _, kv := range kvs {
			var e ipcacheEntry
			if json.Unmarshal(kv.Value, &e) == nil {
				entries[e.Node]++
			}
		}
	}
	a.routes.mu.Lock()
	defer a.routes.mu.Unlock()
	var out []string
	for _, name := range dead {
		var cidrs []string
		for _, p := range a.routes.byNode[name] {
			cidrs = append(cidrs, p.String())
		}
		routes := "no routes"
		if len(cidrs) > 0 {
			routes = "routes " + strings.Join(cidrs, ",")
		}
		out = append(out, fmt.Sprintf("%s (%s, %s ipcache entries)", name, routes, strconv.Itoa(entries[name])))
	}
	return strings.Join(out, "; ")
}
