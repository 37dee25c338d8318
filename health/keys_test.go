package health

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestParseKeySet_RejectsBadInput(t *testing.T) {
	k16 := bytes.Repeat([]byte{1}, 16)
	k32 := bytes.Repeat([]byte{2}, 32)
	good, _ := KeySet{Primary: k16, Keys: [][]byte{k16, k32}}.Marshal()
	if ks, err := ParseKeySet(good); err != nil || len(ks.Keys) != 2 {
		t.Fatalf("valid set: %v %v", ks, err)
	}
	tests := []struct {
		name, raw, want string
	}{
		{"not json", `{"primary":`, "malformed JSON"},
		{"unknown field", `{"primary":"AQEBAQEBAQEBAQEBAQEBAQ==","keys":["AQEBAQEBAQEBAQEBAQEBAQ=="],"x":1}`, "not a {primary, keys} object"},
		{"not base64", `{"primary":"!!","keys":["!!"]}`, "not a {primary, keys} object"},
		{"no keys", `{"primary":"AQEBAQEBAQEBAQEBAQEBAQ==","keys":[]}`, "no keys"},
		{"short key", `{"primary":"AQE=","keys":["AQE="]}`, "key 0: 2 bytes"},
		{"primary not among keys", `{"primary":"AgICAgICAgICAgICAgICAg==","keys":["AQEBAQEBAQEBAQEBAQEBAQ=="]}`, "primary key is not one of the keys"},
		{"repeated key", `{"primary":"AQEBAQEBAQEBAQEBAQEBAQ==","keys":["AQEBAQEBAQEBAQEBAQEBAQ==","AQEBAQEBAQEBAQEBAQEBAQ=="]}`, "key 1 repeats key 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseKeySet([]byte(tt.raw))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "AQEB") || strings.Contains(err.Error(), "AgIC") {
				t.Fatalf("error leaks key material: %v", err)
			}
		})
	}
}

func TestKeySet_StringHidesKeys(t *testing.T) {
	ks, err := NewKeySet()
	if err != nil {
		t.Fatal(err)
	}
	if s := ks.String(); s != "KeySet{1 keys}" {
		t.Fatalf("String() = %q", s)
	}
}

func FuzzParseKeySet(f *testing.F) {
	good, _ := KeySet{Primary: bytes.Repeat([]byte{1}, 16), Keys: [][]byte{bytes.Repeat([]byte{1}, 16)}}.Marshal()
	f.Add(good)
	f.Add([]byte(`{"primary":"AQE=","keys":["AQE="]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		ks, err := ParseKeySet(raw)
		if err != nil {
			return
		}
		if err := ks.Validate(); err != nil {
			t.Fatalf("parsed set does not validate: %v", err)
		}
	})
}

func FuzzDecodeMeta(f *testing.F) {
	good, _ := Meta{Node: "n1", Cluster: "c", Addrs: []string{"10.0.0.1"}, Version: "v1", Started: time.Unix(1, 0)}.encode()
	f.Add(good)
	f.Add([]byte(`{"node":"","cluster":"c"}`))
	f.Add([]byte(`{"node":"n","cluster":"c","addrs":["x"]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := DecodeMeta(raw)
		if err != nil {
			return
		}
		if m.Node == "" || m.Cluster == "" {
			t.Fatalf("decoded meta without name or cluster: %+v", m)
		}
	})
}

func TestKeySet_RotationSteps(t *testing.T) {
	old, err := NewKeySet()
	if err != nil {
		t.Fatal(err)
	}
	next, _ := NewKeySet()
	newKey := next.Primary
	oldFP, newFP := Fingerprint(old.Primary), Fingerprint(newKey)

	both, err := old.WithKey(newKey)
	if err != nil || len(both.Keys) != 2 || Fingerprint(both.Primary) != oldFP {
		t.Fatalf("add: %v %v", both, err)
	}
	if _, err := both.WithKey(newKey); err == nil {
		t.Fatal("the same key was added twice")
	}
	if _, err := both.Without(oldFP); err == nil || !strings.Contains(err.Error(), "primary") {
		t.Fatalf("removing the primary key: %v", err)
	}
	switched, err := both.Use(newFP)
	if err != nil || Fingerprint(switched.Primary) != newFP {
		t.Fatalf("use: %v", err)
	}
	final, err := switched.Without(oldFP)
	if err != nil || len(final.Keys) != 1 || final.Validate() != nil {
		t.Fatalf("remove: %v %v", final, err)
	}
	if _, err := final.Use("000000000000"); err == nil {
		t.Fatal("unknown fingerprint accepted")
	}
	if len(both.Keys) != 2 {
		t.Fatal("steps modified their input")
	}
}
