package bpf

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/cilium/ebpf"
)

// Direction is the direction of traffic relative to an endpoint.
type Direction uint8

const (
	// Ingress is traffic delivered to the endpoint.
	Ingress Direction = 0
	// Egress is traffic the endpoint sends.
	Egress Direction = 1
)

func (d Direction) String() string {
	switch d {
	case Ingress:
		return "ingress"
	case Egress:
		return "egress"
	}
	return "direction(" + strconv.Itoa(int(d)) + ")"
}

// IP protocol numbers the policy keys use.
const (
	ProtoAny  uint8 = 0
	ProtoICMP uint8 = 1
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
	ProtoSCTP uint8 = 132
)

// PolicyEntry is one allow or deny entry of an endpoint's policy, as the agent computes it.
type PolicyEntry struct {
	// Identity of the peer; 0 matches any identity.
	Identity  uint32
	Direction Direction
	// Protocol is the IP protocol number; ProtoAny (0) matches every protocol and then Port must
	// be 0.
	Protocol uint8
	// Port is the destination port; 0 matches any port. With EndPort (>= Port) the entry covers
	// the range Port..EndPort, which is expanded into one map entry per port: a range costs as many
	// entries as it has ports against Options.PolicyMapMaxEntries, and 1..65535 is stored as the
	// single wildcard entry.
	Port    uint16
	EndPort uint16
	// Deny makes the entry a deny entry, which wins over every allow.
	Deny bool
	// ProxyPort, when non-zero, sends the flows this entry admits to the proxy listener registered
	// for that port. Ingress TCP entries only.
	ProxyPort uint16
}

// PolicyKey is one expanded key of an endpoint's policy map.
type PolicyKey struct {
	Identity  uint32
	Direction Direction
	Protocol  uint8
	Port      uint16
}

// PolicyStats is one installed policy map entry with its counters: packets and bytes of the
// packets evaluated against it (the first packet of each flow it admitted, every packet it denied).
type PolicyStats struct {
	PolicyKey
	Deny      bool
	ProxyPort uint16
	Packets   uint64
	Bytes     uint64
}

// ErrPolicyMapFull is matched (errors.Is) by every *PolicyMapFullError.
var ErrPolicyMapFull = errors.New("policy map full")

// PolicyMapFullError reports a policy that does not fit an endpoint's policy map.
type PolicyMapFullError struct {
	Endpoint uint32
	Needed   int // entries after port-range expansion
	Limit    int // Options.PolicyMapMaxEntries
}

func (e *PolicyMapFullError) Error() string {
	return fmt.Sprintf("policy map full: endpoint %d needs %d entries, the limit is %d "+
		"(raise PolicyMapMaxEntries or use wider selectors and fewer port ranges)", e.Endpoint, e.Needed, e.Limit)
}

// Is makes errors.Is(err, ErrPolicyMapFull) hold.
func (e *PolicyMapFullError) Is(target error) bool { return target == ErrPolicyMapFull }

func (e PolicyEntry) validate() error {
	switch {
	case e.Direction != Ingress && e.Direction != Egress:
		return fmt.Errorf("unknown direction %d", e.Direction)
	case e.Protocol == ProtoAny && (e.Port != 0 || e.EndPort != 0):
		return errors.New("a port needs a protocol")
	case e.Port == 0 && e.EndPort != 0:
		return fmt.Errorf("end port %d without a start port", e.EndPort)
	case e.EndPort != 0 && e.EndPort < e.Port:
		return fmt.Errorf("end port %d below port %d", e.EndPort, e.Port)
	case e.ProxyPort != 0 && e.Deny:
		return errors.New("a deny entry cannot have a proxy port")
	case e.ProxyPort != 0 && e.Direction != Ingress:
		return errors.New("proxy redirect is supported for ingress entries only")
	case e.ProxyPort != 0 && e.Protocol != ProtoTCP:
		return errors.New("proxy redirect needs protocol TCP")
	}
	return nil
}

func (e PolicyEntry) String() string {
	verb := "allow"
	if e.Deny {
		verb = "deny"
	}
	s := fmt.Sprintf("%s %s identity %d proto %d port %d", verb, e.Direction, e.Identity, e.Protocol, e.Port)
	if e.EndPort != 0 {
		s += "-" + strconv.Itoa(int(e.EndPort))
	}
	if e.ProxyPort != 0 {
		s += " proxy " + strconv.Itoa(int(e.ProxyPort))
	}
	return s
}

// portRange returns the inclusive ports an entry covers; (0, 0) is the port wildcard.
func (e PolicyEntry) portRange() (uint16, uint16) {
	end := e.EndPort
	if end == 0 {
		end = e.Port
	}
	if e.Port <= 1 && end == 65535 {
		return 0, 0
	}
	return e.Port, end
}

func (e PolicyEntry) size() int {
	lo, hi := e.portRange()
	return int(hi) - int(lo) + 1
}

func (e PolicyEntry) keys(yield func(datapathPolicyKey) error) error {
	lo, hi := e.portRange()
	for p := int(lo); p <= int(hi); p++ {
		k := datapathPolicyKey{Identity: e.Identity, Dport: uint16(p), Proto: e.Protocol, Dir: uint8(e.Direction)}
		if err := yield(k); err != nil {
			return err
		}
	}
	return nil
}

// desiredPolicy is an endpoint's policy map content, built from entries.
type desiredPolicy map[datapathPolicyKey]datapathPolicyValue

// buildPolicy validates and expands entries. Overlapping entries merge: deny wins, and two allows
// of one key must agree on the proxy port.
func buildPolicy(epID uint32, entries []PolicyEntry, limit int) (desiredPolicy, error) {
	needed := 0
	for i, e := range entries {
		if err := e.validate(); err != nil {
			return nil, fmt.Errorf("endpoint %d policy entry %d (%s): %w", epID, i, e, err)
		}
		needed += e.size()
	}
	// Refuse early, before expanding something huge; overlaps can only lower the real count.
	if needed > limit {
		if n := countDistinct(entries); n > limit {
			return nil, &PolicyMapFullError{Endpoint: epID, Needed: n, Limit: limit}
		}
	}
	out := make(desiredPolicy, min(needed, limit))
	for i, e := range entries {
		err := e.keys(func(k datapathPolicyKey) error {
			v := datapathPolicyValue{ProxyPort: e.ProxyPort}
			if e.Deny {
				v.Deny = 1
			}
			prev, ok := out[k]
			switch {
			case !ok || v.Deny == 1:
				out[k] = v
			case prev.Deny == 1:
			case prev.ProxyPort != v.ProxyPort:
				return fmt.Errorf("endpoint %d policy entry %d (%s): conflicts with another entry on proxy port (%d vs %d) for port %d",
					epID, i, e, prev.ProxyPort, v.ProxyPort, k.Dport)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func countDistinct(entries []PolicyEntry) int {
	seen := make(map[datapathPolicyKey]struct{})
	for _, e := range entries {
		_ = e.keys(func(k datapathPolicyKey) error {
			seen[k] = struct{}{}
			return nil
		})
	}
	return len(seen)
}

// ReplacePolicy installs entries as the endpoint's whole policy in one atomic step: the datapath
// sees either the old policy or the new one, never a mix. Counters of keys present in both carry
// over. Established flows the new policy no longer admits (or admits through a different proxy
// port) are cut. Invalid entries or a policy above the size limit change nothing.
func (d *Datapath) ReplacePolicy(epID uint32, entries []PolicyEntry) error {
	return d.replacePolicy(epID, entries, nil)
}

// replacePolicy is ReplacePolicy, cutting flows now (b nil) or at b.RevokeFlows.
func (d *Datapath) replacePolicy(epID uint32, entries []PolicyEntry, b *PolicyBatch) error {
	if epID == 0 {
		return errors.New("replace policy: endpoint ID must not be 0")
	}
	want, err := buildPolicy(epID, entries, d.opts.PolicyMapMaxEntries)
	if err != nil {
		return fmt.Errorf("replace policy: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.replaceLocked(epID, want, b)
}

func (d *Datapath) replaceLocked(epID uint32, want desiredPolicy, b *PolicyBatch) error {
	old, err := d.innerMap(epID)
	if err != nil {
		return err
	}
	if old != nil {
		defer old.Close()
		if err := carryCounters(old, want); err != nil {
			return fmt.Errorf("replace policy of endpoint %d: %w", epID, err)
		}
	}
	spec := d.innerSpec.Copy()
	spec.Name = "pal_pol_" + strconv.FormatUint(uint64(epID), 10)
	inner, err := ebpf.NewMap(spec)
	if err != nil {
		return fmt.Errorf("replace policy of endpoint %d: create policy map: %w", epID, err)
	}
	defer inner.Close()
	if len(want) > 0 {
		keys := make([]datapathPolicyKey, 0, len(want))
		vals := make([]datapathPolicyValue, 0, len(want))
		for k, v := range want {
			keys = append(keys, k)
			vals = append(vals, v)
		}
		if _, err := inner.BatchUpdate(keys, vals, nil); err != nil {
			return fmt.Errorf("replace policy of endpoint %d: fill policy map: %w", epID, err)
		}
	}
	if err := d.objs.PalPolicy.Put(epID, inner); err != nil {
		return fmt.Errorf("replace policy of endpoint %d: swap policy map: %w", epID, err)
	}
	d.policyCounts[epID] = len(want)
	return d.revokeLater(b, epID, want.lookup)
}

// ApplyPolicyDelta removes deletes and then adds adds to the endpoint's installed policy. Each map
// update is atomic on its own, not the delta as a whole (use ReplacePolicy for that); a failed
// delta is rolled back. Removing a key that is not installed is not an error. Established flows the
// resulting policy no longer admits are cut.
func (d *Datapath) ApplyPolicyDelta(epID uint32, adds, deletes []PolicyEntry) error {
	return d.applyPolicyDelta(epID, adds, deletes, nil)
}

// applyPolicyDelta is ApplyPolicyDelta, cutting flows now (b nil) or at b.RevokeFlows.
func (d *Datapath) applyPolicyDelta(epID uint32, adds, deletes []PolicyEntry, b *PolicyBatch) error {
	if epID == 0 {
		return errors.New("apply policy delta: endpoint ID must not be 0")
	}
	limit := d.opts.PolicyMapMaxEntries
	addMap, err := buildPolicy(epID, adds, limit)
	if err != nil {
		return fmt.Errorf("apply policy delta: adds: %w", err)
	}
	delMap, err := buildPolicy(epID, deletes, 1<<30)
	if err != nil {
		return fmt.Errorf("apply policy delta: deletes: %w", err)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	inner, err := d.innerMap(epID)
	if err != nil {
		return err
	}
	if inner == nil {
		// Nothing installed yet: the delta is the whole policy.
		return d.replaceLocked(epID, addMap, b)
	}
	defer inner.Close()

	count, err := d.policySizeLocked(epID, inner)
	if err != nil {
		return err
	}
	prev, err := readInstalled(inner, count, delMap, addMap)
	if err != nil {
		return fmt.Errorf("apply policy delta to endpoint %d: %w", epID, err)
	}
	revokes := false
	for k := range delMap {
		if _, readded := addMap[k]; !readded && prev[k].ok {
			count--
			// Without a deny entry no admitted flow loses its allow or changes its proxy port.
			revokes = revokes || prev[k].v.Deny == 0
		}
	}
	for k, v := range addMap {
		p := prev[k]
		if !p.ok {
			count++
		}
		if v.Deny == 1 || (p.ok && (p.v.Deny == 1 || p.v.ProxyPort != v.ProxyPort)) {
			revokes = true
		}
	}
	if count > limit {
		return fmt.Errorf("apply policy delta: %w", &PolicyMapFullError{Endpoint: epID, Needed: count, Limit: limit})
	}

	var applied []datapathPolicyKey
	rollback := func(cause error) error {
		for _, k := range applied {
			if p := prev[k]; p.ok {
				_ = inner.Put(&k, &p.v)
			} else {
				_ = inner.Delete(&k)
			}
		}
		delete(d.policyCounts, epID)
		return fmt.Errorf("apply policy delta to endpoint %d: %w (rolled back)", epID, cause)
	}
	var delKeys []datapathPolicyKey
	for k := range delMap {
		if _, readded := addMap[k]; !readded && prev[k].ok {
			delKeys = append(delKeys, k)
		}
	}
	applied, err = deleteBatch(inner, delKeys)
	if err != nil {
		return rollback(fmt.Errorf("delete entries: %w", err))
	}
	putKeys := make([]datapathPolicyKey, 0, len(addMap))
	putVals := make([]datapathPolicyValue, 0, len(addMap))
	for k, v := range addMap {
		if p := prev[k]; p.ok {
			v.Packets, v.Bytes = p.v.Packets, p.v.Bytes
		}
		putKeys = append(putKeys, k)
		putVals = append(putVals, v)
	}
	n, err := updateBatch(inner, putKeys, putVals)
	applied = append(applied, putKeys[:n]...)
	if err != nil {
		return rollback(fmt.Errorf("put entries: %w", err))
	}
	d.policyCounts[epID] = count
	if !revokes {
		return nil
	}
	return d.revokeLater(b, epID, (&installedPolicy{m: inner, seen: make(map[datapathPolicyKey]cachedLookup)}).lookup)
}

// DeletePolicy removes the endpoint's policy; its traffic is dropped until a new one is installed.
func (d *Datapath) DeletePolicy(epID uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.objs.PalPolicy.Delete(epID); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete policy of endpoint %d: %w", epID, err)
	}
	delete(d.policyCounts, epID)
	return d.revokeFlows(epID, nil)
}

// Policy returns the endpoint's installed entries with their counters (nil when none is installed).
func (d *Datapath) Policy(epID uint32) ([]PolicyStats, error) {
	d.mu.Lock()
	inner, err := d.innerMap(epID)
	d.mu.Unlock()
	if err != nil || inner == nil {
		return nil, err
	}
	defer inner.Close()
	m, err := readPolicy(inner)
	if err != nil {
		return nil, fmt.Errorf("read policy of endpoint %d: %w", epID, err)
	}
	out := make([]PolicyStats, 0, len(m))
	for k, v := range m {
		out = append(out, PolicyStats{
			PolicyKey: PolicyKey{Identity: k.Identity, Direction: Direction(k.Dir), Protocol: k.Proto, Port: k.Dport},
			Deny:      v.Deny != 0, ProxyPort: v.ProxyPort, Packets: v.Packets, Bytes: v.Bytes,
		})
	}
	return out, nil
}

// innerMap opens the endpoint's installed policy map, or returns nil when there is none.
func (d *Datapath) innerMap(epID uint32) (*ebpf.Map, error) {
	var id uint32
	err := d.objs.PalPolicy.Lookup(epID, &id)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up policy of endpoint %d: %w", epID, err)
	}
	m, err := ebpf.NewMapFromID(ebpf.MapID(id))
	if err != nil {
		return nil, fmt.Errorf("open policy map %d of endpoint %d: %w", id, epID, err)
	}
	return m, nil
}

// policySize is the number of installed entries of the endpoint, -1 when none is installed.
func (d *Datapath) policySize(epID uint32) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if n, ok := d.policyCounts[epID]; ok {
		return n, nil
	}
	inner, err := d.innerMap(epID)
	if err != nil || inner == nil {
		return -1, err
	}
	defer inner.Close()
	return d.policySizeLocked(epID, inner)
}

// policySizeLocked counts the entries of the endpoint's installed map inner, once per process.
func (d *Datapath) policySizeLocked(epID uint32, inner *ebpf.Map) (int, error) {
	if n, ok := d.policyCounts[epID]; ok {
		return n, nil
	}
	n := 0
	if err := scanMap(inner, func(datapathPolicyKey, datapathPolicyValue) bool { n++; return false }); err != nil {
		return -1, fmt.Errorf("count policy entries of endpoint %d: %w", epID, err)
	}
	d.policyCounts[epID] = n
	return n, nil
}

func readPolicy(m *ebpf.Map) (desiredPolicy, error) {
	out := make(desiredPolicy)
	err := scanMap(m, func(k datapathPolicyKey, v datapathPolicyValue) bool {
		out[k] = v
		return false
	})
	if err != nil {
		return nil, fmt.Errorf("read policy map: %w", err)
	}
	return out, nil
}

func carryCounters(old *ebpf.Map, want desiredPolicy) error {
	cur, err := readPolicy(old)
	if err != nil {
		return err
	}
	for k, v := range want {
		if prev, ok := cur[k]; ok {
			v.Packets, v.Bytes = prev.Packets, prev.Bytes
			want[k] = v
		}
	}
	return nil
}

// policyLookup reads one entry of a policy, from Go or from the kernel.
type policyLookup func(datapathPolicyKey) (datapathPolicyValue, bool)

func (p desiredPolicy) lookup(k datapathPolicyKey) (datapathPolicyValue, bool) {
	v, ok := p[k]
	return v, ok
}

// verdict evaluates a new flow against p the way the datapath does (see the package doc).
func (p desiredPolicy) verdict(identity uint32, port uint16, proto uint8, dir Direction) (allowed bool, proxyPort uint16) {
	return verdictWith(p.lookup, identity, port, proto, dir)
}

func verdictWith(lookup policyLookup, identity uint32, port uint16, proto uint8, dir Direction) (allowed bool, proxyPort uint16) {
	type rung struct {
		id    uint32
		port  uint16
		proto uint8
	}
	ladder := [...]rung{
		{identity, port, proto}, {identity, 0, proto}, {identity, 0, 0},
		{0, port, proto}, {0, 0, proto}, {0, 0, 0},
	}
	var best *datapathPolicyValue
	for _, r := range ladder {
		v, ok := lookup(datapathPolicyKey{Identity: r.id, Dport: r.port, Proto: r.proto, Dir: uint8(dir)})
		if !ok {
			continue
		}
		if v.Deny != 0 {
			return false, 0
		}
		if best == nil {
			best = &v
		}
	}
	if best == nil {
		return false, 0
	}
	return true, best.ProxyPort
}
