package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Health is this node's membership in its cluster's gossip. Create it with New, add peers with
// Join, stop it with Leave (graceful: the others record "left") or Close (the others will find it
// dead, as after a crash).
type Health struct {
	cfg       Config
	log       *slog.Logger
	ml        *memberlist.Memberlist
	keyring   *memberlist.Keyring
	metrics   *metrics
	transport *countingTransport

	mu      sync.Mutex
	meta    Meta
	members map[string]*Member
	queue   []Change

	wake      chan struct{}
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// New starts gossip on cfg.BindAddr. The node is a cluster of one until Join.
func New(cfg Config) (*Health, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("health config: %w", err)
	}
	h := &Health{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "health"),
		metrics: newMetrics(),
		meta:    cfg.Meta,
		members: map[string]*Member{},
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	if _, err := h.meta.encode(); err != nil {
		return nil, err
	}

	mc := memberlist.DefaultLANConfig()
	p := cfg.Profile
	mc.Name = cfg.Meta.Node
	mc.BindAddr = cfg.BindAddr.String()
	mc.BindPort = cfg.Port
	mc.AdvertiseAddr = cfg.BindAddr.String()
	mc.AdvertisePort = cfg.Port
	mc.ProbeInterval, mc.ProbeTimeout = p.ProbeInterval, p.ProbeTimeout
	mc.SuspicionMult, mc.SuspicionMaxTimeoutMult = p.SuspicionMult, p.SuspicionMaxTimeoutMult
	mc.GossipInterval, mc.GossipNodes = p.GossipInterval, p.GossipNodes
	mc.PushPullInterval, mc.GossipToTheDeadTime, mc.TCPTimeout = p.PushPullInterval, p.GossipToTheDeadTime, p.TCPTimeout
	// The label keeps clusters sharing a network from merging: packets of another cluster are dropped.
	mc.Label = "palisade/" + cfg.Meta.Cluster
	mc.Logger = log.New(&logBridge{h: h}, "", 0)
	var err error
	if h.transport, err = newCountingTransport(mc.BindAddr, cfg.Port, mc.Logger); err != nil {
		return nil, err
	}
	mc.Transport = h.transport
	mc.BindPort = h.transport.port()
	mc.AdvertisePort = mc.BindPort
	ev := &delegate{h: h}
	mc.Delegate, mc.Events, mc.Ping = ev, ev, ev
	if !cfg.Keys.IsZero() {
		if h.keyring, err = memberlist.NewKeyring(cfg.Keys.Keys, cfg.Keys.Primary); err != nil {
			return nil, fmt.Errorf("gossip keyring: %w", err)
		}
		mc.Keyring = h.keyring
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}

	go h.dispatch()
	h.ml, err = memberlist.Create(mc)
	if err != nil {
		h.transport.Shutdown()
		close(h.stop)
		<-h.done
		return nil, fmt.Errorf("start gossip on %s: %w", net.JoinHostPort(mc.BindAddr, fmt.Sprint(cfg.Port)), err)
	}
	if err := h.metrics.register(cfg.Registerer, h.transport); err != nil {
		h.Close()
		return nil, fmt.Errorf("health metrics: %w", err)
	}
	return h, nil
}

// Join contacts the given members ("ip:port") and merges their view; it succeeds when at least one
// answered.
func (h *Health) Join(seeds []string) (int, error) {
	n, err := h.ml.Join(seeds)
	if n == 0 && err != nil {
		return 0, fmt.Errorf("join gossip through %v: %w", seeds, err)
	}
	return n, nil
}

// LocalAddr is the address and port the others reach this node's gossip on.
func (h *Health) LocalAddr() netip.AddrPort {
	n := h.ml.LocalNode()
	ip, _ := netip.AddrFromSlice(n.Addr)
	return netip.AddrPortFrom(ip.Unmap(), n.Port)
}

// Members returns every member seen since start (dead and left ones included), by name.
func (h *Health) Members() []Member {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Member, 0, len(h.members))
	for _, m := range h.members {
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Member returns one member by name.
func (h *Health) Member(name string) (Member, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m, ok := h.members[name]
	if !ok {
		return Member{}, false
	}
	return *m, true
}

// SetKeys replaces the gossip key set (rotation). It fails, changing nothing, on an invalid set
// or when gossip was started without encryption.
func (h *Health) SetKeys(ks KeySet) error {
	if err := ks.Validate(); err != nil {
		return err
	}
	if h.keyring == nil {
		return errors.New("gossip was started without encryption; restart with a key set")
	}
	return ks.apply(h.keyring)
}

// leavingPrefix starts the message a leaving member sends every other member directly.
const leavingPrefix = "palisade-leaving:"

// Leave tells the others this node is going away, so they record it as left, and stops gossip.
// The intent goes to every member directly (TCP, in parallel) before memberlist's own leave
// broadcast: gossip alone may bring a member the leave before the intent, and it would record a
// death. It waits at most timeout for each step.
func (h *Health) Leave(timeout time.Duration) error {
	h.mu.Lock()
	h.meta.Leaving = true
	h.mu.Unlock()
	var errs []error
	msg := []byte(leavingPrefix + h.cfg.Meta.Node)
	var wg sync.WaitGroup
	for _, n := range h.ml.Members() {
		if n.Name == h.cfg.Meta.Node {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = h.ml.SendReliable(n, msg) // unreachable members will see the leave broadcast, or a death
		}()
	}
	sent := make(chan struct{})
	go func() { wg.Wait(); close(sent) }()
	select {
	case <-sent:
	case <-time.After(timeout):
		errs = append(errs, fmt.Errorf("announce leaving: not every member answered within %s", timeout))
	}
	if err := h.ml.Leave(timeout); err != nil {
		errs = append(errs, fmt.Errorf("leave gossip: %w", err))
	}
	errs = append(errs, h.Close())
	return errors.Join(errs...)
}

// Close stops gossip without a goodbye; the others will declare this node dead.
func (h *Health) Close() error {
	var err error
	h.closeOnce.Do(func() {
		err = h.ml.Shutdown()
		close(h.stop)
		<-h.done
	})
	return err
}

// WaitFor blocks until member name is in state want, or ctx ends.
func (h *Health) WaitFor(ctx context.Context, name string, want State) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if m, ok := h.Member(name); ok && m.State == want {
			return nil
		}
		select {
		case <-ctx.Done():
			m, _ := h.Member(name)
			return fmt.Errorf("member %s is %q, not %q: %w", name, m.State, want, ctx.Err())
		case <-t.C:
		}
	}
}

// transition moves a member to state (creating it if unknown) and queues the change. update, when
// not nil, refreshes the member's fields whether or not the state changes.
func (h *Health) transition(n *memberlist.Node, state State, update func(*Member)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m, ok := h.members[n.Name]
	if !ok {
		m = &Member{Name: n.Name, Local: n.Name == h.cfg.Meta.Node}
		h.members[n.Name] = m
	}
	if ip, ok := netip.AddrFromSlice(n.Addr); ok {
		m.Addr = netip.AddrPortFrom(ip.Unmap(), n.Port)
	}
	if update != nil {
		update(m)
	}
	if state == "" || m.State == state {
		return
	}
	h.setStateLocked(m, state)
}

// setStateLocked records a state change and queues it for OnChange.
func (h *Health) setStateLocked(m *Member, state State) {
	from := m.State
	m.State, m.Since = state, time.Now()
	h.metrics.changes.WithLabelValues(string(state)).Inc()
	h.countLocked()
	h.queue = append(h.queue, Change{Member: *m, From: from})
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *Health) countLocked() {
	counts := map[State]int{}
	for _, m := range h.members {
		counts[m.State]++
	}
	for _, s := range States {
		h.metrics.members.WithLabelValues(string(s)).Set(float64(counts[s]))
	}
}

// dispatch delivers changes to OnChange outside memberlist's locks (its callbacks hold them).
func (h *Health) dispatch() {
	defer close(h.done)
	for {
		select {
		case <-h.stop:
			return
		case <-h.wake:
		}
		h.mu.Lock()
		batch := h.queue
		h.queue = nil
		h.mu.Unlock()
		for _, c := range batch {
			if c.Member.State != StateAlive || c.From != "" {
				h.log.Info("member state changed", "member", c.Member.Name, "from", c.From, "to", c.Member.State, "addr", c.Member.Addr)
			}
			if h.cfg.OnChange != nil {
				h.cfg.OnChange(c)
			}
		}
	}
}

// delegate receives memberlist's callbacks. They run under memberlist's locks: no blocking, no
// calls back into memberlist.
type delegate struct{ h *Health }

func (d *delegate) NodeMeta(limit int) []byte {
	d.h.mu.Lock()
	meta := d.h.meta
	d.h.mu.Unlock()
	raw, err := meta.encode()
	if err != nil || len(raw) > limit {
		d.h.log.Error("health meta does not fit", "limit", limit, "error", err)
		return nil
	}
	return raw
}

// NotifyMsg receives the leave intents (messages are authenticated by the gossip key).
func (d *delegate) NotifyMsg(msg []byte) {
	name, ok := strings.CutPrefix(string(msg), leavingPrefix)
	if !ok {
		return
	}
	d.h.mu.Lock()
	defer d.h.mu.Unlock()
	m, known := d.h.members[name]
	if !known {
		return
	}
	m.Meta.Leaving = true
	if m.State == StateDead { // the leave broadcast overtook the intent
		d.h.setStateLocked(m, StateLeft)
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

func (d *delegate) NotifyJoin(n *memberlist.Node) {
	d.h.transition(n, StateAlive, d.setMeta(n))
}

func (d *delegate) NotifyUpdate(n *memberlist.Node) {
	d.h.transition(n, "", d.setMeta(n))
}

// NotifyLeave comes for dead and left members alike (memberlist's Node.State is not kept up to
// date), so the member's last metadata tells: a graceful leave announces Leaving first.
func (d *delegate) NotifyLeave(n *memberlist.Node) {
	d.h.mu.Lock()
	m, ok := d.h.members[n.Name]
	leaving := ok && m.Meta.Leaving
	d.h.mu.Unlock()
	if meta, err := DecodeMeta(n.Meta); err == nil && meta.Leaving {
		leaving = true
	}
	state := StateDead
	if leaving {
		state = StateLeft
	}
	d.h.transition(n, state, nil)
}

func (d *delegate) setMeta(n *memberlist.Node) func(*Member) {
	meta, err := DecodeMeta(n.Meta)
	if err != nil {
		d.h.log.Warn("ignoring malformed member metadata", "member", n.Name, "error", err)
		return nil
	}
	if meta.Node != n.Name || meta.Cluster != d.h.cfg.Meta.Cluster {
		d.h.log.Warn("member metadata does not match the member", "member", n.Name, "meta_node", meta.Node, "meta_cluster", meta.Cluster)
		return nil
	}
	return func(m *Member) { m.Meta = meta }
}

func (d *delegate) AckPayload() []byte { return nil }

// NotifyPingComplete is a successful probe: the RTT, and the end of this node's own suspicion.
func (d *delegate) NotifyPingComplete(n *memberlist.Node, rtt time.Duration, _ []byte) {
	d.h.metrics.rtt.Observe(rtt.Seconds())
	d.h.mu.Lock()
	suspect := false
	if m, ok := d.h.members[n.Name]; ok {
		suspect = m.State == StateSuspect
	}
	d.h.mu.Unlock()
	var state State
	if suspect {
		state = StateAlive
	}
	d.h.transition(n, state, func(m *Member) { m.RTT = rtt })
}

// suspect records this node's own suspicion, which memberlist only reports in its log.
func (h *Health) suspect(name string) {
	h.mu.Lock()
	m, ok := h.members[name]
	if !ok || m.State != StateAlive {
		h.mu.Unlock()
		return
	}
	h.setStateLocked(m, StateSuspect)
	h.mu.Unlock()
}

// logBridge turns memberlist's log lines ("[LEVEL] memberlist: text") into slog records and picks
// out the events memberlist reports only there: this node's suspicions and rejected messages.
type logBridge struct{ h *Health }

func (b *logBridge) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	level := slog.LevelInfo
	switch {
	case strings.HasPrefix(line, "[DEBUG]"):
		level = slog.LevelDebug
	case strings.HasPrefix(line, "[WARN]"):
		level = slog.LevelWarn
	case strings.HasPrefix(line, "[ERR]"):
		level = slog.LevelError
	}
	if i := strings.Index(line, "memberlist: "); i >= 0 {
		line = line[i+len("memberlist: "):]
	}
	if rest, ok := strings.CutPrefix(line, "Suspect "); ok {
		if name, _, ok := strings.Cut(rest, " has failed"); ok {
			b.h.suspect(name)
		}
	}
	lower := strings.ToLower(line)
	switch {
	case strings.Contains(lower, "decrypt"):
		b.h.metrics.rejected.WithLabelValues("decrypt").Inc()
		b.h.log.Warn("rejected gossip message: not encrypted with any installed key", "detail", line)
		return len(p), nil
	case strings.Contains(lower, "unacceptable label"):
		b.h.metrics.rejected.WithLabelValues("label").Inc()
		b.h.log.Warn("rejected gossip message from another cluster", "detail", line)
		return len(p), nil
	}
	b.h.log.Log(context.Background(), level, line)
	return len(p), nil
}
