package api

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/palisade-mesh/palisade/identity"
)

// Requirement is one term of a compiled selector: a label (of Source, or any source when Source is
// identity.SourceAny) whose key and value satisfy Op.
type Requirement struct {
	Source string
	Key    string
	Op     string
	Values []string // sorted, without duplicates; empty for Exists and DoesNotExist
}

// Requirements compiles the selector. matchLabels become In terms.
func (s *EndpointSelector) Requirements() ([]Requirement, error) {
	r := &report{}
	reqs := parseSelector(r, "", s.MatchLabels, s.MatchExpressions, false)
	if len(r.errs) > 0 {
		return nil, r.errs
	}
	return reqs, nil
}

func parseSelector(r *report, path string, matchLabels map[string]string, exprs []LabelSelectorRequirement, plainKeys bool) []Requirement {
	var reqs []Requirement
	keys := make([]string, 0, len(matchLabels))
	for k := range matchLabels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		p := mapKey(field(path, "matchLabels"), k)
		src, key, ok := parseSelectorKey(r, p, k, plainKeys)
		if !ok {
			continue
		}
		if err := (identity.Label{Source: src, Key: key, Value: matchLabels[k]}).Validate(); err != nil {
			r.errorf(p, "%v", err)
			continue
		}
		reqs = append(reqs, Requirement{Source: src, Key: key, Op: OpIn, Values: []string{matchLabels[k]}})
	}
	for i, e := range exprs {
		p := index(field(path, "matchExpressions"), i)
		src, key, ok := parseSelectorKey(r, field(p, "key"), e.Key, plainKeys)
		if !ok {
			continue
		}
		switch e.Operator {
		case OpIn, OpNotIn:
			if len(e.Values) == 0 {
				r.errorf(field(p, "values"), "operator %s needs at least one value", e.Operator)
				continue
			}
		case OpExists, OpDoesNotExist:
			if len(e.Values) > 0 {
				r.errorf(field(p, "values"), "operator %s takes no values", e.Operator)
				continue
			}
		case "":
			r.errorf(field(p, "operator"), "operator is required (valid: In, NotIn, Exists, DoesNotExist)")
			continue
		default:
			r.errorf(field(p, "operator"), "unknown operator %q (valid: In, NotIn, Exists, DoesNotExist)", e.Operator)
			continue
		}
		bad := false
		for j, v := range e.Values {
			if err := (identity.Label{Source: src, Key: key, Value: v}).Validate(); err != nil {
				r.errorf(index(field(p, "values"), j), "%v", err)
				bad = true
			}
		}
		if bad {
			continue
		}
		vals := slices.Clone(e.Values)
		slices.Sort(vals)
		reqs = append(reqs, Requirement{Source: src, Key: key, Op: e.Operator, Values: slices.Compact(vals)})
	}
	return reqs
}

// parseSelectorKey splits "source:key" ("key" alone means any source). Kubernetes selectors
// (plainKeys) carry no source: their keys are k8s labels.
func parseSelectorKey(r *report, path, k string, plainKeys bool) (source, key string, ok bool) {
	if k == "" {
		r.errorf(path, "empty label key")
		return "", "", false
	}
	if strings.Contains(k, "=") {
		r.errorf(path, "label key %q must not contain '='", k)
		return "", "", false
	}
	if plainKeys {
		if strings.Contains(k, ":") {
			r.errorf(path, "label key %q: Kubernetes label keys carry no source prefix", k)
			return "", "", false
		}
		if err := (identity.Label{Source: identity.SourceK8s, Key: k}).Validate(); err != nil {
			r.errorf(path, "%v", err)
			return "", "", false
		}
		return identity.SourceK8s, k, true
	}
	l, err := identity.ParseSelectLabel(k)
	if err != nil {
		r.errorf(path, "%v", err)
		return "", "", false
	}
	return l.Source, l.Key, true
}

// PortRange is a validated port or port range and protocol.
type PortRange struct {
	Proto   string // TCP, UDP, SCTP or ANY
	Port    uint16 // 0: every port
	EndPort uint16 // last port; equals Port for a single port, 0 with Port 0
}

// Parse validates the port and protocol.
func (pp PortProtocol) Parse() (PortRange, error) {
	r := &report{}
	pr, ok := parsePortProtocol(r, "", pp)
	if !ok {
		return PortRange{}, r.errs
	}
	return pr, nil
}

var serviceName = lazyRegexp(`^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$`)

func parsePortProtocol(r *report, path string, pp PortProtocol) (PortRange, bool) {
	proto, ok := parseProtocol(r, field(path, "protocol"), pp.Protocol, true)
	if !ok {
		return PortRange{}, false
	}
	port, ok := parsePortNumber(r, field(path, "port"), pp.Port)
	if !ok {
		return PortRange{}, false
	}
	return portRange(r, path, proto, port, pp.EndPort)
}

func parsePortNumber(r *report, path, s string) (uint16, bool) {
	if s == "" {
		r.errorf(path, `port is required (use "0" for every port)`)
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err == nil {
		return uint16(n), true
	}
	if serviceName().MatchString(s) && strings.ContainsAny(s, "abcdefghijklmnopqrstuvwxyz") {
		r.errorf(path, "named port %q: named ports are not supported yet; use the port number", s)
		return 0, false
	}
	r.errorf(path, "invalid port %q: must be a number from 0 to 65535", s)
	return 0, false
}

func portRange(r *report, path, proto string, port uint16, endPort int32) (PortRange, bool) {
	pr := PortRange{Proto: proto, Port: port, EndPort: port}
	if endPort != 0 {
		switch {
		case port == 0:
			r.errorf(field(path, "endPort"), "endPort needs a port")
			return PortRange{}, false
		case endPort < int32(port) || endPort > 65535:
			r.errorf(field(path, "endPort"), "endPort %d must be between port %d and 65535", endPort, port)
			return PortRange{}, false
		}
		pr.EndPort = uint16(endPort)
	}
	return pr, true
}

func parseProtocol(r *report, path, p string, anyAllowed bool) (string, bool) {
	switch p {
	case ProtoTCP, ProtoUDP, ProtoSCTP:
		return p, true
	case ProtoAny:
		if anyAllowed {
			return p, true
		}
	case "":
		if anyAllowed {
			return ProtoAny, true
		}
		return ProtoTCP, true
	}
	valid := "TCP, UDP, SCTP"
	if anyAllowed {
		valid += ", ANY"
	}
	if up := strings.ToUpper(p); up != p && strings.Contains(valid, up) {
		r.errorf(path, "unknown protocol %q (protocols are upper case: %q)", p, up)
		return "", false
	}
	r.errorf(path, "unknown protocol %q (valid: %s)", p, valid)
	return "", false
}

// ParseCIDR accepts a prefix or a single address (a host prefix) and returns it with the host bits
// cleared.
func ParseCIDR(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
	}
	return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: want an address prefix such as 10.0.0.0/8 or 2001:db8::/32", s)
}

func parseCIDR(r *report, path, s string) (netip.Prefix, bool) {
	p, err := ParseCIDR(s)
	if err != nil {
		r.errorf(path, "%v", err)
		return netip.Prefix{}, false
	}
	if full, err := netip.ParsePrefix(s); err == nil && full.Addr() != p.Addr() {
		r.warnf(path, "%s has host bits set; it means %s", s, p)
	}
	return p, true
}

func validateCIDRSet(r *report, path, cidr string, except []string) {
	p, ok := parseCIDR(r, field(path, "cidr"), cidr)
	if !ok {
		return
	}
	for i, e := range except {
		ep, ok := parseCIDR(r, index(field(path, "except"), i), e)
		if !ok {
			continue
		}
		if ep.Addr().Is4() != p.Addr().Is4() || ep.Bits() < p.Bits() || !p.Contains(ep.Addr()) {
			r.errorf(index(field(path, "except"), i), "except %s is not inside %s", ep, p)
		}
	}
}

// AnchoredRegexp compiles an HTTP rule field the way Cilium matches it: the whole value must match.
func AnchoredRegexp(expr string) (*regexp.Regexp, error) {
	return regexp.Compile(`^(?:` + expr + `)$`)
}

var (
	dnsName    = lazyRegexp(`^[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,62})(\.[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,62}))*\.?$`)
	dnsPattern = lazyRegexp(`^[a-zA-Z0-9_*]([a-zA-Z0-9_*-]{0,62})(\.[a-zA-Z0-9_*]([a-zA-Z0-9_*-]{0,62}))*\.?$`)
)

func validateFQDN(r *report, path, name, pattern string) {
	switch {
	case name != "" && pattern != "":
		r.errorf(path, "set matchName or matchPattern, not both")
	case name == "" && pattern == "":
		r.errorf(path, "matchName or matchPattern is required")
	case name != "":
		if _, err := netip.ParseAddr(name); err == nil {
			r.warnf(field(path, "matchName"), "%q is an IP address, which no DNS answer will ever match; use toCIDR: [\"%s\"] instead", name, hostPrefix(name))
			return
		}
		if len(name) > 253 || !dnsName().MatchString(name) {
			r.errorf(field(path, "matchName"), "invalid DNS name %q", name)
		}
	default:
		if len(pattern) > 253 || !dnsPattern().MatchString(pattern) {
			r.errorf(field(path, "matchPattern"), "invalid DNS pattern %q: letters, digits, '-', '_', '.' and '*' only", pattern)
		}
	}
}

func hostPrefix(ip string) string {
	a, _ := netip.ParseAddr(ip)
	return netip.PrefixFrom(a, a.BitLen()).String()
}

var headerName = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// ParseHeader splits an HTTP rule header "Name" or "Name: value".
func ParseHeader(h string) (name, value string, hasValue bool, err error) {
	name, value, hasValue = strings.Cut(h, ":")
	name = strings.TrimSpace(name)
	value = strings.TrimSpace(value)
	if !headerName.MatchString(name) {
		return "", "", false, fmt.Errorf("invalid header %q: want \"Name\" or \"Name: value\"", h)
	}
	return name, value, hasValue, nil
}

// lazyRegexp compiles expr on first use: a bounded repetition such as {0,62} compiles into many
// states, and compiling at package initialisation would slow the start of every CLI command.
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}
