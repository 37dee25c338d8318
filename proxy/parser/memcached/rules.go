package memcached

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/palisade-mesh/palisade/proxy/parser"
)

// Command groups a rule's command may name, as in Cilium's memcached rules.
var groups = map[string][]string{
	"readGroup":  {"get", "gets", "gat", "gats"},
	"writeGroup": {"set", "add", "replace", "append", "prepend", "cas", "delete", "incr", "decr", "touch"},
}

var commands = []string{"get", "gets", "gat", "gats", "set", "add", "replace", "append", "prepend", "cas",
	"delete", "incr", "decr", "touch", "version", "stats", "flush_all", "verbosity", "quit"}

// Match is the rule semantics. Keys (all optional, all must hold):
//
//	command   a command (get, set, ...) or group (readGroup, writeGroup); "cmd" is an alias
//	keyExact  the key equals this
//	keyPrefix the key starts with this
//	keyRegex  a regular expression that must match the whole key
//
// A rule naming a key condition never matches a keyless command (stats, version, ...). A rule
// with an unknown key matches nothing.
func Match(rule, fields map[string]string) bool {
	key, hasKey := fields["key"]
	for k, v := range rule {
		switch k {
		case "command", "cmd":
			if g, ok := groups[v]; ok {
				if !slices.Contains(g, fields["cmd"]) {
					return false
				}
			} else if !strings.EqualFold(v, fields["cmd"]) {
				return false
			}
		case "keyExact":
			if !hasKey || key != v {
				return false
			}
		case "keyPrefix":
			if !hasKey || !strings.HasPrefix(key, v) {
				return false
			}
		case "keyRegex":
			if !hasKey || !parser.MatchAnchored(v, key) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// ValidateRule rejects unknown keys and commands and invalid regular expressions.
func ValidateRule(rule map[string]string) error {
	var errs []error
	for k, v := range rule {
		switch k {
		case "command", "cmd":
			if _, ok := groups[v]; !ok && !slices.Contains(commands, strings.ToLower(v)) {
				errs = append(errs, fmt.Errorf("memcached rule: unknown command %q", v))
			}
		case "keyExact", "keyPrefix":
		case "keyRegex":
			if _, err := parser.CompileAnchored(v); err != nil {
				errs = append(errs, fmt.Errorf("memcached rule: keyRegex %q: %w", v, err))
			}
		default:
			errs = append(errs, fmt.Errorf("memcached rule: unknown key %q (want command, keyExact, keyPrefix, keyRegex)", k))
		}
	}
	return errors.Join(errs...)
}
