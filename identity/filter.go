package identity

import (
	"fmt"
	"regexp"
	"strings"
)

// DefaultExcludedKeys are label keys that change per pod or per rollout; letting them into an
// identity would give every replica its own identity and exhaust the identity space under churn.
var DefaultExcludedKeys = []string{
	`pod-template-hash`,
	`pod-template-generation`,
	`controller-revision-hash`,
	`controller-uid`,
	`job-name`,
	`batch\.kubernetes\.io/(job-name|controller-uid|job-completion-index)`,
	`statefulset\.kubernetes\.io/pod-name`,
	`apps\.kubernetes\.io/pod-index`,
	`annotation\..*`,
}

// Filter keeps the security-relevant labels of a workload.
//
// Patterns are regular expressions that must match a whole label key, or "source:key" when the
// pattern contains a ':' (e.g. `k8s:app.*`). A pattern starting with '!' excludes. When any
// including pattern is given, only labels matching one of them are kept. User patterns take
// precedence over DefaultExcludedKeys. The namespace, cluster and service-account labels, namespace
// labels and reserved/cidr labels are always kept: policies depend on them.
type Filter struct {
	include []labelPattern
	exclude []labelPattern
	noisy   []labelPattern
}

type labelPattern struct {
	re         *regexp.Regexp
	withSource bool
}

func (p labelPattern) match(l Label) bool {
	if p.withSource {
		return p.re.MatchString(l.Source + ":" + l.Key)
	}
	return p.re.MatchString(l.Key)
}

func compilePattern(expr string) (labelPattern, error) {
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		return labelPattern{}, err
	}
	return labelPattern{re: re, withSource: strings.Contains(expr, ":")}, nil
}

// NewFilter compiles user patterns on top of the default exclusions.
func NewFilter(patterns []string) (*Filter, error) {
	f := &Filter{}
	for _, expr := range DefaultExcludedKeys {
		p, err := compilePattern(expr)
		if err != nil {
			return nil, fmt.Errorf("default label pattern %q: %w", expr, err)
		}
		f.noisy = append(f.noisy, p)
	}
	for i, expr := range patterns {
		exclude := strings.HasPrefix(expr, "!")
		body := strings.TrimPrefix(expr, "!")
		if body == "" {
			return nil, fmt.Errorf("label pattern %d: empty pattern", i)
		}
		p, err := compilePattern(body)
		if err != nil {
			return nil, fmt.Errorf("label pattern %d %q: %w", i, expr, err)
		}
		if exclude {
			f.exclude = append(f.exclude, p)
		} else {
			f.include = append(f.include, p)
		}
	}
	return f, nil
}

// Relevant returns the labels of ls that take part in an identity.
func (f *Filter) Relevant(ls Labels) Labels {
	out := make(Labels, 0, len(ls))
	for _, l := range ls {
		if f.keep(l) {
			out = append(out, l)
		}
	}
	return out
}

func (f *Filter) keep(l Label) bool {
	if alwaysRelevant(l) {
		return true
	}
	for _, p := range f.exclude {
		if p.match(l) {
			return false
		}
	}
	if len(f.include) > 0 {
		for _, p := range f.include {
			if p.match(l) {
				return true
			}
		}
		return false
	}
	for _, p := range f.noisy {
		if p.match(l) {
			return false
		}
	}
	return true
}

func alwaysRelevant(l Label) bool {
	switch l.Source {
	case SourceReserved, SourceCIDR:
		return true
	}
	switch l.Key {
	case LabelNamespace, LabelCluster, LabelServiceAccount:
		return true
	}
	return strings.HasPrefix(l.Key, NamespaceLabelPrefix)
}
