package policy

import (
	"fmt"
	"slices"

	"github.com/palisade-mesh/palisade/identity"
)

// Direction of traffic relative to the endpoint a MapState belongs to.
type Direction uint8

const (
	Ingress Direction = iota
	Egress
)

// MarshalText writes "ingress" or "egress".
func (d Direction) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// IP protocol numbers used in keys. 0 means any protocol.
const (
	ProtoAny  uint8 = 0
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
	ProtoSCTP uint8 = 132
)

// ProtoName returns TCP, UDP, SCTP, ANY or the number.
func ProtoName(p uint8) string {
	switch p {
	case ProtoAny:
		return "ANY"
	case ProtoTCP:
		return "TCP"
	case ProtoUDP:
		return "UDP"
	case ProtoSCTP:
		return "SCTP"
	}
	return fmt.Sprint(p)
}

// Key is one MapState entry's key.
type Key struct {
	Identity  identity.ID // the peer; 0 = any peer
	Direction Direction
	Proto     uint8  // 0 = any protocol
	Port      uint16 // first port; 0 = any port
	EndPort   uint16 // last port: equal to Port for a single port, 0 with Port 0
}

func (k Key) String() string {
	ports := "any"
	switch {
	case k.Port == 0:
	case k.EndPort == k.Port:
		ports = fmt.Sprint(k.Port)
	default:
		ports = fmt.Sprintf("%d-%d", k.Port, k.EndPort)
	}
	return fmt.Sprintf("%s identity=%d %s/%s", k.Direction, k.Identity, ports, ProtoName(k.Proto))
}

func (k Key) holds(id identity.ID, dir Direction, proto uint8, port uint16) bool {
	return k.Direction == dir &&
		(k.Identity == 0 || k.Identity == id) &&
		(k.Proto == ProtoAny || k.Proto == proto) &&
		(k.Port == 0 || (port >= k.Port && port <= k.EndPort))
}

// Value is what an entry allows.
type Value struct {
	// Deny drops matching traffic whatever else allows it.
	Deny bool
	// Redirect sends matching traffic to the L7 proxy, which enforces L7. The agent picks the proxy
	// port; the policy only says that this key needs one.
	Redirect bool
	L7       *L7Policy
}

// Equal compares values, L7 rules included.
func (v Value) Equal(o Value) bool {
	return v.Deny == o.Deny && v.Redirect == o.Redirect && v.L7.Equal(o.L7)
}

func (v Value) String() string {
	switch {
	case v.Deny:
		return "deny"
	case v.Redirect:
		return "redirect " + v.L7.String()
	}
	return "allow"
}

// MapState is the computed policy of one endpoint identity.
type MapState map[Key]Value

// Lookup applies the MapState semantics (see the package documentation) to one packet: it returns
// the verdict value and whether any entry allows or denies it (false: dropped by default deny).
func (m MapState) Lookup(peer identity.ID, dir Direction, proto uint8, port uint16) (Value, bool) {
	var (
		found, plain bool
		l7           *L7Policy
	)
	for k, v := range m {
		if !k.holds(peer, dir, proto, port) {
			continue
		}
		if v.Deny {
			return v, true
		}
		found = true
		if !v.Redirect {
			plain = true
		} else {
			l7 = l7.merge(v.L7)
		}
	}
	switch {
	case !found:
		return Value{}, false
	case plain:
		return Value{}, true
	}
	return Value{Redirect: true, L7: l7}, true
}

// Keys returns the keys in a stable order (by direction, identity, protocol, port).
func (m MapState) Keys() []Key {
	keys := make([]Key, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareKeys)
	return keys
}

func compareKeys(a, b Key) int {
	switch {
	case a.Direction != b.Direction:
		return int(a.Direction) - int(b.Direction)
	case a.Identity != b.Identity:
		return cmpInt(uint64(a.Identity), uint64(b.Identity))
	case a.Proto != b.Proto:
		return int(a.Proto) - int(b.Proto)
	case a.Port != b.Port:
		return int(a.Port) - int(b.Port)
	}
	return int(a.EndPort) - int(b.EndPort)
}

func cmpInt(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Clone returns an independent copy (values share their immutable L7 rules).
func (m MapState) Clone() MapState {
	out := make(MapState, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// EndpointDelta is how the MapState of one endpoint identity changed: apply Deletes, then Upserts.
type EndpointDelta struct {
	Identity identity.ID
	Upserts  map[Key]Value
	Deletes  []Key // sorted
}

// Apply applies the delta to m.
func (d EndpointDelta) Apply(m MapState) {
	for _, k := range d.Deletes {
		delete(m, k)
	}
	for k, v := range d.Upserts {
		m[k] = v
	}
}

func (d EndpointDelta) Empty() bool { return len(d.Upserts) == 0 && len(d.Deletes) == 0 }

// pendingDelta accumulates changes to one MapState between two reports.
type pendingDelta struct {
	upserts map[Key]Value
	deletes map[Key]struct{}
}

func (p *pendingDelta) upsert(k Key, v Value) {
	if p.upserts == nil {
		p.upserts = map[Key]Value{}
	}
	delete(p.deletes, k)
	p.upserts[k] = v
}

func (p *pendingDelta) remove(k Key) {
	if p.deletes == nil {
		p.deletes = map[Key]struct{}{}
	}
	delete(p.upserts, k)
	p.deletes[k] = struct{}{}
}

func (p *pendingDelta) take(id identity.ID) EndpointDelta {
	d := EndpointDelta{Identity: id, Upserts: p.upserts}
	for k := range p.deletes {
		d.Deletes = append(d.Deletes, k)
	}
	slices.SortFunc(d.Deletes, compareKeys)
	*p = pendingDelta{}
	return d
}

func (p *pendingDelta) empty() bool { return len(p.upserts) == 0 && len(p.deletes) == 0 }
