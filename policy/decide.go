package policy

import (
	"fmt"
	"strings"

	"github.com/palisade-mesh/palisade/identity"
)

// Verdict is the outcome of a flow.
type Verdict uint8

const (
	// Drop: no rule allows the flow at L3/L4, or a deny rule matches.
	Drop Verdict = iota
	// Allow: the flow passes (after the proxy's L7 check when it is redirected).
	Allow
	// DenyL7: the flow is allowed at L3/L4 but the proxy denies the request.
	DenyL7
)

// MarshalText writes the verdict's name.
func (v Verdict) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

func (v Verdict) String() string {
	switch v {
	case Allow:
		return "allow"
	case DenyL7:
		return "deny-l7"
	}
	return "drop"
}

// Flow is one connection attempt, optionally with its L7 request.
type Flow struct {
	Src   identity.ID  `json:"src"`
	Dst   identity.ID  `json:"dst"`
	Proto uint8        `json:"proto"`
	Port  uint16       `json:"port"`
	HTTP  *HTTPRequest `json:"http,omitempty"`
	L7    *L7Request   `json:"l7,omitempty"`
}

// Trace is the verdict of a flow and why: the egress policy of the source and the ingress policy of
// the destination, each with the rules that matched.
type Trace struct {
	Flow    Flow           `json:"flow"`
	Verdict Verdict        `json:"verdict"`
	Egress  DirectionTrace `json:"egress"`
	Ingress DirectionTrace `json:"ingress"`
}

// DirectionTrace explains one side.
type DirectionTrace struct {
	Endpoint  identity.ID `json:"endpoint"`
	Direction Direction   `json:"direction"`
	// Evaluated is false when the endpoint has no policy here (a reserved, CIDR or remote identity).
	Evaluated bool     `json:"evaluated"`
	Enforced  bool     `json:"enforced"`
	Verdict   Verdict  `json:"verdict"`
	Denied    []string `json:"denied,omitempty"`  // rules whose deny matched
	Allowed   []string `json:"allowed,omitempty"` // rules that allow at L3/L4 without L7 rules
	// Redirected lists the rules that allow with L7 rules; they decide when no plain allow matched.
	Redirected []string `json:"redirected,omitempty"`
	L7Matched  []string `json:"l7Matched,omitempty"` // L7 rules that accepted the request
	L7Checked  bool     `json:"l7Checked"`           // the request was checked against L7 rules
	Reason     string   `json:"reason"`
}

// Decide computes the verdict of a flow between two known identities as the datapath and proxy
// would, and explains it. Policies of endpoints that are not registered are computed on the fly.
func (e *Engine) Decide(f Flow) (Trace, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := Trace{Flow: f}
	for _, id := range []identity.ID{f.Src, f.Dst} {
		if _, ok := e.cache.Labels(id); !ok {
			return t, fmt.Errorf("decide flow %d -> %d: identity %d is unknown", f.Src, f.Dst, id)
		}
	}
	t.Egress = e.decideSide(f.Src, f.Dst, Egress, f)
	t.Ingress = e.decideSide(f.Dst, f.Src, Ingress, f)
	t.Verdict = Allow
	for _, side := range []DirectionTrace{t.Egress, t.Ingress} {
		if side.Verdict != Allow {
			t.Verdict = side.Verdict
			break
		}
	}
	return t, nil
}

// isLocalEndpoint reports whether id is an endpoint of this cluster, the only ones with policy here.
func (e *Engine) isLocalEndpoint(id identity.ID) bool {
	lbls, ok := e.cache.Labels(id)
	if !ok {
		return false
	}
	for _, l := range lbls {
		if l.Source == identity.SourceReserved || l.Source == identity.SourceCIDR {
			return false
		}
	}
	cluster, named := lbls.Lookup(identity.SourceAny, identity.LabelCluster)
	return !named || cluster == e.opts.ClusterName
}

func (e *Engine) decideSide(self, peer identity.ID, dir Direction, f Flow) DirectionTrace {
	dt := DirectionTrace{Endpoint: self, Direction: dir, Verdict: Allow}
	if !e.isLocalEndpoint(self) {
		dt.Reason = fmt.Sprintf("identity %s is not a local endpoint: no %s policy applies here", self, dir)
		return dt
	}
	dt.Evaluated = true
	ep := e.endpointFor(self)
	dt.Enforced = ep.enforced[dir]
	e.cache.mu.RLock()
	var allowL7 []*contribution
	for _, c := range ep.contribs {
		if c.dir != dir || !c.matchesPort(f.Proto, f.Port) || (c.cs != nil && !c.cs.selects(peer)) {
			continue
		}
		switch {
		case c.deny:
			dt.Denied = append(dt.Denied, c.origin)
		case c.l7 == nil:
			dt.Allowed = append(dt.Allowed, c.origin)
		default:
			dt.Redirected = append(dt.Redirected, c.origin)
			allowL7 = append(allowL7, c)
		}
	}
	e.cache.mu.RUnlock()
	if _, registered := e.endpoints[self]; !registered {
		ep.detach(e.cache)
	}
	switch {
	case len(dt.Denied) > 0:
		dt.Verdict = Drop
		dt.Reason = "denied by a deny rule"
	case len(dt.Allowed) > 0:
		dt.Reason = "allowed at L3/L4"
		if len(dt.Redirected) > 0 {
			dt.Reason += "; L7 rules on this port do not restrict it because a rule without L7 rules also allows it"
		}
	case len(dt.Redirected) > 0:
		dt.Reason = "allowed at L3/L4 and redirected to the L7 proxy"
		if f.HTTP == nil && f.L7 == nil {
			dt.Reason += " (no request given: L7 rules not checked)"
			break
		}
		dt.L7Checked = true
		for _, c := range allowL7 {
			if i := c.l7.matchRequest(f.HTTP, f.L7, e.opts.L7Matchers); i >= 0 {
				dt.L7Matched = append(dt.L7Matched, fmt.Sprintf("%s, %s", c.origin, c.l7.ruleField(i)))
			}
		}
		if len(dt.L7Matched) == 0 {
			dt.Verdict = DenyL7
			dt.Reason = "allowed at L3/L4 but no L7 rule matches the request: the proxy denies it"
		}
	default:
		dt.Verdict = Drop
		dt.Reason = fmt.Sprintf("no rule allows it (%s default-deny)", dir)
	}
	return dt
}

// endpointFor returns the registered policy of id or computes a temporary one (the caller detaches
// it).
func (e *Engine) endpointFor(id identity.ID) *endpointPolicy {
	if reg, ok := e.endpoints[id]; ok {
		return reg.ep
	}
	return computeEndpoint(e.cache, e.rules, id)
}

// String renders the trace for people, like `cilium policy trace`.
func (t Trace) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Tracing identity %s => identity %s, %d/%s", t.Flow.Src, t.Flow.Dst, t.Flow.Port, ProtoName(t.Flow.Proto))
	if h := t.Flow.HTTP; h != nil {
		fmt.Fprintf(&b, ", HTTP %s %s", h.Method, h.Path)
		if h.Host != "" {
			fmt.Fprintf(&b, " (host %s)", h.Host)
		}
	}
	if r := t.Flow.L7; r != nil {
		fmt.Fprintf(&b, ", %s %v", r.Proto, r.Fields)
	}
	b.WriteString("\n")
	for _, side := range []DirectionTrace{t.Egress, t.Ingress} {
		fmt.Fprintf(&b, "\n%s of identity %s:\n", titleCase(side.Direction.String()), side.Endpoint)
		if !side.Evaluated {
			fmt.Fprintf(&b, "  %s\n", side.Reason)
			continue
		}
		if side.Enforced {
			fmt.Fprintf(&b, "  default-deny: yes\n")
		} else {
			fmt.Fprintf(&b, "  default-deny: no (no rule selecting it has %s rules)\n", side.Direction)
		}
		for _, o := range side.Denied {
			fmt.Fprintf(&b, "  denied by %s\n", o)
		}
		for _, o := range side.Allowed {
			fmt.Fprintf(&b, "  allowed by %s\n", o)
		}
		for _, o := range side.Redirected {
			fmt.Fprintf(&b, "  allowed with L7 rules by %s\n", o)
		}
		for _, o := range side.L7Matched {
			fmt.Fprintf(&b, "  request accepted by %s\n", o)
		}
		fmt.Fprintf(&b, "  => %s: %s\n", side.Verdict, side.Reason)
	}
	fmt.Fprintf(&b, "\nFinal verdict: %s\n", strings.ToUpper(t.Verdict.String()))
	return b.String()
}

func titleCase(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
