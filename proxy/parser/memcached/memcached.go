package memcached

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"github.com/palisade-mesh/palisade/proxy/parser"
)

// Name is the l7proto value of this parser.
const Name = "memcached"

const (
	// maxLine bounds a command or reply line (keys are at most 250 bytes).
	maxLine = 2048
	// maxKey is memcached's key length limit.
	maxKey = 250
	// maxValue bounds a data block; larger ones close the connection.
	maxValue = 128 << 20
)

var deniedReply = []byte("CLIENT_ERROR access denied\r\n")

func init() {
	parser.Register(parser.Protocol{Name: Name, NewConn: func(s parser.Session) parser.Conn { return &conn{s: s} }, Match: Match, ValidateRule: ValidateRule})
}

// Request is one parsed command line.
type Request struct {
	Cmd     string
	Keys    []string
	Data    int  // length of the data block that follows (storage commands)
	NoReply bool // the client expects no reply
	// HeaderLen is the length of the command line with its CRLF.
	HeaderLen int
}

type conn struct {
	s parser.Session
	// request direction
	pendingDrop int  // a denied request, dropped after its reply was injected
	awaitTerm   bool // a forwarded data block's CRLF comes next
	termEnd     bool // ...and it completes a request that expects a reply
	// reply direction
	inValue bool // a VALUE line's data block passed; its CRLF is part of it
}

// OnData implements parser.Conn.
func (c *conn) OnData(reply bool, data []byte) parser.Op {
	if reply {
		return c.onReply(data)
	}
	if c.pendingDrop > 0 {
		n := c.pendingDrop
		c.pendingDrop = 0
		return parser.Op{Verdict: parser.Drop, N: n}
	}
	if c.awaitTerm {
		if len(data) < 2 {
			return parser.Op{Verdict: parser.More, N: 2 - len(data)}
		}
		if data[0] != '\r' || data[1] != '\n' {
			return parser.Op{Verdict: parser.Error, Err: fmt.Errorf("memcached: data block not terminated by CRLF")}
		}
		c.awaitTerm = false
		return parser.Op{Verdict: parser.Pass, N: 2, End: c.termEnd}
	}
	if data[0] == 0x80 {
		return parser.Op{Verdict: parser.Error, Err: fmt.Errorf("memcached: binary protocol is not supported")}
	}
	line, ok, err := cutLine(data)
	if err != nil {
		return parser.Op{Verdict: parser.Error, Err: err}
	}
	if !ok {
		return parser.Op{Verdict: parser.More, N: 1}
	}
	req, err := ParseRequest(line)
	if err != nil {
		return parser.Op{Verdict: parser.Error, Err: err}
	}
	req.HeaderLen = len(line) + 2
	allowed := true
	keys := req.Keys
	if len(keys) == 0 {
		keys = []string{""}
	}
	for _, k := range keys {
		fields := map[string]string{"cmd": req.Cmd}
		if k != "" {
			fields["key"] = k
		}
		if !c.s.Allow(fields) {
			allowed = false
		}
	}
	if !allowed {
		c.pendingDrop = req.HeaderLen
		if req.Data >= 0 && storage(req.Cmd) {
			c.pendingDrop += req.Data + 2
		}
		if req.NoReply || req.Cmd == "quit" {
			n := c.pendingDrop
			c.pendingDrop = 0
			return parser.Op{Verdict: parser.Drop, N: n}
		}
		return parser.Op{Verdict: parser.Inject, Inject: deniedReply}
	}
	expectsReply := !req.NoReply && req.Cmd != "quit"
	if storage(req.Cmd) {
		c.awaitTerm, c.termEnd = true, expectsReply
		return parser.Op{Verdict: parser.Pass, N: req.HeaderLen + req.Data}
	}
	return parser.Op{Verdict: parser.Pass, N: req.HeaderLen, End: expectsReply}
}

// onReply passes replies, marking where each ends so injected replies keep their place.
func (c *conn) onReply(data []byte) parser.Op {
	if c.inValue {
		if len(data) < 2 {
			return parser.Op{Verdict: parser.More, N: 2 - len(data)}
		}
		if data[0] != '\r' || data[1] != '\n' {
			return parser.Op{Verdict: parser.Error, Err: fmt.Errorf("memcached: reply data block not terminated by CRLF")}
		}
		c.inValue = false
		return parser.Op{Verdict: parser.Pass, N: 2}
	}
	line, ok, err := cutLine(data)
	if err != nil {
		return parser.Op{Verdict: parser.Error, Err: err}
	}
	if !ok {
		return parser.Op{Verdict: parser.More, N: 1}
	}
	n := len(line) + 2
	switch {
	case bytes.HasPrefix(line, []byte("VALUE ")):
		f := strings.Fields(string(line))
		if len(f) < 4 {
			return parser.Op{Verdict: parser.Error, Err: fmt.Errorf("memcached: malformed VALUE line")}
		}
		size, err := strconv.Atoi(f[3])
		if err != nil || size < 0 || size > maxValue {
			return parser.Op{Verdict: parser.Error, Err: fmt.Errorf("memcached: VALUE length %q", f[3])}
		}
		c.inValue = true
		return parser.Op{Verdict: parser.Pass, N: n + size}
	case bytes.HasPrefix(line, []byte("STAT ")):
		return parser.Op{Verdict: parser.Pass, N: n}
	}
	// END, STORED, DELETED, a number, an error...: the last line of a reply.
	return parser.Op{Verdict: parser.Pass, N: n, End: true}
}

// cutLine returns the line before the first CRLF.
func cutLine(data []byte) (line []byte, ok bool, err error) {
	i := bytes.Index(data, []byte("\r\n"))
	if i < 0 {
		if len(data) > maxLine {
			return nil, false, fmt.Errorf("memcached: line longer than %d bytes", maxLine)
		}
		return nil, false, nil
	}
	if i > maxLine {
		return nil, false, fmt.Errorf("memcached: line longer than %d bytes", maxLine)
	}
	return data[:i], true, nil
}

func storage(cmd string) bool {
	switch cmd {
	case "set", "add", "replace", "append", "prepend", "cas":
		return true
	}
	return false
}

// ParseRequest parses a command line (without CRLF).
func ParseRequest(line []byte) (Request, error) {
	for _, b := range line {
		if b < ' ' || b == 0x7f {
			return Request{}, fmt.Errorf("memcached: control byte 0x%02x in command line", b)
		}
	}
	f := strings.Split(string(line), " ")
	cmd := f[0]
	args := f[1:]
	req := Request{Cmd: cmd, Data: -1}
	if n := len(args); n > 0 && args[n-1] == "noreply" {
		req.NoReply = true
		args = args[:n-1]
	}
	bad := func(why string) (Request, error) {
		return Request{}, fmt.Errorf("memcached: %s: %s", truncate(cmd), why)
	}
	for _, a := range args {
		if a == "" {
			return bad("empty argument (repeated spaces)")
		}
	}
	switch cmd {
	case "get", "gets", "gat", "gats":
		if req.NoReply {
			return bad("noreply is not allowed")
		}
		keys := args
		if cmd == "gat" || cmd == "gats" {
			if len(args) < 1 || !isUint(args[0]) {
				return bad("want an expiry time")
			}
			keys = args[1:]
		}
		if len(keys) == 0 {
			return bad("want at least one key")
		}
		req.Keys = keys
	case "set", "add", "replace", "append", "prepend", "cas":
		want := 4
		if cmd == "cas" {
			want = 5
		}
		if len(args) != want {
			return bad(fmt.Sprintf("want %d arguments", want))
		}
		for _, a := range args[1:] {
			if !isUint(a) {
				return bad(fmt.Sprintf("argument %q is not a number", truncate(a)))
			}
		}
		size, err := strconv.Atoi(args[3])
		if err != nil || size > maxValue {
			return bad("data block too large")
		}
		req.Keys, req.Data = args[:1], size
	case "delete":
		if len(args) != 1 {
			return bad("want one key")
		}
		req.Keys = args
	case "incr", "decr", "touch":
		if len(args) != 2 || !isUint(args[1]) {
			return bad("want a key and a number")
		}
		req.Keys = args[:1]
	case "version", "quit":
		if len(args) != 0 || req.NoReply {
			return bad("takes no arguments")
		}
	case "stats":
		if req.NoReply {
			return bad("noreply is not allowed")
		}
	case "flush_all", "verbosity":
		if len(args) > 1 || (len(args) == 1 && !isUint(args[0])) || (cmd == "verbosity" && len(args) != 1) {
			return bad("want at most one number")
		}
	default:
		return Request{}, fmt.Errorf("memcached: unknown command %q", truncate(cmd))
	}
	for _, k := range req.Keys {
		if len(k) > maxKey {
			return bad(fmt.Sprintf("key longer than %d bytes", maxKey))
		}
	}
	return req, nil
}

func isUint(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}
