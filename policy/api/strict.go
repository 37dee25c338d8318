package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Strict decoding: encoding/json with DisallowUnknownFields rejects unknown fields and wrong types
// but names neither the place (no indices) nor, for unknown fields, the object. So the generic tree
// is first checked against the Go type to report every problem with its field path, and only then
// decoded for real.

// unsupportedFields are Cilium fields Palisade knows but does not implement yet: rejecting them
// with a clear reason beats a bare "unknown field".
var unsupportedFields = map[string]string{
	"nodeSelector":      "node policies",
	"toServices":        "toServices",
	"toGroups":          "toGroups",
	"toNodes":           "toNodes",
	"fromNodes":         "fromNodes",
	"icmps":             "ICMP rules",
	"authentication":    "mutual authentication",
	"kafka":             "Kafka rules",
	"headerMatches":     "headerMatches (use headers)",
	"serverNames":       "TLS server names",
	"originatingTLS":    "TLS origination",
	"terminatingTLS":    "TLS termination",
	"listener":          "Envoy listeners",
	"cidrGroupRef":      "CIDR groups",
	"cidrGroupSelector": "CIDR groups",
	"log":               "policy logging",
}

var (
	rawMessageType  = reflect.TypeFor[json.RawMessage]()
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
)

// decodeStrict decodes raw into out, a pointer, reporting every unknown field or wrongly typed value
// under path.
func decodeStrict(raw []byte, out any, path string, r *report) bool {
	tree, err := genericTree(raw)
	if err != nil {
		r.errorf(path, "%v", err)
		return false
	}
	before := len(r.errs)
	checkTree(tree, reflect.TypeOf(out).Elem(), path, r)
	if len(r.errs) > before {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		r.errorf(path, "%v", err)
		return false
	}
	return true
}

func genericTree(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return nil, describeJSONError(raw, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("unexpected data after the JSON value")
	}
	return tree, nil
}

// describeJSONError turns a byte offset into a line and column.
func describeJSONError(raw []byte, err error) error {
	var offset int64 = -1
	switch e := err.(type) {
	case *json.SyntaxError:
		offset = e.Offset
	case *json.UnmarshalTypeError:
		offset = e.Offset
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("invalid JSON: unexpected end of input")
	}
	if offset < 0 || offset > int64(len(raw)) {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	line := 1 + bytes.Count(raw[:offset], []byte("\n"))
	col := int(offset) - (bytes.LastIndexByte(raw[:offset], '\n') + 1)
	return fmt.Errorf("invalid JSON at line %d, column %d: %w", line, col, err)
}

func checkTree(v any, t reflect.Type, path string, r *report) {
	if v == nil || t == rawMessageType || t.Kind() == reflect.Interface {
		return
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		b, _ := json.Marshal(v)
		if err := json.Unmarshal(b, reflect.New(t).Interface()); err != nil {
			r.errorf(path, "%v", err)
		}
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		checkTree(v, t.Elem(), path, r)
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			r.errorf(path, "expected an object, got %s", describeValue(v))
			return
		}
		fields := jsonFields(t)
		for _, k := range sortedKeys(m) {
			ft, ok := fields.byName[k]
			if !ok {
				r.errorf(field(path, k), "%s", unknownFieldReason(k, fields))
				continue
			}
			checkTree(m[k], ft, field(path, k), r)
		}
	case reflect.Slice:
		a, ok := v.([]any)
		if !ok {
			r.errorf(path, "expected a list, got %s", describeValue(v))
			return
		}
		for i, e := range a {
			checkTree(e, t.Elem(), index(path, i), r)
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			r.errorf(path, "expected an object, got %s", describeValue(v))
			return
		}
		for _, k := range sortedKeys(m) {
			checkTree(m[k], t.Elem(), mapKey(path, k), r)
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			reason := fmt.Sprintf("expected a string, got %s", describeValue(v))
			if n, ok := v.(json.Number); ok {
				reason += fmt.Sprintf(` (quote it: "%s")`, n)
			} else if b, ok := v.(bool); ok {
				reason += fmt.Sprintf(` (quote it: "%t")`, b)
			}
			r.errorf(path, "%s", reason)
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			r.errorf(path, "expected true or false, got %s", describeValue(v))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			r.errorf(path, "expected an integer, got %s", describeValue(v))
			return
		}
		if _, err := strconv.ParseInt(n.String(), 10, t.Bits()); err != nil {
			r.errorf(path, "expected an integer that fits %d bits, got %s", t.Bits(), n)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(json.Number)
		if !ok {
			r.errorf(path, "expected a non-negative integer, got %s", describeValue(v))
			return
		}
		if _, err := strconv.ParseUint(n.String(), 10, t.Bits()); err != nil {
			r.errorf(path, "expected a non-negative integer that fits %d bits, got %s", t.Bits(), n)
		}
	case reflect.Float32, reflect.Float64:
		if _, ok := v.(json.Number); !ok {
			r.errorf(path, "expected a number, got %s", describeValue(v))
		}
	default:
		r.errorf(path, "unsupported field type %s", t)
	}
}

func unknownFieldReason(k string, fields *structFields) string {
	for _, name := range fields.names {
		if strings.EqualFold(name, k) {
			return fmt.Sprintf("unknown field %q (did you mean %q?)", k, name)
		}
	}
	if what, ok := unsupportedFields[k]; ok {
		return fmt.Sprintf("field %q: %s are not supported by Palisade yet", k, what)
	}
	return fmt.Sprintf("unknown field %q (valid: %s)", k, strings.Join(fields.names, ", "))
}

func describeValue(v any) string {
	switch x := v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	case string:
		return fmt.Sprintf("string %q", x)
	case json.Number:
		return "number " + x.String()
	case bool:
		return fmt.Sprintf("boolean %t", x)
	}
	return fmt.Sprintf("%v", v)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

type structFields struct {
	byName map[string]reflect.Type
	names  []string // user-facing fields, sorted; fields only accepted for compatibility are left out
}

var fieldCache sync.Map // reflect.Type -> *structFields

func jsonFields(t reflect.Type) *structFields {
	if f, ok := fieldCache.Load(t); ok {
		return f.(*structFields)
	}
	f := &structFields{byName: map[string]reflect.Type{}}
	collectFields(t, f, true)
	slices.Sort(f.names)
	fieldCache.Store(t, f)
	return f
}

func collectFields(t reflect.Type, f *structFields, listed bool) {
	for i := range t.NumField() {
		sf := t.Field(i)
		if sf.Anonymous && sf.Type.Kind() == reflect.Struct {
			collectFields(sf.Type, f, true)
			continue
		}
		if !sf.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		f.byName[name] = sf.Type
		// Fields of the wire types that are only tolerated (status, server-side metadata) do not
		// appear in the list of valid fields of an error message.
		if listed && t.Name() != "objectMetaWire" && name != "status" {
			f.names = append(f.names, name)
		}
	}
}
