package parser

import (
	"regexp"
	"sync"
)

var regexps sync.Map // expression -> *regexp.Regexp (nil: invalid)

// MatchAnchored reports whether the whole of value matches expr; an invalid expression matches
// nothing. Compiled expressions are cached: rules are few and requests many.
func MatchAnchored(expr, value string) bool {
	re, err := CompileAnchored(expr)
	return err == nil && re.MatchString(value)
}

// CompileAnchored compiles expr so that it must match a whole value.
func CompileAnchored(expr string) (*regexp.Regexp, error) {
	if v, ok := regexps.Load(expr); ok {
		return v.(*regexp.Regexp), nil
	}
	re, err := regexp.Compile("^(?:" + expr + ")$")
	if err != nil {
		return nil, err
	}
	regexps.Store(expr, re)
	return re, nil
}
