package r2d2

import (
	"bytes"
	"strings"
	"testing"

	"github.com/palisade-mesh/palisade/proxy/parser"
	"github.com/palisade-mesh/palisade/proxy/parser/parsertest"
)

// readOnly is the policy of read-only.json: READ of files under /public/ only.
var readOnly = []map[string]string{{"cmd": "READ", "file": "/public/.*"}}

func readOnlySession() *parsertest.Session {
	p, _ := parser.Lookup(Name)
	return &parsertest.Session{AllowFunc: func(f map[string]string) bool { return p.MatchAny(readOnly, f) }}
}

func requestDirection(s parser.Session) *parsertest.Direction {
	p, _ := parser.Lookup(Name)
	return &parsertest.Direction{Conn: p.NewConn(s)}
}

func TestR2D2_ReadOnlyPolicy(t *testing.T) {
	const in = "READ /public/a\r\nWRITE /public/a\r\nread /public/b\r\nREAD /etc/passwd\r\nHALT\r\nRESET\r\n"
	for name, feed := range map[string]func(*parsertest.Direction, []byte) error{
		"one chunk":        (*parsertest.Direction).Feed,
		"one byte at once": (*parsertest.Direction).FeedBytewise,
	} {
		t.Run(name, func(t *testing.T) {
			s := readOnlySession()
			d := requestDirection(s)
			if err := feed(d, []byte(in)); err != nil {
				t.Fatal(err)
			}
			if got, want := string(d.Forwarded), "READ /public/a\r\nread /public/b\r\n"; got != want {
				t.Errorf("forwarded %q, want %q", got, want)
			}
			if got, want := string(d.Injected), strings.Repeat("ERROR\r\n", 4); got != want {
				t.Errorf("injected %q, want %q", got, want)
			}
			var verdicts []string
			for _, j := range s.Judged {
				v := "deny"
				if j.Allowed {
					v = "allow"
				}
				verdicts = append(verdicts, j.Fields["cmd"]+" "+j.Fields["file"]+" "+v)
			}
			if got, want := strings.Join(verdicts, ","), "READ /public/a allow,WRITE /public/a deny,READ /public/b allow,READ /etc/passwd deny,HALT  deny,RESET  deny"; got != want {
				t.Errorf("judged %s\nwant   %s", got, want)
			}
			if d.Pending() != 0 {
				t.Errorf("%d bytes left unparsed", d.Pending())
			}
		})
	}
}

func TestR2D2_AllowAllStillParses(t *testing.T) {
	p, _ := parser.Lookup(Name)
	s := &parsertest.Session{AllowFunc: func(f map[string]string) bool { return p.MatchAny([]map[string]string{{}}, f) }}
	d := requestDirection(s)
	in := bytes.Repeat([]byte("WRITE /x\r\nHALT\r\n"), 100)
	if err := d.Feed(in); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(d.Forwarded, in) || len(s.Judged) != 200 {
		t.Fatalf("forwarded %d of %d bytes, judged %d requests", len(d.Forwarded), len(in), len(s.Judged))
	}
	if err := d.Feed([]byte("BOGUS\r\n")); err == nil {
		t.Fatal("allow-all passed a request that does not parse")
	}
}

func TestR2D2_MalformedCloses(t *testing.T) {
	for _, in := range []string{
		"DELETE /x\r\n",
		"READ\r\n",
		"READ \r\n",
		"READ  /two-spaces\r\n",
		"READ /a b\r\n",
		"HALT now\r\n",
		"READ /\x01\r\n",
		"X",
		"\r\n",
		"READ /" + strings.Repeat("a", maxLine),
	} {
		d := requestDirection(&parsertest.Session{})
		if err := d.FeedBytewise([]byte(in)); err == nil {
			t.Errorf("%q: accepted (forwarded %q)", in, d.Forwarded)
		} else if len(d.Forwarded) != 0 {
			t.Errorf("%q: forwarded %q before failing", in, d.Forwarded)
		}
	}
}

func TestR2D2_RepliesPassLineByLine(t *testing.T) {
	p, _ := parser.Lookup(Name)
	d := &parsertest.Direction{Conn: p.NewConn(&parsertest.Session{}), Reply: true}
	if err := d.FeedBytewise([]byte("OK\r\ncontents\r\nERROR\r\npart")); err != nil {
		t.Fatal(err)
	}
	if string(d.Forwarded) != "OK\r\ncontents\r\nERROR\r\n" || d.Pending() != 4 {
		t.Fatalf("forwarded %q, pending %d", d.Forwarded, d.Pending())
	}
}

func TestR2D2_RuleMatchingAndValidation(t *testing.T) {
	cases := []struct {
		rule   map[string]string
		fields map[string]string
		want   bool
	}{
		{map[string]string{}, map[string]string{"cmd": "HALT"}, true},
		{map[string]string{"cmd": "read"}, map[string]string{"cmd": "READ", "file": "/x"}, true},
		{map[string]string{"file": "/public/.*"}, map[string]string{"cmd": "READ", "file": "/public/x"}, true},
		{map[string]string{"file": "/public/.*"}, map[string]string{"cmd": "READ", "file": "/private/public/x"}, false},
		{map[string]string{"file": ".*"}, map[string]string{"cmd": "HALT"}, false},
		{map[string]string{"colour": "red"}, map[string]string{"cmd": "HALT"}, false},
	}
	for _, c := range cases {
		if got := Match(c.rule, c.fields); got != c.want {
			t.Errorf("Match(%v, %v) = %v, want %v", c.rule, c.fields, got, c.want)
		}
	}
	for _, good := range []map[string]string{{}, {"cmd": "WRITE"}, {"cmd": "halt"}, {"file": "^/a$"}} {
		if err := ValidateRule(good); err != nil {
			t.Errorf("ValidateRule(%v): %v", good, err)
		}
	}
	for _, bad := range []map[string]string{{"cmd": "DELETE"}, {"file": "("}, {"colour": "red"}} {
		if err := ValidateRule(bad); err == nil {
			t.Errorf("ValidateRule(%v) accepted", bad)
		}
	}
}
