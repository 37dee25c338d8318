package identity

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Keys of the identity allocator, relative to the kvstore prefix (DESIGN.md section 4).
const (
	// MasterPrefix holds identities/id/<id> -> {"labels": "<canonical labels>"}: the owner of an ID.
	MasterPrefix = "identities/id/"
	// ValuePrefix holds identities/value/<sha256(labels)> -> <id>: the ID of a label set.
	ValuePrefix = "identities/value/"
	// RefPrefix holds identities/refs/<id>/<node> -> {}, attached to the node's lease.
	RefPrefix = "identities/refs/"
)

func masterKey(id ID) string { return MasterPrefix + strconv.FormatUint(uint64(id), 10) }

func valueKey(digest string) string { return ValuePrefix + digest }

func refPrefix(id ID) string { return RefPrefix + strconv.FormatUint(uint64(id), 10) + "/" }

func refKey(id ID, node string) string { return refPrefix(id) + node }

// masterValue is the JSON stored under a master key.
type masterValue struct {
	Labels string `json:"labels"`
}

func encodeMaster(lbls Labels) []byte {
	// Marshalling a struct of one string cannot fail.
	b, _ := json.Marshal(masterValue{Labels: lbls.String()})
	return b
}

// decodeMaster parses a master key's value. The bytes come from etcd, which anyone with write
// access may have edited: every label is validated.
func decodeMaster(b []byte) (Labels, error) {
	var v masterValue
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("decode identity labels: %w", err)
	}
	lbls, err := ParseCanonical(v.Labels)
	if err != nil {
		return nil, fmt.Errorf("decode identity labels: %w", err)
	}
	if len(lbls) == 0 {
		return nil, fmt.Errorf("decode identity labels: empty label set")
	}
	return lbls, nil
}

func encodeValue(id ID) []byte { return []byte(strconv.FormatUint(uint64(id), 10)) }

func decodeValue(b []byte) (ID, error) {
	var n uint32
	if err := json.Unmarshal(b, &n); err != nil {
		return 0, fmt.Errorf("decode identity number %q: %w", b, err)
	}
	return ID(n), nil
}

// refValue is what a reference key holds; its presence is what counts.
var refValue = []byte("{}")

// parseMasterKey returns the ID in a key below MasterPrefix.
func parseMasterKey(key string) (ID, error) {
	s, ok := strings.CutPrefix(key, MasterPrefix)
	if !ok {
		return 0, fmt.Errorf("key %q is not below %s", key, MasterPrefix)
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("key %q: identity is not a number", key)
	}
	return ID(n), nil
}

// parseRefKey returns the ID and node of a key below RefPrefix.
func parseRefKey(key string) (ID, string, error) {
	s, ok := strings.CutPrefix(key, RefPrefix)
	if !ok {
		return 0, "", fmt.Errorf("key %q is not below %s", key, RefPrefix)
	}
	idPart, node, ok := strings.Cut(s, "/")
	if !ok || node == "" {
		return 0, "", fmt.Errorf("key %q: want %s<id>/<node>", key, RefPrefix)
	}
	n, err := strconv.ParseUint(idPart, 10, 32)
	if err != nil {
		return 0, "", fmt.Errorf("key %q: identity is not a number", key)
	}
	return ID(n), node, nil
}
