package agent

import (
	"slices"
	"testing"

	"github.com/palisade-mesh/palisade/bpf"
	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/policy"
	"github.com/palisade-mesh/palisade/policy/api"
)

func TestDatapathEntries(t *testing.T) {
	cases := []struct {
		name       string
		ms         policy.MapState
		want       []bpf.PolicyEntry
		unenforced int
	}{
		{
			name: "unenforced directions allow everything",
			ms: policy.MapState{
				{Direction: policy.Ingress}: {},
				{Direction: policy.Egress}:  {},
			},
			want: []bpf.PolicyEntry{{Direction: bpf.Ingress}, {Direction: bpf.Egress}},
		},
		{
			name: "identity and port range, deny kept",
			ms: policy.MapState{
				{Identity: 65792, Direction: policy.Ingress, Proto: policy.ProtoTCP, Port: 80, EndPort: 80}: {},
				{Identity: 65793, Direction: policy.Ingress, Proto: policy.ProtoTCP, Port: 80, EndPort: 90}: {Deny: true},
				{Identity: 0, Direction: policy.Egress, Proto: policy.ProtoUDP, Port: 53, EndPort: 53}:      {},
			},
			want: []bpf.PolicyEntry{
				{Identity: 65792, Direction: bpf.Ingress, Protocol: 6, Port: 80, EndPort: 80},
				{Identity: 65793, Direction: bpf.Ingress, Protocol: 6, Port: 80, EndPort: 90, Deny: true},
				{Identity: 0, Direction: bpf.Egress, Protocol: 17, Port: 53, EndPort: 53},
			},
		},
		{
			name: "any protocol on a port expands to TCP, UDP and SCTP",
			ms: policy.MapState{
				{Identity: 7, Direction: policy.Ingress, Proto: policy.ProtoAny, Port: 443, EndPort: 443}: {},
			},
			want: []bpf.PolicyEntry{
				{Identity: 7, Direction: bpf.Ingress, Protocol: 6, Port: 443, EndPort: 443},
				{Identity: 7, Direction: bpf.Ingress, Protocol: 17, Port: 443, EndPort: 443},
				{Identity: 7, Direction: bpf.Ingress, Protocol: 132, Port: 443, EndPort: 443},
			},
		},
		{
			name: "L7 entry without a proxy fails closed",
			ms: policy.MapState{
				{Identity: 9, Direction: policy.Ingress, Proto: policy.ProtoTCP, Port: 80, EndPort: 80}: {Redirect: true},
			},
			unenforced: 1,
		},
		{
			name: "L7 entry covered by a plain allow of the same traffic passes through the allow",
			ms: policy.MapState{
				{Identity: 9, Direction: policy.Ingress, Proto: policy.ProtoTCP, Port: 80, EndPort: 80}:  {Redirect: true},
				{Identity: 0, Direction: policy.Ingress, Proto: policy.ProtoTCP, Port: 1, EndPort: 1024}: {},
			},
			want: []bpf.PolicyEntry{{Direction: bpf.Ingress, Protocol: 6, Port: 1, EndPort: 1024}},
		},
		{
			name: "a deny does not cover an L7 entry",
			ms: policy.MapState{
				{Identity: 9, Direction: policy.Ingress, Proto: policy.ProtoTCP, Port: 80, EndPort: 80}: {Redirect: true},
				{Identity: 0, Direction: policy.Ingress}:                                                {Deny: true},
			},
			want:       []bpf.PolicyEntry{{Direction: bpf.Ingress, Deny: true}},
			unenforced: 1,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, unenforced := datapathEntries(c.ms)
			want := slices.Clone(c.want)
			slices.SortFunc(want, compareEntries)
			if !slices.Equal(got, want) {
				t.Fatalf("entries:\n got  %v\n want %v", got, want)
			}
			if unenforced != c.unenforced {
				t.Fatalf("unenforced = %d, want %d", unenforced, c.unenforced)
			}
		})
	}
}

func TestPolicyKeyRoundTrip(t *testing.T) {
	for _, k := range []api.Key{
		{Kind: "CiliumNetworkPolicy", Namespace: "default", Name: "allow-empire"},
		{Kind: "CiliumClusterwideNetworkPolicy", Name: "r2d2"},
	} {
		got, err := parsePolicyKey(PolicyKey(k))
		if err != nil || got != k {
			t.Errorf("parsePolicyKey(PolicyKey(%v)) = %v, %v", k, got, err)
		}
	}
	for _, bad := range []string{"policies/", "policies/Kind", "policies/Kind/ns/"} {
		if _, err := parsePolicyKey(bad); err == nil {
			t.Errorf("parsePolicyKey(%q) accepted", bad)
		}
	}
}

func TestCollectRevision_StopsAtTheEndOfTheRevision(t *testing.T) {
	for _, tc := range []struct {
		name     string
		events   []kvstore.Event
		want     []string
		wantNext string
	}{
		{
			name:   "marked end: returns without reading on",
			events: []kvstore.Event{{Key: "b", Revision: 5, EndOfRevision: true}, {Key: "c", Revision: 6}},
			want:   []string{"b"},
		},
		{
			name:     "no mark: stops at the next revision and keeps it",
			events:   []kvstore.Event{{Key: "b", Revision: 5}, {Key: "c", Revision: 6}},
			want:     []string{"b"},
			wantNext: "c",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := make(chan kvstore.Event, len(tc.events))
			for _, ev := range tc.events {
				ch <- ev
			}
			var got []string
			var next *kvstore.Event
			collectRevision(ch, 5, func(ev kvstore.Event) { got = append(got, ev.Key) }, &next)
			if !slices.Equal(got, tc.want) {
				t.Errorf("collected %v, want %v", got, tc.want)
			}
			if gotNext := ""; next != nil {
				gotNext = next.Key
				if gotNext != tc.wantNext {
					t.Errorf("next = %q, want %q", gotNext, tc.wantNext)
				}
			} else if tc.wantNext != "" {
				t.Errorf("next = nil, want %q", tc.wantNext)
			}
		})
	}
}
