package parser

import (
	"fmt"
	"sort"
	"sync"
)

// Verdict is what a parser wants done with the bytes it was given.
type Verdict int

const (
	// More: the parser needs at least N more bytes before it can decide.
	More Verdict = iota
	// Pass: forward the next N bytes.
	Pass
	// Drop: discard the next N bytes.
	Drop
	// Inject: send Inject back to the side the data came from (a reply to a denied request).
	Inject
	// Error: the data does not parse; close the connection.
	Error
)

func (v Verdict) String() string {
	switch v {
	case More:
		return "MORE"
	case Pass:
		return "PASS"
	case Drop:
		return "DROP"
	case Inject:
		return "INJECT"
	case Error:
		return "ERROR"
	}
	return fmt.Sprintf("Verdict(%d)", int(v))
}

// Op is one answer of a parser.
type Op struct {
	Verdict Verdict
	N       int
	Inject  []byte
	Err     error // for Error: what was wrong
	// End marks a Pass or Drop that completes a request (request direction) or a reply (reply
	// direction). Parsers that set it get replies injected for denied requests in request order:
	// an injection waits until the replies of the requests forwarded before it have passed.
	End bool
}

// Session lets a parser judge and report requests.
type Session interface {
	// Allow reports whether a request with these fields is allowed now by the rules of the
	// connection's source identity, and logs it.
	Allow(fields map[string]string) bool
}

// Conn parses one connection.
type Conn interface {
	// OnData is called with the unconsumed bytes of one direction (reply: server to client). It
	// must not keep data.
	OnData(reply bool, data []byte) Op
}

// Protocol describes a parser to the framework.
type Protocol struct {
	// Name is the l7proto value that selects it.
	Name string
	// NewConn starts parsing a connection.
	NewConn func(s Session) Conn
	// Match decides whether a request's fields satisfy one rule. Required.
	Match func(rule, fields map[string]string) bool
	// ValidateRule checks one rule of a policy (unknown keys, bad regular expressions).
	ValidateRule func(rule map[string]string) error
}

var (
	mu        sync.RWMutex
	protocols = map[string]Protocol{}
)

// Register makes a protocol available; parsers call it from init.
func Register(p Protocol) {
	if p.Name == "" || p.NewConn == nil || p.Match == nil {
		panic("parser.Register: Name, NewConn and Match are required")
	}
	mu.Lock()
	defer mu.Unlock()
	if _, dup := protocols[p.Name]; dup {
		panic("parser.Register: duplicate protocol " + p.Name)
	}
	protocols[p.Name] = p
}

// Lookup returns the registered protocol of an l7proto name.
func Lookup(name string) (Protocol, bool) {
	mu.RLock()
	defer mu.RUnlock()
	p, ok := protocols[name]
	return p, ok
}

// Names lists the registered protocols.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	out := make([]string, 0, len(protocols))
	for n := range protocols {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// MatchAny reports whether fields satisfy at least one rule. An empty rule ({}) matches every
// request (allow all, still parsed for visibility).
func (p Protocol) MatchAny(rules []map[string]string, fields map[string]string) bool {
	for _, r := range rules {
		if p.Match(r, fields) {
			return true
		}
	}
	return false
}
