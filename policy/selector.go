package policy

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/policy/api"
)

type selectorKind uint8

const (
	// labelSelector matches identities by labels (endpoint selectors, entities).
	labelSelector selectorKind = iota
	// cidrSelector matches CIDR identities whose prefix lies inside cidr and outside every except,
	// and for a /0, the world identities of its family.
	cidrSelector
	// fqdnSelector's identities come from the DNS proxy (Engine.SetFQDNSelections), not labels.
	fqdnSelector
)

// selector is a compiled, immutable selector. Its key is canonical: two selectors that mean the
// same share one cache entry.
type selector struct {
	key    string
	kind   selectorKind
	reqs   []api.Requirement
	cidr   netip.Prefix
	except []netip.Prefix
	fqdn   api.FQDNSelector
}

func newLabelSelector(reqs []api.Requirement) *selector {
	reqs = slices.Clone(reqs)
	slices.SortFunc(reqs, compareRequirements)
	reqs = slices.CompactFunc(reqs, func(a, b api.Requirement) bool { return compareRequirements(a, b) == 0 })
	var b strings.Builder
	for i, r := range reqs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(r.Source + ":" + r.Key)
		switch r.Op {
		case api.OpIn:
			if len(r.Values) == 1 {
				b.WriteString("=" + r.Values[0])
				continue
			}
			b.WriteString(" in (" + strings.Join(r.Values, ",") + ")")
		case api.OpNotIn:
			b.WriteString(" notin (" + strings.Join(r.Values, ",") + ")")
		case api.OpExists:
			b.WriteString(" exists")
		case api.OpDoesNotExist:
			b.WriteString(" !exists")
		}
	}
	return &selector{key: "{" + b.String() + "}", kind: labelSelector, reqs: reqs}
}

func compareRequirements(a, b api.Requirement) int {
	if c := strings.Compare(a.Source, b.Source); c != 0 {
		return c
	}
	if c := strings.Compare(a.Key, b.Key); c != 0 {
		return c
	}
	if c := strings.Compare(a.Op, b.Op); c != 0 {
		return c
	}
	return slices.Compare(a.Values, b.Values)
}

func newCIDRSelector(cidr netip.Prefix, except []netip.Prefix) *selector {
	except = slices.Clone(except)
	slices.SortFunc(except, func(a, b netip.Prefix) int { return strings.Compare(a.String(), b.String()) })
	except = slices.Compact(except)
	key := "cidr:" + cidr.String()
	if len(except) > 0 {
		var ex []string
		for _, e := range except {
			ex = append(ex, e.String())
		}
		key += " except " + strings.Join(ex, ",")
	}
	return &selector{key: key, kind: cidrSelector, cidr: cidr, except: except}
}

func newFQDNSelector(f api.FQDNSelector) *selector {
	key := "fqdn:name=" + strings.ToLower(f.MatchName)
	if f.MatchPattern != "" {
		key = "fqdn:pattern=" + strings.ToLower(f.MatchPattern)
	}
	return &selector{key: key, kind: fqdnSelector, fqdn: f}
}

// and returns a selector matching what both label selectors match.
func (s *selector) and(o *selector) *selector {
	return newLabelSelector(append(slices.Clone(s.reqs), o.reqs...))
}

// namesKey reports whether a requirement of s is about key (any source).
func (s *selector) namesKey(key string) bool {
	return slices.ContainsFunc(s.reqs, func(r api.Requirement) bool { return r.Key == key })
}

// anchors returns the "key=value" index entries of a label selector: an identity can only match if
// it has one of them. Nil means the selector must be tried on every identity. The namespace and
// cluster labels are poor anchors (every endpoint of a namespace has them), so another In term is
// preferred.
func (s *selector) anchors() []string {
	best := -1
	for i, r := range s.reqs {
		if r.Op != api.OpIn {
			continue
		}
		if best < 0 || (isScopeKey(s.reqs[best].Key) && !isScopeKey(r.Key)) {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	r := s.reqs[best]
	out := make([]string, len(r.Values))
	for i, v := range r.Values {
		out[i] = anchor(r.Key, v)
	}
	return out
}

func isScopeKey(k string) bool { return k == identity.LabelNamespace || k == identity.LabelCluster }

func anchor(key, value string) string { return key + "=" + value }

// identityInfo is what the cache knows about an identity.
type identityInfo struct {
	labels identity.Labels
	prefix netip.Prefix // CIDR identities: the prefix of their cidr: label
	world  netip.Prefix // reserved world identities: the family's /0 they stand for
}

func newIdentityInfo(id identity.ID, lbls identity.Labels) *identityInfo {
	info := &identityInfo{labels: lbls}
	switch id {
	case identity.IDWorldIPv4:
		info.world = netip.MustParsePrefix("0.0.0.0/0")
	case identity.IDWorldIPv6:
		info.world = netip.MustParsePrefix("::/0")
	}
	for _, l := range lbls {
		if l.Source == identity.SourceCIDR {
			if p, err := netip.ParsePrefix(l.Key); err == nil {
				info.prefix = p.Masked()
			}
		}
	}
	return info
}

// matches reports whether the identity is selected. FQDN selectors never match by labels.
func (s *selector) matches(id identity.ID, info *identityInfo) bool {
	switch s.kind {
	case cidrSelector:
		if id == identity.IDWorld && s.cidr.Bits() == 0 {
			return true
		}
		p := info.prefix
		if !p.IsValid() {
			p = info.world
		}
		if !p.IsValid() || p.Addr().Is4() != s.cidr.Addr().Is4() || p.Bits() < s.cidr.Bits() || !s.cidr.Contains(p.Addr()) {
			return false
		}
		for _, e := range s.except {
			if p.Bits() >= e.Bits() && e.Contains(p.Addr()) {
				return false
			}
		}
		return true
	case fqdnSelector:
		return false
	}
	for _, r := range s.reqs {
		if !requirementHolds(r, info.labels) {
			return false
		}
	}
	return true
}

func requirementHolds(r api.Requirement, lbls identity.Labels) bool {
	exists, in := false, false
	for _, l := range lbls {
		if l.Key != r.Key || (r.Source != identity.SourceAny && r.Source != l.Source) {
			continue
		}
		exists = true
		if slices.Contains(r.Values, l.Value) {
			in = true
		}
	}
	switch r.Op {
	case api.OpIn:
		return in
	case api.OpNotIn:
		return !in
	case api.OpExists:
		return exists
	case api.OpDoesNotExist:
		return !exists
	}
	return false
}
