package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/palisade-mesh/palisade/agent/link"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/bpf"
	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/monitor"
)

// Endpoint states, as `palisade endpoint list` shows them.
const (
	stateWaitingForIdentity = "waiting-for-identity"
	stateRegenerating       = "regenerating"
	stateReady              = "ready"
	stateDisconnecting      = "disconnecting"
	stateFailed             = "failed"
)

// maxEndpointID bounds endpoint IDs to what monitor events and the datapath registry carry.
const maxEndpointID = 65535

// endpoint is one workload on this node. Fields other than rec are guarded by Agent.mu.
type endpoint struct {
	// regenMu serialises regenerations of this endpoint: each writes the difference from what the
	// previous one applied, so two at once would leave the kernel in neither state.
	regenMu sync.Mutex

	rec        endpointRecord
	hostIndex  int
	labels     identity.Labels // identity labels (filtered)
	state      string
	lastErr    string
	applied    []bpf.PolicyEntry // what is in the kernel now
	registered identity.ID       // identity registered with the policy engine (0: none)
	revision   uint64            // policy revision applied
	ingressOn  bool
	egressOn   bool
}

// EndpointRequest asks for a new endpoint.
type EndpointRequest struct {
	NetnsPath string
	Labels    []string
	Namespace string
	Name      string
}

// ipcacheEntry is the value of ipcache/<ip>/<prefixlen>.
type ipcacheEntry struct {
	Identity   identity.ID `json:"identity"`
	HostIP     string      `json:"hostIP"`
	Node       string      `json:"node"`
	EndpointID uint32      `json:"endpointID"`
}

const ipcachePrefix = "ipcache/"

func ipcacheKey(p netip.Prefix) string {
	return fmt.Sprintf("%s%s/%d", ipcachePrefix, p.Addr(), p.Bits())
}

// parseLabels reads user labels: "key=value" means a Kubernetes label (k8s:key=value), as
// `palisade endpoint create --labels org=empire` users expect.
func parseLabels(in []string) (identity.Labels, error) {
	var ls []identity.Label
	for _, s := range in {
		if !strings.Contains(strings.SplitN(s, "=", 2)[0], ":") {
			s = identity.SourceK8s + ":" + s
		}
		l, err := identity.ParseLabel(s)
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
	}
	return identity.NewLabels(ls...), nil
}

func (a *Agent) identityLabels(rec endpointRecord) (identity.Labels, error) {
	own, err := parseLabels(rec.Labels)
	if err != nil {
		return nil, err
	}
	base, err := identity.EndpointLabels(nil, rec.Namespace, nil, a.cfg.ClusterName)
	if err != nil {
		return nil, err
	}
	return a.filter.Relevant(own.Merge(base)), nil
}

// CreateEndpoint joins a network namespace to the node and returns when its policy is in the
// kernel. On failure everything done so far is undone.
func (a *Agent) CreateEndpoint(ctx context.Context, req EndpointRequest) (_ *apiv1.Endpoint, err error) {
	if req.NetnsPath == "" {
		return nil, fmt.Errorf("%w: --netns is required", errBadRequest)
	}
	if _, err := os.Stat(req.NetnsPath); err != nil {
		return nil, fmt.Errorf("%w: network namespace %s: %v", errBadRequest, req.NetnsPath, err)
	}
	if req.Namespace == "" {
		req.Namespace = "default"
	}
	if req.Name == "" {
		req.Name = filepath.Base(req.NetnsPath)
	}
	rec := endpointRecord{Name: req.Name, Namespace: req.Namespace, NetnsPath: req.NetnsPath, Labels: req.Labels}
	lbls, err := a.identityLabels(rec)
	if err != nil {
		return nil, fmt.Errorf("%w: labels: %v", errBadRequest, err)
	}

	a.createMu.Lock()
	defer a.createMu.Unlock()
	a.mu.Lock()
	for _, ep := range a.endpoints {
		if ep.rec.NetnsPath == req.NetnsPath {
			a.mu.Unlock()
			return nil, fmt.Errorf("%w: %s is already endpoint %d", errBadRequest, req.NetnsPath, ep.rec.ID)
		}
	}
	rec.ID = a.freeEndpointIDLocked()
	a.mu.Unlock()
	if rec.ID == 0 {
		return nil, errors.New("no free endpoint ID on this node")
	}
	log := a.log.With("endpoint", rec.ID, "netns", req.NetnsPath)

	var undo []func()
	defer func() {
		if err != nil {
			for _, u := range slices.Backward(undo) {
				u()
			}
		}
	}()
	if rec.IPv4, err = a.ipam.Allocate(fmt.Sprintf("endpoint-%d", rec.ID)); err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = a.ipam.Release(rec.IPv4) })

	id, _, err := a.alloc.Allocate(ctx, lbls)
	if err != nil {
		return nil, fmt.Errorf("allocate identity for %s: %w", lbls, err)
	}
	rec.Identity = id
	undo = append(undo, func() { _, _ = a.alloc.Release(context.WithoutCancel(ctx), id) })

	l, err := link.Setup(link.Config{EndpointNetns: rec.NetnsPath, IP: rec.IPv4, Gateway: a.ipam.Gateway()})
	if err != nil {
		return nil, err
	}
	rec.HostIfName = l.HostIfName
	undo = append(undo, func() { _ = link.Remove("", l.HostIfName) })

	ep := &endpoint{rec: rec, hostIndex: l.HostIfIndex, labels: lbls, state: stateRegenerating}
	if err := a.store.save(rec); err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = a.store.remove(rec.ID) })

	undo = append(undo, func() {
		_ = a.dp.DetachEndpoint(rec.ID)
		_ = a.dp.DeletePolicy(rec.ID)
		a.l7.removeEndpoint(rec.ID)
		if ep.registered != 0 {
			a.policy.engine.RemoveEndpoint(ep.registered)
		}
	})
	if err := a.attach(ep); err != nil {
		return nil, err
	}

	if err := a.publishIPCache(ctx, ep); err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.endpoints[rec.ID] = ep
	a.mu.Unlock()
	// A policy change that landed while the endpoint was being built must reach it too.
	a.triggerRegeneration()
	log.Info("endpoint created", "identity", id, "ipv4", rec.IPv4, "labels", lbls.String())
	return a.endpointProto(ep), nil
}

// attach computes the endpoint's policy, installs it and attaches the programs: policy first, so
// the endpoint never runs attached without its policy.
func (a *Agent) attach(ep *endpoint) error {
	if err := a.regenerateEndpoint(ep); err != nil {
		return err
	}
	return a.dp.AttachEndpoint(bpf.EndpointConfig{
		ID:        ep.rec.ID,
		IfIndex:   ep.hostIndex,
		NetnsPath: ep.rec.NetnsPath,
		IPv4:      ep.rec.IPv4,
	})
}

func (a *Agent) freeEndpointIDLocked() uint32 {
	for id := uint32(1); id <= maxEndpointID; id++ {
		if _, used := a.endpoints[id]; !used {
			return id
		}
	}
	return 0
}

func (a *Agent) publishIPCache(ctx context.Context, ep *endpoint) error {
	raw, err := json.Marshal(ipcacheEntry{Identity: ep.rec.Identity, HostIP: a.cfg.NodeIP.String(), Node: a.cfg.NodeName, EndpointID: ep.rec.ID})
	if err != nil {
		return err
	}
	lease, err := a.leaseFor(ctx)
	if err != nil {
		return fmt.Errorf("publish ipcache entry of endpoint %d: %w", ep.rec.ID, err)
	}
	key := ipcacheKey(netip.PrefixFrom(ep.rec.IPv4, 32))
	if err := a.kv.Put(ctx, key, raw, lease); err != nil {
		return fmt.Errorf("publish ipcache entry %s: %w", key, err)
	}
	// The local datapath learns it through the ipcache watch too; writing it here as well means
	// the endpoint's first packets are classified even before the watch catches up.
	if err := a.dp.UpsertIPCache(netip.PrefixFrom(ep.rec.IPv4, 32), uint32(ep.rec.Identity)); err != nil {
		return fmt.Errorf("ipcache entry of endpoint %d: %w", ep.rec.ID, err)
	}
	return nil
}

// DeleteEndpoint removes the endpoint and releases what it held.
func (a *Agent) DeleteEndpoint(ctx context.Context, id uint32) error {
	a.createMu.Lock()
	defer a.createMu.Unlock()
	a.mu.Lock()
	ep, ok := a.endpoints[id]
	if ok {
		ep.state = stateDisconnecting
	}
	a.mu.Unlock()
	if !ok {
		return fmt.Errorf("endpoint %d: %w", id, errNotFound)
	}
	var errs []error
	prefix := netip.PrefixFrom(ep.rec.IPv4, 32)
	if _, err := a.kv.Delete(ctx, ipcacheKey(prefix)); err != nil {
		errs = append(errs, err)
	}
	if err := a.dp.DetachEndpoint(id); err != nil {
		errs = append(errs, err)
	}
	if err := a.dp.DeletePolicy(id); err != nil {
		errs = append(errs, err)
	}
	a.l7.removeEndpoint(id)
	if _, err := a.dp.Conntrack().FlushEndpoint(id); err != nil {
		errs = append(errs, err)
	}
	if err := link.Remove("", ep.rec.HostIfName); err != nil {
		errs = append(errs, err)
	}
	a.mu.Lock()
	registered := ep.registered
	ep.registered = 0
	a.mu.Unlock()
	if registered != 0 {
		a.policy.engine.RemoveEndpoint(registered)
	}
	if _, err := a.alloc.Release(ctx, ep.rec.Identity); err != nil && !errors.Is(err, identity.ErrNotHeld) {
		errs = append(errs, err)
	}
	if err := a.ipam.Release(ep.rec.IPv4); err != nil {
		errs = append(errs, err)
	}
	if err := a.store.remove(id); err != nil {
		errs = append(errs, err)
	}
	a.mu.Lock()
	if len(errs) == 0 {
		delete(a.endpoints, id)
	} else {
		ep.state, ep.lastErr = stateFailed, errors.Join(errs...).Error()
	}
	a.mu.Unlock()
	if len(errs) > 0 {
		return fmt.Errorf("delete endpoint %d: %w", id, errors.Join(errs...))
	}
	a.log.Info("endpoint deleted", "endpoint", id)
	return nil
}

// restoreEndpoints adopts the endpoints saved by a previous run: their links and pinned programs
// are still there and still enforcing; the agent re-takes their addresses and identities,
// recomputes their policy and republishes their ipcache entries.
func (a *Agent) restoreEndpoints(ctx context.Context) {
	recs, errs := a.store.load()
	for _, err := range errs {
		a.log.Warn("skipping unreadable endpoint state", "error", err)
	}
	for _, rec := range recs {
		log := a.log.With("endpoint", rec.ID)
		l, found, err := link.Lookup("", rec.HostIfName)
		if err != nil || !found {
			log.Warn("endpoint's link is gone; removing it", "interface", rec.HostIfName, "error", err)
			a.forgetEndpoint(rec)
			continue
		}
		lbls, err := a.identityLabels(rec)
		if err != nil {
			log.Error("endpoint state has invalid labels; removing it", "error", err)
			a.forgetEndpoint(rec)
			continue
		}
		ep := &endpoint{rec: rec, hostIndex: l.HostIfIndex, labels: lbls, state: stateWaitingForIdentity}
		a.mu.Lock()
		a.endpoints[rec.ID] = ep
		a.mu.Unlock()
		if err := a.restoreEndpoint(ctx, ep); err != nil {
			log.Error("restore endpoint", "error", err)
			a.mu.Lock()
			ep.state, ep.lastErr = stateFailed, err.Error()
			a.mu.Unlock()
			continue
		}
		log.Info("endpoint restored", "identity", ep.rec.Identity, "ipv4", rec.IPv4)
	}
}

func (a *Agent) restoreEndpoint(ctx context.Context, ep *endpoint) error {
	rec := ep.rec
	if err := a.ipam.Claim(rec.IPv4, fmt.Sprintf("endpoint-%d", rec.ID)); err != nil {
		return err
	}
	a.mu.Lock()
	lbls := ep.labels
	a.mu.Unlock()
	id, _, err := a.alloc.Allocate(ctx, lbls)
	if err != nil {
		return fmt.Errorf("allocate identity for %s: %w", lbls, err)
	}
	a.mu.Lock()
	ep.rec.Identity = id
	ep.state = stateRegenerating
	a.mu.Unlock()
	if id != rec.Identity {
		a.log.Warn("endpoint identity changed across restart", "endpoint", rec.ID, "old", rec.Identity, "new", id)
		if err := a.store.save(ep.rec); err != nil {
			return err
		}
	}
	if err := a.attach(ep); err != nil {
		return err
	}
	return a.publishIPCache(ctx, ep)
}

// forgetEndpoint drops the state of an endpoint whose namespace or link disappeared while the
// agent was down.
func (a *Agent) forgetEndpoint(rec endpointRecord) {
	a.l7.removeEndpoint(rec.ID)
	_ = a.dp.DetachEndpoint(rec.ID)
	_ = a.dp.DeletePolicy(rec.ID)
	_ = a.ipam.Release(rec.IPv4)
	_ = a.store.remove(rec.ID)
}

// identityLost re-allocates the labels of endpoints whose identity vanished from etcd (the node
// was cut off for longer than its lease and the identity was collected).
func (a *Agent) identityLost(lost identity.Identity) {
	for _, ep := range a.endpointList() {
		a.mu.Lock()
		affected := ep.rec.Identity == lost.ID
		if affected {
			ep.state = stateWaitingForIdentity
		}
		a.mu.Unlock()
		if !affected {
			continue
		}
		a.background(func(ctx context.Context) {
			if err := a.restoreEndpoint(ctx, ep); err != nil {
				a.log.Error("re-allocate lost identity", "endpoint", ep.rec.ID, "error", err)
			}
		})
	}
}

func (a *Agent) endpointList() []*endpoint {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*endpoint, 0, len(a.endpoints))
	for _, ep := range a.endpoints {
		out = append(out, ep)
	}
	slices.SortFunc(out, func(x, y *endpoint) int { return int(x.rec.ID) - int(y.rec.ID) })
	return out
}

// Endpoints lists the node's endpoints.
func (a *Agent) Endpoints() []*apiv1.Endpoint {
	var out []*apiv1.Endpoint
	for _, ep := range a.endpointList() {
		out = append(out, a.endpointProto(ep))
	}
	return out
}

// Endpoint returns one endpoint.
func (a *Agent) Endpoint(id uint32) (*apiv1.Endpoint, bool) {
	a.mu.Lock()
	ep, ok := a.endpoints[id]
	a.mu.Unlock()
	if !ok {
		return nil, false
	}
	return a.endpointProto(ep), true
}

func (a *Agent) endpointProto(ep *endpoint) *apiv1.Endpoint {
	a.mu.Lock()
	defer a.mu.Unlock()
	var lbls []string
	for _, l := range ep.labels {
		lbls = append(lbls, l.String())
	}
	return &apiv1.Endpoint{
		Id:              ep.rec.ID,
		Name:            ep.rec.Name,
		Namespace:       ep.rec.Namespace,
		NetnsPath:       ep.rec.NetnsPath,
		Interface:       ep.rec.HostIfName,
		Ipv4:            ep.rec.IPv4.String(),
		Identity:        uint32(ep.rec.Identity),
		Labels:          lbls,
		State:           ep.state,
		IngressEnforced: ep.ingressOn,
		EgressEnforced:  ep.egressOn,
		PolicyRevision:  ep.revision,
		PolicyEntries:   uint32(len(ep.applied)),
		LastError:       ep.lastErr,
	}
}

// monitorEvent converts a datapath verdict, naming the endpoint the verdict was taken for.
func (a *Agent) monitorEvent(ev bpf.Event) monitor.Event {
	out := monitor.Event{
		Time:      ev.Time,
		Node:      a.cfg.NodeName,
		Type:      monitor.TypePolicy,
		Verdict:   monitor.VerdictAllowed,
		Direction: ev.Direction.String(),
		Protocol:  protoName(ev.Protocol),
		Source:    monitor.Peer{Identity: ev.SrcIdentity, Addr: ev.Src},
		Dest:      monitor.Peer{Identity: ev.DstIdentity, Addr: ev.Dst},
	}
	switch ev.Verdict {
	case bpf.VerdictDenied:
		out.Type = monitor.TypeDrop
		out.Verdict = monitor.VerdictDenied
		out.Reason = ev.Reason.String()
	case bpf.VerdictRedirected:
		out.Verdict = monitor.VerdictRedirected
		out.Reason = fmt.Sprintf("matched %s, to proxy port %d", matchName(ev.Match), ev.ProxyPort)
	default:
		// Which policy entry admitted the flow: what an operator asks first about an allow.
		out.Reason = "matched " + matchName(ev.Match)
	}
	if ev.Direction == bpf.Ingress {
		out.Dest.Endpoint = uint16(ev.Endpoint)
	} else {
		out.Source.Endpoint = uint16(ev.Endpoint)
	}
	return out
}

func protoName(p uint8) string {
	switch p {
	case 6:
		return "TCP"
	case 17:
		return "UDP"
	case 132:
		return "SCTP"
	case 1:
		return "ICMP"
	}
	return fmt.Sprint(p)
}

// Status summarises the agent for `palisade status`.
func (a *Agent) Status(ctx context.Context) *apiv1.StatusResponse {
	out := &apiv1.StatusResponse{
		Node:      a.cfg.NodeName,
		Cluster:   a.cfg.ClusterName,
		ClusterId: a.cfg.ClusterID,
		Version:   Version,
		Started:   timestamppb.New(a.started),
	}
	st, err := a.kv.Status(ctx)
	switch {
	case err != nil:
		out.Kvstore = &apiv1.ComponentStatus{Name: "kvstore", Message: err.Error()}
	case st.Healthy:
		out.Kvstore = &apiv1.ComponentStatus{Name: "kvstore", Ok: true, Message: fmt.Sprintf("%d endpoints, %d members", len(st.Endpoints), st.Members)}
	default:
		out.Kvstore = &apiv1.ComponentStatus{Name: "kvstore", Message: st.Error}
	}
	dpMsg := fmt.Sprintf("eBPF, pinned at %s", a.dp.PinDir())
	out.Datapath = &apiv1.ComponentStatus{Name: "datapath", Ok: true, Message: dpMsg}
	out.Health = a.healthStatus(ctx)
	for _, ep := range a.Endpoints() {
		out.Endpoints++
		if ep.State == stateReady {
			out.EndpointsReady++
		}
	}
	out.Identities = uint32(len(a.alloc.Cache().List()))
	out.PolicyRevision, out.Policies = a.policy.summary()
	return out
}

// matchName names the rung of the datapath's policy ladder that admitted a flow.
func matchName(m bpf.Match) string {
	switch m {
	case bpf.MatchIdentityPort:
		return "identity+port"
	case bpf.MatchIdentityProto:
		return "identity+protocol"
	case bpf.MatchIdentity:
		return "identity"
	case bpf.MatchPortProto:
		return "any identity+port"
	case bpf.MatchProto:
		return "any identity+protocol"
	case bpf.MatchAll:
		return "allow-all"
	}
	return fmt.Sprint(uint8(m))
}
