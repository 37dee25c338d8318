package monitor

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Type is the kind of an event; `palisade monitor --type` filters on it.
type Type string

const (
	TypeDrop   Type = "drop"   // a packet the datapath dropped
	TypePolicy Type = "policy" // a policy verdict on a new flow (allowed or denied)
	TypeL7     Type = "l7"     // one L7 request and its verdict (the access log)
	TypeTrace  Type = "trace"  // a forwarded packet, for debugging
	TypeAgent  Type = "agent"  // an agent notice: node state changes, policy applied, ...
)

// ParseType accepts a --type value.
func ParseType(s string) (Type, error) {
	switch t := Type(s); t {
	case TypeDrop, TypePolicy, TypeL7, TypeTrace, TypeAgent:
		return t, nil
	}
	return "", fmt.Errorf("unknown event type %q (valid: drop, policy, l7, trace, agent)", s)
}

// Verdict is what happened to a flow or request.
type Verdict string

const (
	VerdictAllowed    Verdict = "allowed"
	VerdictDenied     Verdict = "denied"
	VerdictRedirected Verdict = "redirected" // handed to the L7 proxy
	VerdictForwarded  Verdict = "forwarded"
)

// Peer is one side of a flow.
type Peer struct {
	Identity uint32         `json:"identity"`
	Endpoint uint16         `json:"endpoint,omitempty"`
	Addr     netip.AddrPort `json:"addr"`
	Labels   []string       `json:"labels,omitempty"`
	Cluster  string         `json:"cluster,omitempty"`
}

// L7 describes one request seen by the proxy.
type L7 struct {
	Protocol string        `json:"protocol"` // http, r2d2, memcached, ...
	Method   string        `json:"method,omitempty"`
	Host     string        `json:"host,omitempty"`
	Path     string        `json:"path,omitempty"`
	Status   int           `json:"status,omitempty"`
	Latency  time.Duration `json:"latency,omitempty"`
	// Fields holds protocol-specific request fields of generic parsers (e.g. cmd, file).
	Fields map[string]string `json:"fields,omitempty"`
}

// Event is one monitor event.
type Event struct {
	Time      time.Time `json:"time"`
	Node      string    `json:"node,omitempty"`
	Type      Type      `json:"type"`
	Verdict   Verdict   `json:"verdict,omitempty"`
	Reason    string    `json:"reason,omitempty"`    // why it was denied: "no policy", "deny rule", "no CT", ...
	Direction string    `json:"direction,omitempty"` // ingress or egress, seen from the enforcing endpoint
	Protocol  string    `json:"protocol,omitempty"`  // TCP, UDP, SCTP, ICMP
	Source    Peer      `json:"source"`
	Dest      Peer      `json:"destination"`
	L7        *L7       `json:"l7,omitempty"`
	Message   string    `json:"message,omitempty"` // agent notices
}

// String renders the event as one line for the text output of `palisade monitor`.
func (e Event) String() string {
	var b strings.Builder
	b.WriteString(e.Time.Format("15:04:05.000"))
	b.WriteByte(' ')
	switch e.Type {
	case TypeAgent:
		fmt.Fprintf(&b, "agent: %s", e.Message)
		return b.String()
	case TypeL7:
		fmt.Fprintf(&b, "l7 %s ", e.Verdict)
	default:
		fmt.Fprintf(&b, "%s %s ", e.Type, e.Verdict)
		if e.Reason != "" {
			fmt.Fprintf(&b, "(%s) ", e.Reason)
		}
	}
	fmt.Fprintf(&b, "%s -> %s", peerString(e.Source), peerString(e.Dest))
	if e.Protocol != "" {
		fmt.Fprintf(&b, " %s", e.Protocol)
	}
	if e.Direction != "" {
		fmt.Fprintf(&b, " %s", e.Direction)
	}
	if l := e.L7; l != nil {
		fmt.Fprintf(&b, " %s", l.Protocol)
		if l.Method != "" {
			fmt.Fprintf(&b, " %s", l.Method)
		}
		if l.Host != "" || l.Path != "" {
			fmt.Fprintf(&b, " %s%s", l.Host, l.Path)
		}
		for _, k := range sortedKeys(l.Fields) {
			fmt.Fprintf(&b, " %s=%s", k, l.Fields[k])
		}
		if l.Status != 0 {
			fmt.Fprintf(&b, " => %d", l.Status)
		}
		if l.Latency > 0 {
			fmt.Fprintf(&b, " (%s)", l.Latency.Round(time.Microsecond))
		}
	}
	return b.String()
}

func peerString(p Peer) string {
	s := fmt.Sprintf("identity %d", p.Identity)
	if p.Cluster != "" {
		s = p.Cluster + "/" + s
	}
	if p.Addr.IsValid() {
		s += " " + p.Addr.String()
	}
	if p.Endpoint != 0 {
		s += fmt.Sprintf(" (endpoint %d)", p.Endpoint)
	}
	return s
}
