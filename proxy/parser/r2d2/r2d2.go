package r2d2

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/palisade-mesh/palisade/proxy/parser"
)

// Name is the l7proto value of this parser.
const Name = "r2d2"

// maxLine bounds a request or reply line.
const maxLine = 4096

var errorReply = []byte("ERROR\r\n")

func init() {
	parser.Register(parser.Protocol{
		Name:         Name,
		NewConn:      func(s parser.Session) parser.Conn { return &conn{s: s} },
		Match:        Match,
		ValidateRule: ValidateRule,
	})
}

type conn struct {
	s           parser.Session
	pendingDrop int // a denied request's length, dropped after its ERROR was injected
}

// OnData implements parser.Conn.
func (c *conn) OnData(reply bool, data []byte) parser.Op {
	if c.pendingDrop > 0 && !reply {
		n := c.pendingDrop
		c.pendingDrop = 0
		return parser.Op{Verdict: parser.Drop, N: n}
	}
	i := bytes.Index(data, []byte("\r\n"))
	if i < 0 {
		if len(data) >= maxLine {
			return parser.Op{Verdict: parser.Error, Err: fmt.Errorf("r2d2: line longer than %d bytes", maxLine)}
		}
		if !reply {
			if err := checkPrefix(data); err != nil {
				return parser.Op{Verdict: parser.Error, Err: err}
			}
		}
		return parser.Op{Verdict: parser.More, N: 1}
	}
	n := i + 2
	if reply {
		return parser.Op{Verdict: parser.Pass, N: n, End: true}
	}
	fields, err := ParseRequest(data[:i])
	if err != nil {
		return parser.Op{Verdict: parser.Error, Err: err}
	}
	if c.s.Allow(fields) {
		return parser.Op{Verdict: parser.Pass, N: n, End: true}
	}
	c.pendingDrop = n
	return parser.Op{Verdict: parser.Inject, Inject: errorReply}
}

var commands = []string{"READ", "WRITE", "HALT", "RESET"}

// checkPrefix fails early on a partial line that can no longer become a request, so a client
// cannot hold a connection by sending garbage slowly.
func checkPrefix(data []byte) error {
	word, _, _ := bytes.Cut(bytes.TrimSuffix(data, []byte("\r")), []byte(" "))
	up := strings.ToUpper(string(word))
	for _, c := range commands {
		if strings.HasPrefix(c, up) {
			return nil
		}
	}
	return fmt.Errorf("r2d2: unknown command %q", truncate(up))
}

// ParseRequest parses one request line (without its CRLF) into its fields: cmd and, for READ and
// WRITE, file.
func ParseRequest(line []byte) (map[string]string, error) {
	word, rest, hasArg := bytes.Cut(line, []byte(" "))
	cmd := strings.ToUpper(string(word))
	switch cmd {
	case "READ", "WRITE":
		if !hasArg || len(rest) == 0 {
			return nil, fmt.Errorf("r2d2: %s needs a file name", cmd)
		}
		for _, b := range rest {
			if b <= ' ' || b > '~' {
				return nil, fmt.Errorf("r2d2: %s: file name has a byte 0x%02x that is not printable ASCII", cmd, b)
			}
		}
		return map[string]string{"cmd": cmd, "file": string(rest)}, nil
	case "HALT", "RESET":
		if hasArg {
			return nil, fmt.Errorf("r2d2: %s takes no argument", cmd)
		}
		return map[string]string{"cmd": cmd}, nil
	}
	return nil, fmt.Errorf("r2d2: unknown command %q", truncate(cmd))
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}
