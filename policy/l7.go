package policy

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/palisade-mesh/palisade/policy/api"
)

// Parser names of L7Policy.
const (
	ParserHTTP = "http"
	ParserDNS  = "dns"
)

// L7Policy is what the proxy enforces on a redirected key: requests matching any rule pass, others
// are denied (HTTP 403, an injected error for generic parsers, REFUSED for DNS). Treat it as
// immutable: MapState values share it.
type L7Policy struct {
	// Parser is "http", "dns", or the l7proto name of a generic parser (e.g. "r2d2").
	Parser  string
	HTTP    []*HTTPRule
	DNS     []api.PortRuleDNS
	Generic []map[string]string
}

// HTTPRule is a compiled HTTP rule: Method, Path and Host are regular expressions that must match
// the whole value; every header must be present (with the given value, when one is given).
type HTTPRule struct {
	Method, Path, Host string
	Headers            []string

	method, path, host *regexp.Regexp
	headers            []headerMatch
}

type headerMatch struct {
	name, value string
	hasValue    bool
}

// HTTPRequest is the part of an HTTP request HTTP rules look at. Header names are case-insensitive.
type HTTPRequest struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Host    string            `json:"host,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
}

func compileHTTPRule(r api.PortRuleHTTP) (*HTTPRule, error) {
	h := &HTTPRule{Method: r.Method, Path: r.Path, Host: r.Host, Headers: slices.Clone(r.Headers)}
	var err error
	for _, f := range []struct {
		expr string
		dst  **regexp.Regexp
	}{{r.Method, &h.method}, {r.Path, &h.path}, {r.Host, &h.host}} {
		if f.expr == "" {
			continue
		}
		if *f.dst, err = api.AnchoredRegexp(f.expr); err != nil {
			return nil, fmt.Errorf("http rule %q: %w", f.expr, err)
		}
	}
	for _, hd := range r.Headers {
		name, value, hasValue, err := api.ParseHeader(hd)
		if err != nil {
			return nil, err
		}
		h.headers = append(h.headers, headerMatch{name: strings.ToLower(name), value: value, hasValue: hasValue})
	}
	return h, nil
}

// Matches reports whether the request satisfies the rule.
func (h *HTTPRule) Matches(req HTTPRequest) bool {
	if h.method != nil && !h.method.MatchString(req.Method) {
		return false
	}
	if h.path != nil && !h.path.MatchString(req.Path) {
		return false
	}
	if h.host != nil && !h.host.MatchString(req.Host) {
		return false
	}
	for _, want := range h.headers {
		got, ok := lookupHeader(req.Headers, want.name)
		if !ok || (want.hasValue && got != want.value) {
			return false
		}
	}
	return true
}

func lookupHeader(hs map[string]string, lowerName string) (string, bool) {
	for k, v := range hs {
		if strings.ToLower(k) == lowerName {
			return v, true
		}
	}
	return "", false
}

func (h *HTTPRule) String() string {
	var parts []string
	for _, f := range []struct{ name, v string }{{"method", h.Method}, {"path", h.Path}, {"host", h.Host}} {
		if f.v != "" {
			parts = append(parts, f.name+"="+f.v)
		}
	}
	for _, hd := range h.Headers {
		parts = append(parts, "header="+hd)
	}
	if len(parts) == 0 {
		return "{any request}"
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// L7Request is a request of a generic L7 protocol: the fields its parser extracted (for r2d2: cmd,
// file).
type L7Request struct {
	Proto  string            `json:"proto"`
	Fields map[string]string `json:"fields"`
}

// L7Matcher decides whether a generic L7 request satisfies one rule of its protocol. Parsers give
// their own (r2d2 treats "file" as a regular expression); the default requires every key of the
// rule to equal the request's field.
type L7Matcher func(rule map[string]string, req map[string]string) bool

func exactL7Match(rule, req map[string]string) bool {
	for k, v := range rule {
		if req[k] != v {
			return false
		}
	}
	return true
}

// Equal compares two L7 policies by content.
func (p *L7Policy) Equal(o *L7Policy) bool {
	if p == nil || o == nil {
		return p == o
	}
	if p.Parser != o.Parser || len(p.HTTP) != len(o.HTTP) || !slices.Equal(p.DNS, o.DNS) ||
		!slices.EqualFunc(p.Generic, o.Generic, maps.Equal) {
		return false
	}
	return slices.EqualFunc(p.HTTP, o.HTTP, sameHTTPRule)
}

func sameHTTPRule(a, b *HTTPRule) bool {
	return a.Method == b.Method && a.Path == b.Path && a.Host == b.Host && slices.Equal(a.Headers, b.Headers)
}

// merge returns the union of p and o (nil when both are). Rules of another parser than p's are
// left out: a port has one parser, and the first rule naming it wins.
func (p *L7Policy) merge(o *L7Policy) *L7Policy {
	if o == nil {
		return p
	}
	if p == nil {
		return o
	}
	if p.Parser != o.Parser {
		return p
	}
	out := &L7Policy{Parser: p.Parser, HTTP: slices.Clone(p.HTTP), DNS: slices.Clone(p.DNS), Generic: slices.Clone(p.Generic)}
	for _, h := range o.HTTP {
		if !slices.ContainsFunc(out.HTTP, func(x *HTTPRule) bool { return sameHTTPRule(x, h) }) {
			out.HTTP = append(out.HTTP, h)
		}
	}
	for _, d := range o.DNS {
		if !slices.Contains(out.DNS, d) {
			out.DNS = append(out.DNS, d)
		}
	}
	for _, g := range o.Generic {
		if !slices.ContainsFunc(out.Generic, func(x map[string]string) bool { return maps.Equal(x, g) }) {
			out.Generic = append(out.Generic, g)
		}
	}
	return out
}

func (p *L7Policy) String() string {
	if p == nil {
		return "<no L7 rules>"
	}
	var rules []string
	for _, h := range p.HTTP {
		rules = append(rules, h.String())
	}
	for _, d := range p.DNS {
		if d.MatchName != "" {
			rules = append(rules, "{name="+d.MatchName+"}")
		} else {
			rules = append(rules, "{pattern="+d.MatchPattern+"}")
		}
	}
	for _, g := range p.Generic {
		keys := slices.Sorted(maps.Keys(g))
		var kv []string
		for _, k := range keys {
			kv = append(kv, k+"="+g[k])
		}
		rules = append(rules, "{"+strings.Join(kv, " ")+"}")
	}
	return p.Parser + " " + strings.Join(rules, " ")
}

// compileL7 turns a port's rules into an L7Policy (nil when the port has none).
func compileL7(r *api.L7Rules) (*L7Policy, error) {
	if r == nil {
		return nil, nil
	}
	switch {
	case r.HTTP != nil:
		p := &L7Policy{Parser: ParserHTTP}
		for _, h := range r.HTTP {
			c, err := compileHTTPRule(h)
			if err != nil {
				return nil, err
			}
			p.HTTP = append(p.HTTP, c)
		}
		return p, nil
	case r.DNS != nil:
		return &L7Policy{Parser: ParserDNS, DNS: slices.Clone(r.DNS)}, nil
	case r.L7Proto != "":
		p := &L7Policy{Parser: r.L7Proto}
		for _, kv := range r.L7 {
			p.Generic = append(p.Generic, maps.Clone(kv))
		}
		return p, nil
	}
	return nil, fmt.Errorf("empty L7 rules")
}

// matchRequest returns the index of the first rule the request satisfies, or -1.
func (p *L7Policy) matchRequest(httpReq *HTTPRequest, l7Req *L7Request, matchers map[string]L7Matcher) int {
	switch {
	case p.Parser == ParserHTTP && httpReq != nil:
		for i, h := range p.HTTP {
			if h.Matches(*httpReq) {
				return i
			}
		}
	case l7Req != nil && l7Req.Proto == p.Parser:
		match := matchers[p.Parser]
		if match == nil {
			match = exactL7Match
		}
		for i, g := range p.Generic {
			if match(g, l7Req.Fields) {
				return i
			}
		}
	}
	return -1
}

// ruleField names a rule of the policy in trace output ("http[0]").
func (p *L7Policy) ruleField(i int) string {
	switch p.Parser {
	case ParserHTTP:
		return fmt.Sprintf("rules.http[%d]", i)
	case ParserDNS:
		return fmt.Sprintf("rules.dns[%d]", i)
	}
	return fmt.Sprintf("rules.l7[%d]", i)
}
