package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"
)

// DecodeOptions tune Decode. The zero value is ready to use.
type DecodeOptions struct {
	// DefaultNamespace is the namespace of a namespaced object that names none, as kubectl uses its
	// current namespace. Default "default".
	DefaultNamespace string
	// Name names a bare list of rules (the JSON `policy import` takes). Such rules are not confined
	// to a namespace, so they become a CiliumClusterwideNetworkPolicy. Default: the value of the
	// io.cilium.k8s.policy.name label of the first rule; without either the list is rejected.
	Name string
}

// LabelPolicyName is the rule label that names a bare list of rules.
const LabelPolicyName = "io.cilium.k8s.policy.name"

var supportedKinds = KindCiliumNetworkPolicy + ", " + KindCiliumClusterwideNetworkPolicy + ", " + KindNetworkPolicy

// document is one YAML document (or the whole JSON input) converted to JSON.
type document struct {
	number int // 1-based, for messages
	line   int
	json   []byte
}

func (d document) name() string { return fmt.Sprintf("document %d", d.number) }

// Decode parses and validates every policy in data. On any error it returns no policy: a file with
// one bad document imports nothing. The error is an ErrorList naming each problem's document and
// field path. Warnings are returned in both cases.
func Decode(data []byte, opts DecodeOptions) ([]*Policy, []Warning, error) {
	if opts.DefaultNamespace == "" {
		opts.DefaultNamespace = "default"
	}
	docs, err := splitDocuments(data)
	if err != nil {
		return nil, nil, ErrorList{err}
	}
	if len(docs) == 0 {
		return nil, nil, ErrorList{{Reason: "no policy found in the input"}}
	}
	var (
		policies []*Policy
		warnings []Warning
		errs     ErrorList
		seen     = map[Key]string{}
	)
	for _, doc := range docs {
		ps, r := decodeDocument(doc, opts)
		warnings = append(warnings, r.warnings...)
		errs = append(errs, r.errs...)
		for _, p := range ps {
			if prev, dup := seen[p.Key()]; dup {
				errs = append(errs, &FieldError{Document: p.Key().DocName(), Path: "metadata.name", Reason: fmt.Sprintf("%s %s is defined twice (also in %s)", p.Kind, p.Key().DocName(), prev)})
				continue
			}
			seen[p.Key()] = doc.name()
			policies = append(policies, p)
		}
	}
	if len(errs) > 0 {
		return nil, warnings, errs
	}
	return policies, warnings, nil
}

// splitDocuments reads JSON as one document and YAML as a stream of documents, each converted to
// JSON (duplicate keys rejected).
func splitDocuments(data []byte) ([]document, *FieldError) {
	trimmed := bytes.TrimLeft(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")), " \t\r\n")
	if len(trimmed) == 0 {
		return nil, nil
	}
	if trimmed[0] == '{' || trimmed[0] == '[' {
		if _, err := genericTree(trimmed); err == nil {
			return []document{{number: 1, line: 1, json: trimmed}}, nil
		} else if trimmed[0] == '[' || !looksLikeYAMLFlow(trimmed) {
			return nil, &FieldError{Reason: err.Error()}
		}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []document
	for n := 1; ; n++ {
		var node yaml.Node
		err := dec.Decode(&node)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, &FieldError{Document: fmt.Sprintf("document %d", n), Reason: fmt.Sprintf("invalid YAML: %v", strings.TrimPrefix(err.Error(), "yaml: "))}
		}
		if len(node.Content) == 0 || (node.Content[0].Kind == yaml.ScalarNode && node.Content[0].Tag == "!!null") {
			continue // an empty document, e.g. a leading or trailing "---"
		}
		// YAML 1.2 scalars (v3 decoding into any): "n" and "yes" stay strings, not booleans.
		var v any
		if err := node.Decode(&v); err != nil {
			return nil, &FieldError{Document: fmt.Sprintf("document %d (line %d)", n, node.Content[0].Line), Reason: fmt.Sprintf("invalid YAML: %v", strings.TrimPrefix(err.Error(), "yaml: "))}
		}
		js, err := json.Marshal(v)
		if err != nil {
			return nil, &FieldError{Document: fmt.Sprintf("document %d (line %d)", n, node.Content[0].Line), Reason: fmt.Sprintf("cannot be expressed as JSON: %v", err)}
		}
		docs = append(docs, document{number: n, line: node.Content[0].Line, json: js})
	}
}

// looksLikeYAMLFlow tells a YAML document that merely starts with '{' (a flow mapping followed by
// more YAML) from broken JSON, so that the JSON error is reported for the latter.
func looksLikeYAMLFlow(b []byte) bool {
	return bytes.Contains(b, []byte("\n---"))
}

func decodeDocument(doc document, opts DecodeOptions) ([]*Policy, *report) {
	r := &report{doc: doc.name()}
	tree, err := genericTree(doc.json)
	if err != nil {
		r.errorf("", "%v", err)
		return nil, r
	}
	switch t := tree.(type) {
	case map[string]any:
		if t["kind"] == "List" {
			return decodeList(doc, t, opts, r)
		}
		p, sub := decodeObject(doc.json, t, doc.name(), opts)
		mergeReport(r, sub)
		if p == nil {
			return nil, r
		}
		return []*Policy{p}, r
	case []any:
		return decodeArray(doc, t, opts, r)
	}
	r.errorf("", "expected a policy object or a list, got %s", describeValue(tree))
	return nil, r
}

func mergeReport(dst, src *report) {
	dst.errs = append(dst.errs, src.errs...)
	dst.warnings = append(dst.warnings, src.warnings...)
}

func decodeList(doc document, list map[string]any, opts DecodeOptions, r *report) ([]*Policy, *report) {
	for _, k := range sortedKeys(list) {
		switch k {
		case "apiVersion", "kind", "items", "metadata":
		default:
			r.errorf(k, "unknown field %q in a List (valid: apiVersion, items, kind, metadata)", k)
		}
	}
	items, ok := list["items"].([]any)
	if !ok {
		r.errorf("items", "a List needs items, a list of policy objects")
		return nil, r
	}
	var out []*Policy
	for i, it := range items {
		where := fmt.Sprintf("%s item %d", doc.name(), i)
		m, ok := it.(map[string]any)
		if !ok {
			r.errorf(index("items", i), "expected a policy object, got %s", describeValue(it))
			continue
		}
		raw, _ := json.Marshal(m)
		p, sub := decodeObject(raw, m, where, opts)
		mergeReport(r, sub)
		if p != nil {
			out = append(out, p)
		}
	}
	return out, r
}

// decodeArray handles a JSON/YAML array: policy objects, or a bare list of Cilium rules.
func decodeArray(doc document, arr []any, opts DecodeOptions, r *report) ([]*Policy, *report) {
	if len(arr) == 0 {
		r.errorf("", "empty list: no policy")
		return nil, r
	}
	objects := 0
	for _, e := range arr {
		if m, ok := e.(map[string]any); ok {
			if _, k := m["kind"]; k {
				objects++
			} else if _, v := m["apiVersion"]; v {
				objects++
			}
		}
	}
	switch objects {
	case len(arr):
		list := map[string]any{"kind": "List", "items": arr}
		return decodeList(doc, list, opts, r)
	case 0:
		p := decodeBareRules(doc, opts, r)
		if p == nil {
			return nil, r
		}
		return []*Policy{p}, r
	}
	r.errorf("", "a list must hold either policy objects (with apiVersion and kind) or bare rules, not both")
	return nil, r
}

func decodeBareRules(doc document, opts DecodeOptions, r *report) *Policy {
	var rules []Rule
	if !decodeStrict(doc.json, &rules, "", r) {
		return nil
	}
	name := opts.Name
	if name == "" {
		for _, l := range rules[0].Labels {
			if l.Key == LabelPolicyName {
				name = l.Value
			}
		}
	}
	if name != "" {
		r.doc = name
	}
	meta := ObjectMeta{Name: name}
	if name == "" {
		r.errorf("", "a bare list of rules needs a name: pass one (--name) or give the first rule the label %s", LabelPolicyName)
	} else {
		validateMeta(r, KindCiliumClusterwideNetworkPolicy, &meta, false)
	}
	for i := range rules {
		validateRule(r, index("", i), &rules[i])
	}
	if len(r.errs) > 0 {
		return nil
	}
	return &Policy{Kind: KindCiliumClusterwideNetworkPolicy, Name: name, Specs: rules}
}

// decodeObject decodes one Kubernetes-style object. where names it until its name is known.
func decodeObject(raw []byte, tree map[string]any, where string, opts DecodeOptions) (*Policy, *report) {
	r := &report{doc: objectName(tree, where)}
	kind, _ := tree["kind"].(string)
	apiVersion, _ := tree["apiVersion"].(string)
	wantVersion := APIVersionCilium
	switch kind {
	case KindCiliumNetworkPolicy, KindCiliumClusterwideNetworkPolicy:
	case KindNetworkPolicy:
		wantVersion = APIVersionNetworking
	case "":
		r.errorf("kind", "kind is required (valid: %s)", supportedKinds)
		return nil, r
	default:
		r.errorf("kind", "unsupported kind %q (valid: %s)", tree["kind"], supportedKinds)
		return nil, r
	}
	if apiVersion != wantVersion {
		r.errorf("apiVersion", "%s needs apiVersion %s, got %q", kind, wantVersion, tree["apiVersion"])
		return nil, r
	}
	namespaced := kind != KindCiliumClusterwideNetworkPolicy
	p := &Policy{Kind: kind}
	var meta *ObjectMeta
	if kind == KindNetworkPolicy {
		var w networkPolicyWire
		if !decodeStrict(raw, &w, "", r) {
			return nil, r
		}
		meta = &w.Metadata.ObjectMeta
		if w.Spec == nil {
			r.errorf("spec", "spec is required")
		} else {
			validateNetworkPolicy(r, w.Spec)
			p.NetworkPolicy = w.Spec
		}
	} else {
		var w ciliumPolicyWire
		if !decodeStrict(raw, &w, "", r) {
			return nil, r
		}
		meta = &w.Metadata.ObjectMeta
		if w.Spec == nil && len(w.Specs) == 0 {
			r.errorf("spec", "spec or specs is required")
		}
		if w.Spec != nil {
			validateRule(r, "spec", w.Spec)
		}
		for i := range w.Specs {
			validateRule(r, index("specs", i), &w.Specs[i])
		}
		p.Spec, p.Specs = w.Spec, w.Specs
	}
	if namespaced && meta.Namespace == "" {
		meta.Namespace = opts.DefaultNamespace
	}
	validateMeta(r, kind, meta, namespaced)
	if len(r.errs) > 0 {
		return nil, r
	}
	p.Name, p.Namespace, p.Labels, p.Annotations = meta.Name, meta.Namespace, meta.Labels, meta.Annotations
	return p, r
}

// objectName names an object in messages before it is decoded: "namespace/name" when it says so.
func objectName(tree map[string]any, fallback string) string {
	meta, _ := tree["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	if name == "" {
		return fallback
	}
	if ns, _ := meta["namespace"].(string); ns != "" && tree["kind"] != KindCiliumClusterwideNetworkPolicy {
		return ns + "/" + name
	}
	return name
}
