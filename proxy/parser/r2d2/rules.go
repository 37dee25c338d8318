package r2d2

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/palisade-mesh/palisade/proxy/parser"
)

// Match is the rule semantics: cmd equal (case-insensitive), file a regular expression that must
// match the whole name. A rule without keys matches every request; a rule with a key this parser
// does not know matches nothing.
func Match(rule, fields map[string]string) bool {
	for k, v := range rule {
		switch k {
		case "cmd":
			if !strings.EqualFold(v, fields["cmd"]) {
				return false
			}
		case "file":
			f, ok := fields["file"]
			if !ok || !parser.MatchAnchored(v, f) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// ValidateRule rejects unknown keys, unknown commands and invalid file expressions.
func ValidateRule(rule map[string]string) error {
	var errs []error
	for k, v := range rule {
		switch k {
		case "cmd":
			if !slices.Contains(commands, strings.ToUpper(v)) {
				errs = append(errs, fmt.Errorf("r2d2 rule: cmd %q: want READ, WRITE, HALT or RESET", v))
			}
		case "file":
			if _, err := parser.CompileAnchored(v); err != nil {
				errs = append(errs, fmt.Errorf("r2d2 rule: file %q: %w", v, err))
			}
		default:
			errs = append(errs, fmt.Errorf("r2d2 rule: unknown key %q (want cmd, file)", k))
		}
	}
	return errors.Join(errs...)
}
