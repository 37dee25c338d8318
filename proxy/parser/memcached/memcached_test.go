package memcached

import (
	"bytes"
	"strings"
	"testing"

	"github.com/palisade-mesh/palisade/proxy/parser"
	"github.com/palisade-mesh/palisade/proxy/parser/parsertest"
)

// publicOnly allows reads of any key and writes of keys under public/ only.
var publicOnly = []map[string]string{{"command": "readGroup"}, {"command": "writeGroup", "keyPrefix": "public/"}, {"command": "version"}}

func session(rules []map[string]string) *parsertest.Session {
	p, _ := parser.Lookup(Name)
	return &parsertest.Session{AllowFunc: func(f map[string]string) bool { return p.MatchAny(rules, f) }}
}

func direction(s parser.Session, reply bool) *parsertest.Direction {
	p, _ := parser.Lookup(Name)
	return &parsertest.Direction{Conn: p.NewConn(s), Reply: reply}
}

func TestMemcached_RequestsByCommandAndKey(t *testing.T) {
	const in = "set public/a 0 0 5\r\nhello\r\n" +
		"set secret 0 0 3\r\nabc\r\n" +
		"get public/a secret\r\n" +
		"delete secret noreply\r\n" +
		"incr public/n 5\r\n" +
		"append secret 0 0 2 noreply\r\nxy\r\n" +
		"touch secret 10\r\n" +
		"version\r\n" +
		"flush_all\r\n"
	wantFwd := "set public/a 0 0 5\r\nhello\r\nget public/a secret\r\nincr public/n 5\r\nversion\r\n"
	wantInj := strings.Repeat("CLIENT_ERROR access denied\r\n", 3) // set secret, touch secret, flush_all
	for name, feed := range map[string]func(*parsertest.Direction, []byte) error{
		"one chunk":        (*parsertest.Direction).Feed,
		"one byte at once": (*parsertest.Direction).FeedBytewise,
	} {
		t.Run(name, func(t *testing.T) {
			d := direction(session(publicOnly), false)
			if err := feed(d, []byte(in)); err != nil {
				t.Fatal(err)
			}
			if string(d.Forwarded) != wantFwd {
				t.Errorf("forwarded %q\nwant      %q", d.Forwarded, wantFwd)
			}
			if string(d.Injected) != wantInj {
				t.Errorf("injected %q, want %q", d.Injected, wantInj)
			}
			if d.Pending() != 0 {
				t.Errorf("%d bytes left", d.Pending())
			}
		})
	}
}

func TestMemcached_LargeValueStreamsWithoutBuffering(t *testing.T) {
	d := direction(session(publicOnly), false)
	value := bytes.Repeat([]byte("v"), 4<<20)
	msg := append(append([]byte("set public/big 0 0 4194304\r\n"), value...), "\r\nget public/big\r\n"...)
	for i := 0; i < len(msg); i += 64 << 10 {
		if err := d.Feed(msg[i:min(i+64<<10, len(msg))]); err != nil {
			t.Fatal(err)
		}
		if d.Pending() > 64<<10 {
			t.Fatalf("driver holds %d bytes: the parser buffers the value", d.Pending())
		}
	}
	if !bytes.Equal(d.Forwarded, msg) {
		t.Fatalf("forwarded %d of %d bytes", len(d.Forwarded), len(msg))
	}
}

func TestMemcached_RepliesPass(t *testing.T) {
	const replies = "STORED\r\nVALUE public/a 0 5\r\nhel\r\n\r\nVALUE b 1 0 7\r\n\r\nEND\r\n6\r\nSTAT pid 1\r\nSTAT uptime 2\r\nEND\r\nVERSION 1.6\r\n"
	d := direction(&parsertest.Session{}, true)
	if err := d.FeedBytewise([]byte(replies)); err != nil {
		t.Fatal(err)
	}
	if string(d.Forwarded) != replies {
		t.Fatalf("forwarded %q", d.Forwarded)
	}
	bad := direction(&parsertest.Session{}, true)
	if err := bad.Feed([]byte("VALUE a 0 3\r\nabcXY")); err == nil {
		t.Fatal("reply with a bad data terminator passed")
	}
}

func TestMemcached_MalformedCloses(t *testing.T) {
	for _, in := range []string{
		"GET a\r\n", // commands are lower case
		"get\r\n",
		"get  a\r\n",
		"set a 0 0\r\n",
		"set a x 0 1\r\nz\r\n",
		"set a 0 0 1\r\nzz\r\n",
		"set a 0 0 -1\r\n",
		"cas a 0 0 1\r\nz\r\n",
		"delete\r\n",
		"incr a\r\n",
		"incr a b\r\n",
		"get a\x00\r\n",
		"get " + strings.Repeat("k", 251) + "\r\n",
		"\x80\x00\x00",
		"bogus\r\n",
		strings.Repeat("g", maxLine+10),
		"version extra\r\n",
	} {
		allowAll := session([]map[string]string{{}})
		d := direction(allowAll, false)
		if err := d.FeedBytewise([]byte(in)); err == nil {
			t.Errorf("%q: accepted", in)
		}
		// A bad data block's header may pass before its terminator is checked, never its successor.
		if strings.Contains(string(d.Forwarded), "\r\n") && !strings.HasPrefix(in, "set a 0 0 1\r\n") {
			t.Errorf("%q: forwarded %q", in, d.Forwarded)
		}
	}
}

func TestMemcached_Rules(t *testing.T) {
	cases := []struct {
		rule   map[string]string
		fields map[string]string
		want   bool
	}{
		{map[string]string{}, map[string]string{"cmd": "stats"}, true},
		{map[string]string{"command": "get"}, map[string]string{"cmd": "get", "key": "a"}, true},
		{map[string]string{"command": "get"}, map[string]string{"cmd": "gets", "key": "a"}, false},
		{map[string]string{"command": "readGroup"}, map[string]string{"cmd": "gats", "key": "a"}, true},
		{map[string]string{"command": "writeGroup"}, map[string]string{"cmd": "get", "key": "a"}, false},
		{map[string]string{"keyRegex": "user:[0-9]+"}, map[string]string{"cmd": "get", "key": "user:12"}, true},
		{map[string]string{"keyRegex": "user:[0-9]+"}, map[string]string{"cmd": "get", "key": "user:12x"}, false},
		{map[string]string{"keyExact": "a"}, map[string]string{"cmd": "stats"}, false},
		{map[string]string{"keyPrefix": "p/"}, map[string]string{"cmd": "set", "key": "p/x"}, true},
		{map[string]string{"colour": "red"}, map[string]string{"cmd": "get", "key": "a"}, false},
	}
	for _, c := range cases {
		if got := Match(c.rule, c.fields); got != c.want {
			t.Errorf("Match(%v, %v) = %v, want %v", c.rule, c.fields, got, c.want)
		}
	}
	for _, bad := range []map[string]string{{"command": "explode"}, {"keyRegex": "("}, {"key": "a"}} {
		if err := ValidateRule(bad); err == nil {
			t.Errorf("ValidateRule(%v) accepted", bad)
		}
	}
	if err := ValidateRule(map[string]string{"command": "writeGroup", "keyPrefix": "a"}); err != nil {
		t.Error(err)
	}
}
