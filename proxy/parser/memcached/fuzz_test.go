package memcached

import (
	"bytes"
	"testing"
)

// FuzzMemcached checks that splitting the input anywhere does not change what is forwarded or
// injected, and that nothing forwarded is a denied write.
func FuzzMemcached(f *testing.F) {
	for _, s := range []string{
		"set public/a 0 0 5\r\nhello\r\nget a b\r\n",
		"set secret 0 0 3\r\nabc\r\ndelete secret noreply\r\n",
		"cas k 1 2 3 4\r\nabc\r\n", "get\r\n", "incr a 1\r\n", "\x80", "stats\r\nversion\r\n",
	} {
		f.Add([]byte(s), uint8(5))
	}
	f.Fuzz(func(t *testing.T, in []byte, split uint8) {
		whole := direction(session(publicOnly), false)
		wholeErr := whole.Feed(in)
		parts := direction(session(publicOnly), false)
		var partsErr error
		step := int(split)%11 + 1
		for i := 0; i < len(in) && partsErr == nil; i += step {
			partsErr = parts.Feed(in[i:min(i+step, len(in))])
		}
		if (wholeErr == nil) != (partsErr == nil) {
			// A split may leave the parser waiting where the whole input already failed; what was
			// forwarded before must still agree.
			if !bytes.HasPrefix(whole.Forwarded, parts.Forwarded) && !bytes.HasPrefix(parts.Forwarded, whole.Forwarded) {
				t.Fatalf("split changes the outcome: %q vs %q", whole.Forwarded, parts.Forwarded)
			}
			return
		}
		if !bytes.Equal(whole.Forwarded, parts.Forwarded) || !bytes.Equal(whole.Injected, parts.Injected) {
			t.Fatalf("split changes the outcome: whole %q/%q, split %q/%q", whole.Forwarded, whole.Injected, parts.Forwarded, parts.Injected)
		}
		// Re-parsing what was forwarded finds only requests the policy allows.
		rs := session([]map[string]string{{}})
		_ = direction(rs, false).Feed(whole.Forwarded)
		for _, j := range rs.Judged {
			if !Match(publicOnly[0], j.Fields) && !Match(publicOnly[1], j.Fields) && !Match(publicOnly[2], j.Fields) {
				t.Fatalf("forwarded a denied request %v", j.Fields)
			}
		}
	})
}
