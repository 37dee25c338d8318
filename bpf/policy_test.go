package bpf

import (
	"errors"
	"testing"
)

func TestPolicyEntry_RejectsInvalid(t *testing.T) {
	cases := map[string]PolicyEntry{
		"port without protocol": {Port: 80},
		"end port without port": {Protocol: ProtoTCP, EndPort: 90},
		"end port below port":   {Protocol: ProtoTCP, Port: 90, EndPort: 80},
		"deny with proxy":       {Protocol: ProtoTCP, Port: 80, Deny: true, ProxyPort: 15001},
		"egress proxy":          {Direction: Egress, Protocol: ProtoTCP, Port: 80, ProxyPort: 15001},
		"UDP proxy":             {Protocol: ProtoUDP, Port: 53, ProxyPort: 15001},
		"unknown direction":     {Direction: 7},
	}
	for name, e := range cases {
		t.Run(name, func(t *testing.T) {
			if err := e.validate(); err == nil {
				t.Fatalf("%+v accepted", e)
			}
		})
	}
}

func TestBuildPolicy_ExpandsAndMerges(t *testing.T) {
	p, err := buildPolicy(1, []PolicyEntry{
		{Identity: 300, Protocol: ProtoTCP, Port: 8000, EndPort: 8009},
		{Identity: 300, Protocol: ProtoTCP, Port: 8005, Deny: true},
		{Identity: 301, Protocol: ProtoTCP, Port: 1, EndPort: 65535},
		{Identity: 300, Protocol: ProtoTCP, Port: 8001},
	}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 11 {
		t.Fatalf("%d entries, want 10 expanded ports + 1 wildcard", len(p))
	}
	if v := p[datapathPolicyKey{Identity: 300, Dport: 8005, Proto: ProtoTCP}]; v.Deny != 1 {
		t.Error("deny did not win over the overlapping allow")
	}
	if _, ok := p[datapathPolicyKey{Identity: 301, Proto: ProtoTCP}]; !ok {
		t.Error("1-65535 not stored as the port wildcard")
	}
}

func TestBuildPolicy_ConflictingProxyPorts(t *testing.T) {
	_, err := buildPolicy(1, []PolicyEntry{
		{Identity: 300, Protocol: ProtoTCP, Port: 80, ProxyPort: 15001},
		{Identity: 300, Protocol: ProtoTCP, Port: 80, ProxyPort: 15002},
	}, 100)
	if err == nil {
		t.Fatal("conflicting proxy ports accepted")
	}
}

func TestBuildPolicy_FullNamesEndpointAndCount(t *testing.T) {
	_, err := buildPolicy(42, []PolicyEntry{{Identity: 300, Protocol: ProtoTCP, Port: 1000, EndPort: 1999}}, 500)
	var full *PolicyMapFullError
	if !errors.As(err, &full) || !errors.Is(err, ErrPolicyMapFull) {
		t.Fatalf("err = %v, want a PolicyMapFullError", err)
	}
	if full.Endpoint != 42 || full.Needed != 1000 || full.Limit != 500 {
		t.Errorf("error = %+v, want endpoint 42 needing 1000 of 500", full)
	}
}

func TestVerdict_Ladder(t *testing.T) {
	p, err := buildPolicy(1, []PolicyEntry{
		{Identity: 300, Protocol: ProtoTCP, Port: 80, ProxyPort: 15001},
		{Identity: 300, Protocol: ProtoTCP},          // any TCP port from 300
		{Identity: 0, Protocol: ProtoTCP, Port: 443}, // port 443 from anyone
		{Identity: 302}, // anything from 302
		{Identity: 0, Protocol: ProtoTCP, Port: 22, Deny: true},
		{Identity: 303, Protocol: ProtoUDP, Port: 53, Direction: Egress},
	}, 100)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name      string
		id        uint32
		port      uint16
		proto     uint8
		dir       Direction
		allowed   bool
		proxyPort uint16
	}{
		{"exact entry with proxy", 300, 80, ProtoTCP, Ingress, true, 15001},
		{"identity any port", 300, 81, ProtoTCP, Ingress, true, 0},
		{"identity wrong protocol", 300, 81, ProtoUDP, Ingress, false, 0},
		{"any identity on port", 999, 443, ProtoTCP, Ingress, true, 0},
		{"identity wildcard", 302, 9, ProtoUDP, Ingress, true, 0},
		{"deny on the path beats identity allow", 302, 22, ProtoTCP, Ingress, false, 0},
		{"deny beats any-port allow", 300, 22, ProtoTCP, Ingress, false, 0},
		{"no entry", 999, 80, ProtoTCP, Ingress, false, 0},
		{"direction matters", 303, 53, ProtoUDP, Ingress, false, 0},
		{"egress entry", 303, 53, ProtoUDP, Egress, true, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ok, proxy := p.verdict(c.id, c.port, c.proto, c.dir)
			if ok != c.allowed || proxy != c.proxyPort {
				t.Errorf("verdict = %v proxy %d, want %v proxy %d", ok, proxy, c.allowed, c.proxyPort)
			}
		})
	}
}

func TestReplacePolicy_InstallsAndCarriesCounters(t *testing.T) {
	d := openTest(t, Options{})
	entries := []PolicyEntry{{Identity: 300, Protocol: ProtoTCP, Port: 80}, {Identity: 301, Protocol: ProtoTCP, Port: 90, EndPort: 99}}
	if err := d.ReplacePolicy(7, entries); err != nil {
		t.Fatal(err)
	}
	got, err := d.Policy(7)
	if err != nil || len(got) != 11 {
		t.Fatalf("Policy = %d entries, %v; want 11", len(got), err)
	}
	// Simulate datapath accounting on one entry, then replace: the counter carries over.
	inner, err := d.innerMap(7)
	if err != nil {
		t.Fatal(err)
	}
	k := datapathPolicyKey{Identity: 300, Dport: 80, Proto: ProtoTCP}
	if err := inner.Put(&k, &datapathPolicyValue{Packets: 5, Bytes: 500}); err != nil {
		t.Fatal(err)
	}
	inner.Close()
	if err := d.ReplacePolicy(7, entries[:1]); err != nil {
		t.Fatal(err)
	}
	got, _ = d.Policy(7)
	if len(got) != 1 || got[0].Packets != 5 || got[0].Bytes != 500 {
		t.Fatalf("after replace = %+v, want one entry with 5 packets", got)
	}
}

func TestReplacePolicy_TooLargeChangesNothing(t *testing.T) {
	d := openTest(t, Options{PolicyMapMaxEntries: 100})
	if err := d.ReplacePolicy(7, []PolicyEntry{{Identity: 300, Protocol: ProtoTCP, Port: 80}}); err != nil {
		t.Fatal(err)
	}
	err := d.ReplacePolicy(7, []PolicyEntry{{Identity: 300, Protocol: ProtoTCP, Port: 1, EndPort: 200}})
	var full *PolicyMapFullError
	if !errors.As(err, &full) || full.Needed != 200 || full.Endpoint != 7 {
		t.Fatalf("err = %v, want policy map full for endpoint 7 needing 200", err)
	}
	got, _ := d.Policy(7)
	if len(got) != 1 {
		t.Fatalf("failed replace changed the policy: %+v", got)
	}
}

func TestApplyPolicyDelta_AddsDeletesAndLimits(t *testing.T) {
	d := openTest(t, Options{PolicyMapMaxEntries: 5})
	base := []PolicyEntry{{Identity: 300, Protocol: ProtoTCP, Port: 80}, {Identity: 301, Protocol: ProtoTCP, Port: 80}}
	if err := d.ApplyPolicyDelta(9, base, nil); err != nil {
		t.Fatalf("delta onto no policy: %v", err)
	}
	if err := d.ApplyPolicyDelta(9, []PolicyEntry{{Identity: 302, Protocol: ProtoUDP, Port: 53}}, base[:1]); err != nil {
		t.Fatal(err)
	}
	got, _ := d.Policy(9)
	keys := map[uint32]bool{}
	for _, s := range got {
		keys[s.Identity] = true
	}
	if len(got) != 2 || !keys[301] || !keys[302] {
		t.Fatalf("policy after delta = %+v, want identities 301 and 302", got)
	}
	err := d.ApplyPolicyDelta(9, []PolicyEntry{{Identity: 303, Protocol: ProtoTCP, Port: 10, EndPort: 13}}, nil)
	var full *PolicyMapFullError
	if !errors.As(err, &full) || full.Needed != 6 || full.Limit != 5 {
		t.Fatalf("err = %v, want policy map full needing 6 of 5", err)
	}
	if got, _ := d.Policy(9); len(got) != 2 {
		t.Fatalf("refused delta changed the policy: %+v", got)
	}
	eps, err := d.Endpoints()
	if err != nil || len(eps) != 0 {
		t.Fatalf("Endpoints = %+v, %v; policy alone registers no endpoint", eps, err)
	}
}
