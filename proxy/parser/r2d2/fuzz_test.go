package r2d2

import (
	"bytes"
	"testing"
)

// FuzzR2D2 checks, for any input split anywhere, that the parser never forwards a byte it did
// not judge as part of an allowed request, and that splitting does not change the outcome.
func FuzzR2D2(f *testing.F) {
	for _, s := range []string{"READ /public/a\r\nWRITE /x\r\n", "HALT\r\nRESET\r\n", "READ", "read /a\r\r\n", "\r\n", "WRITE /\xff\r\n"} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, split uint8) {
		whole := requestDirection(readOnlySession())
		wholeErr := whole.Feed(in)
		parts := requestDirection(readOnlySession())
		var partsErr error
		step := int(split)%7 + 1
		for i := 0; i < len(in) && partsErr == nil; i += step {
			partsErr = parts.Feed(in[i:min(i+step, len(in))])
		}
		if (wholeErr == nil) != (partsErr == nil) || !bytes.Equal(whole.Forwarded, parts.Forwarded) || !bytes.Equal(whole.Injected, parts.Injected) {
			t.Fatalf("split changes the outcome: whole %q/%q/%v, split %q/%q/%v", whole.Forwarded, whole.Injected, wholeErr, parts.Forwarded, parts.Injected, partsErr)
		}
		// Everything forwarded is a sequence of allowed READ /public/... lines.
		for _, line := range bytes.SplitAfter(whole.Forwarded, []byte("\r\n")) {
			if len(line) == 0 {
				continue
			}
			f, err := ParseRequest(bytes.TrimSuffix(line, []byte("\r\n")))
			if err != nil || !Match(readOnly[0], f) {
				t.Fatalf("forwarded %q, which the policy does not allow", line)
			}
		}
	})
}
