package bpf

import (
	"testing"
)

func TestReadInstalled_LookupsAndWholeReadAgree(t *testing.T) {
	d := openTest(t, Options{})
	var policy []PolicyEntry
	for i := uint32(0); i < 200; i++ {
		policy = append(policy, PolicyEntry{Identity: 1000 + i, Protocol: ProtoTCP, Port: 80, ProxyPort: uint16(i % 2 * 15001)})
	}
	if err := d.ReplacePolicy(7, policy); err != nil {
		t.Fatal(err)
	}
	inner, err := d.innerMap(7)
	if err != nil || inner == nil {
		t.Fatalf("installed map: %v, %v", inner, err)
	}
	defer inner.Close()

	wanted := func(ids ...uint32) desiredPolicy {
		w := make(desiredPolicy)
		for _, id := range ids {
			w[datapathPolicyKey{Identity: id, Dport: 80, Proto: ProtoTCP}] = datapathPolicyValue{}
		}
		return w
	}
	few := wanted(1001, 1002, 5)  // 3 of 200: one lookup each
	many := wanted(1001, 1002, 5) // the same keys and 40 more: a whole read
	for id := uint32(1100); id < 1140; id++ {
		many[datapathPolicyKey{Identity: id, Dport: 80, Proto: ProtoTCP}] = datapathPolicyValue{}
	}
	byLookup, err := readInstalled(inner, 200, few)
	if err != nil {
		t.Fatal(err)
	}
	byScan, err := readInstalled(inner, 200, many, few)
	if err != nil {
		t.Fatal(err)
	}
	if len(byLookup) != 3 || len(byScan) != 43 {
		t.Fatalf("read %d and %d keys, want 3 and 43", len(byLookup), len(byScan))
	}
	for k, got := range byScan {
		id := k.Identity
		wantOK := id >= 1000 && id < 1200
		if got.ok != wantOK || (wantOK && got.v.ProxyPort != uint16((id-1000)%2*15001)) {
			t.Errorf("whole read of identity %d = %+v, want present %v", id, got, wantOK)
		}
		if l, asked := byLookup[k]; asked && l != got {
			t.Errorf("identity %d: lookup read %+v, whole read %+v", id, l, got)
		}
	}
}

func TestApplyPolicyDelta_LargeDeltaKeepsCountersAndCount(t *testing.T) {
	d := openTest(t, Options{})
	var port80, port81 []PolicyEntry
	for i := uint32(0); i < 100; i++ {
		port80 = append(port80, PolicyEntry{Identity: 1000 + i, Protocol: ProtoTCP, Port: 80})
		port81 = append(port81, PolicyEntry{Identity: 1000 + i, Protocol: ProtoTCP, Port: 81})
	}
	stay := PolicyEntry{Identity: 2000, Protocol: ProtoTCP, Port: 443}
	if err := d.ReplacePolicy(7, append([]PolicyEntry{stay}, port80...)); err != nil {
		t.Fatal(err)
	}
	inner, err := d.innerMap(7)
	if err != nil {
		t.Fatal(err)
	}
	// Counters of an entry the delta rewrites (a proxy port appears) carry over.
	k := datapathPolicyKey{Identity: 2000, Dport: 443, Proto: ProtoTCP}
	if err := inner.Put(&k, &datapathPolicyValue{Packets: 5, Bytes: 300}); err != nil {
		t.Fatal(err)
	}
	inner.Close()
	withProxy := stay
	withProxy.ProxyPort = 15001
	if err := d.ApplyPolicyDelta(7, append([]PolicyEntry{withProxy}, port81...), port80); err != nil {
		t.Fatal(err)
	}
	stats, err := d.Policy(7)
	if err != nil {
		t.Fatal(err)
	}
	if len(stats) != 101 {
		t.Fatalf("%d entries installed, want 101", len(stats))
	}
	for _, s := range stats {
		switch {
		case s.Port == 80:
			t.Errorf("removed entry %+v still installed", s)
		case s.Identity == 2000 && (s.ProxyPort != 15001 || s.Packets != 5 || s.Bytes != 300):
			t.Errorf("rewritten entry %+v, want proxy 15001 with its counters 5/300", s)
		}
	}
	if n, err := d.policySize(7); err != nil || n != 101 {
		t.Errorf("policy size %d, %v; want 101", n, err)
	}
}
