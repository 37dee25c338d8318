package identity

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
)

// Label sources.
const (
	SourceK8s       = "k8s"
	SourceReserved  = "reserved"
	SourceCIDR      = "cidr"
	SourceContainer = "container"
	SourceUnspec    = "unspec"
	// SourceAny is only valid in selectors: a bare key matches a label of any source.
	SourceAny = "any"
)

var knownSources = []string{SourceK8s, SourceReserved, SourceCIDR, SourceContainer, SourceUnspec}

// Well-known label keys every endpoint carries.
const (
	LabelNamespace       = "io.kubernetes.pod.namespace"
	LabelCluster         = "io.cilium.k8s.policy.cluster"
	LabelServiceAccount  = "io.cilium.k8s.policy.serviceaccount"
	NamespaceLabelPrefix = "io.cilium.k8s.namespace.labels."
)

const (
	maxKeyLen   = 317 // a DNS-subdomain prefix (253) + '/' + name (63)
	maxValueLen = 63
)

// Label is one source:key=value label. Reserved labels have an empty value.
type Label struct {
	Source string
	Key    string
	Value  string
}

// String returns "source:key=value" ("source:key" when the value is empty).
func (l Label) String() string {
	if l.Value == "" {
		return l.Source + ":" + l.Key
	}
	return l.Source + ":" + l.Key + "=" + l.Value
}

// Matches reports whether l, used as a selector, matches the label other: sources must be equal
// unless l's source is SourceAny.
func (l Label) Matches(other Label) bool {
	return l.Key == other.Key && l.Value == other.Value &&
		(l.Source == SourceAny || l.Source == other.Source)
}

// ParseLabel parses "source:key=value", "key=value" (source unspec), "source:key" or "key".
func ParseLabel(s string) (Label, error) {
	return parseLabel(s, SourceUnspec)
}

// ParseSelectLabel parses a label used in a selector: a bare key gets SourceAny.
func ParseSelectLabel(s string) (Label, error) {
	return parseLabel(s, SourceAny)
}

func parseLabel(s, defaultSource string) (Label, error) {
	if s == "" {
		return Label{}, fmt.Errorf("empty label")
	}
	l := Label{Source: defaultSource}
	rest := s
	// The source is everything before the first ':' that precedes any '='; CIDR keys such as
	// "cidr:2001:db8::/32" contain more colons, which belong to the key.
	if i := strings.IndexByte(rest, ':'); i >= 0 {
		if eq := strings.IndexByte(rest, '='); eq < 0 || i < eq {
			l.Source, rest = rest[:i], rest[i+1:]
		}
	}
	if k, v, ok := strings.Cut(rest, "="); ok {
		l.Key, l.Value = k, v
	} else {
		l.Key = rest
	}
	if err := l.Validate(); err != nil {
		return Label{}, fmt.Errorf("label %q: %w", s, err)
	}
	return l, nil
}

// Validate checks the source, key and value of a label.
func (l Label) Validate() error {
	if l.Source != SourceAny && !slices.Contains(knownSources, l.Source) {
		return fmt.Errorf("unknown source %q (valid: %s)", l.Source, strings.Join(knownSources, ", "))
	}
	if l.Key == "" {
		return fmt.Errorf("empty key")
	}
	if len(l.Key) > maxKeyLen {
		return fmt.Errorf("key is %d characters long (at most %d)", len(l.Key), maxKeyLen)
	}
	for i, r := range l.Key {
		if !keyRune(r, l.Source == SourceCIDR) {
			return fmt.Errorf("key %q: character %q at %d is not allowed", l.Key, r, i)
		}
	}
	if len(l.Value) > maxValueLen {
		return fmt.Errorf("value is %d characters long (at most %d)", len(l.Value), maxValueLen)
	}
	for i, r := range l.Value {
		if !valueRune(r) {
			return fmt.Errorf("value %q: character %q at %d is not allowed", l.Value, r, i)
		}
	}
	return nil
}

func keyRune(r rune, cidr bool) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	case r == '.', r == '-', r == '_', r == '/':
		return true
	case r == ':':
		return cidr
	}
	return false
}

func valueRune(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	case r == '.', r == '-', r == '_':
		return true
	}
	return false
}

// Labels is a set of labels in canonical order (sorted by source, key, value, no duplicates). Build
// it with NewLabels or ParseLabels; treat it as immutable.
type Labels []Label

// NewLabels returns the labels in canonical order with duplicates removed. At most one label per
// source and key is kept: a later one replaces an earlier one.
func NewLabels(ls ...Label) Labels {
	out := make(Labels, 0, len(ls))
	for _, l := range ls {
		if i := slices.IndexFunc(out, func(o Label) bool { return o.Source == l.Source && o.Key == l.Key }); i >= 0 {
			out[i] = l
			continue
		}
		out = append(out, l)
	}
	slices.SortFunc(out, compareLabels)
	return out
}

func compareLabels(a, b Label) int {
	if c := strings.Compare(a.Source, b.Source); c != 0 {
		return c
	}
	if c := strings.Compare(a.Key, b.Key); c != 0 {
		return c
	}
	return strings.Compare(a.Value, b.Value)
}

// ParseLabels parses each string with ParseLabel.
func ParseLabels(ss ...string) (Labels, error) {
	ls := make([]Label, 0, len(ss))
	for _, s := range ss {
		l, err := ParseLabel(s)
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
	}
	return NewLabels(ls...), nil
}

// ParseCanonical parses the ';'-joined canonical form produced by String.
func ParseCanonical(s string) (Labels, error) {
	if s == "" {
		return Labels{}, nil
	}
	return ParseLabels(strings.Split(s, ";")...)
}

// FromMap converts Kubernetes-style key/value labels of one source.
func FromMap(source string, m map[string]string) (Labels, error) {
	ls := make([]Label, 0, len(m))
	for k, v := range m {
		l := Label{Source: source, Key: k, Value: v}
		if err := l.Validate(); err != nil {
			return nil, fmt.Errorf("label %s: %w", l, err)
		}
		ls = append(ls, l)
	}
	return NewLabels(ls...), nil
}

// String returns the canonical form: labels sorted and joined with ';'.
func (ls Labels) String() string {
	var b strings.Builder
	for i, l := range ls {
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteString(l.String())
	}
	return b.String()
}

// Digest is the hex SHA-256 of the canonical form, used as the identity value key in etcd.
func (ls Labels) Digest() string {
	sum := sha256.Sum256([]byte(ls.String()))
	return hex.EncodeToString(sum[:])
}

// Equal reports whether both sets hold the same labels.
func (ls Labels) Equal(other Labels) bool {
	return slices.Equal(ls, other)
}

// Has reports whether any label matches sel (see Label.Matches).
func (ls Labels) Has(sel Label) bool {
	return slices.ContainsFunc(ls, sel.Matches)
}

// Lookup returns the value of key. A selector source of SourceAny matches any source.
func (ls Labels) Lookup(source, key string) (string, bool) {
	for _, l := range ls {
		if l.Key == key && (source == SourceAny || l.Source == source) {
			return l.Value, true
		}
	}
	return "", false
}

// Merge returns the union; labels of other win on the same source and key.
func (ls Labels) Merge(other Labels) Labels {
	return NewLabels(append(slices.Clone(ls), other...)...)
}

// EndpointLabels builds the identity labels of a workload: its own k8s labels plus the namespace,
// its namespace's labels and the cluster, which always take part in the identity so that equal
// pods in different namespaces or clusters never share an identity.
func EndpointLabels(podLabels map[string]string, namespace string, namespaceLabels map[string]string, cluster string) (Labels, error) {
	if namespace == "" {
		return nil, fmt.Errorf("endpoint labels: empty namespace")
	}
	if cluster == "" {
		return nil, fmt.Errorf("endpoint labels: empty cluster name")
	}
	m := make(map[string]string, len(podLabels)+len(namespaceLabels)+2)
	for k, v := range podLabels {
		m[k] = v
	}
	for k, v := range namespaceLabels {
		m[NamespaceLabelPrefix+k] = v
	}
	m[LabelNamespace] = namespace
	m[LabelCluster] = cluster
	ls, err := FromMap(SourceK8s, m)
	if err != nil {
		return nil, fmt.Errorf("endpoint labels in %s/%s: %w", cluster, namespace, err)
	}
	return ls, nil
}
