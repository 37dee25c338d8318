package bpf

import (
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"
)

// putFlow records an established ingress TCP flow of endpoint epID from a peer of identity id to
// port, as the datapath would after admitting its SYN.
func putFlow(t testing.TB, d *Datapath, epID, id uint32, port, proxyPort uint16) datapathCtKey {
	t.Helper()
	now := monotonicNow()
	k := datapathCtKey{
		Saddr: addrWords(mustAddr(fmt.Sprintf("10.1.%d.%d", id%256, epID%256))),
		Daddr: addrWords(mustAddr(fmt.Sprintf("10.2.0.%d", epID%256))),
		Sport: hostPort(uint16(40000 + id%1000)), Dport: hostPort(port),
		Proto: ProtoTCP, Family: familyIPv4, Dir: uint8(Ingress),
	}
	v := datapathCtValue{Created: now, Expires: now + uint64(time.Hour), EndpointId: epID, Identity: id, ProxyPort: proxyPort, Flags: FlowEstablished}
	if err := d.objs.PalCt.Put(&k, &v); err != nil {
		t.Fatal(err)
	}
	return k
}

type flowID struct {
	endpoint, identity uint32
}

func flowSet(t *testing.T, d *Datapath) []flowID {
	t.Helper()
	flows, err := d.Conntrack().Dump()
	if err != nil {
		t.Fatal(err)
	}
	var out []flowID
	for _, f := range flows {
		out = append(out, flowID{f.Endpoint, f.Identity})
	}
	slices.SortFunc(out, func(a, b flowID) int {
		if a.endpoint != b.endpoint {
			return int(a.endpoint) - int(b.endpoint)
		}
		return int(a.identity) - int(b.identity)
	})
	return out
}

func allowFrom(id uint32, port, proxyPort uint16) PolicyEntry {
	return PolicyEntry{Identity: id, Direction: Ingress, Protocol: ProtoTCP, Port: port, ProxyPort: proxyPort}
}

func TestPolicyBatch_RevokeFlowsCutsWhatTheNewPoliciesRefuseInOnePass(t *testing.T) {
	d := openTest(t, Options{})
	base := []PolicyEntry{allowFrom(300, 80, 0), allowFrom(301, 80, 0)}
	for ep := uint32(1); ep <= 4; ep++ {
		if err := d.ReplacePolicy(ep, base); err != nil {
			t.Fatal(err)
		}
		putFlow(t, d, ep, 300, 80, 0)
		putFlow(t, d, ep, 301, 80, 0)
	}
	// Endpoint 6 has no policy at all, and is not part of the batch: its flows are not looked at.
	putFlow(t, d, 6, 300, 80, 0)
	all := flowSet(t, d)

	b := d.NewPolicyBatch()
	steps := []struct {
		name string
		run  func() error
	}{
		{"endpoint 1 loses the allow of 300", func() error { return b.ApplyPolicyDelta(1, nil, base[:1]) }},
		{"endpoint 2 denies 301", func() error {
			return b.ApplyPolicyDelta(2, []PolicyEntry{{Identity: 301, Direction: Ingress, Deny: true}}, nil)
		}},
		{"endpoint 3 only gains an allow", func() error { return b.ApplyPolicyDelta(3, []PolicyEntry{allowFrom(302, 80, 0)}, nil) }},
		{"endpoint 4 sends 300 through a proxy", func() error {
			return b.ReplacePolicy(4, []PolicyEntry{allowFrom(300, 80, 15001), allowFrom(301, 80, 0)})
		}},
		{"endpoint 5's first policy", func() error { return b.ReplacePolicy(5, base) }},
	}
	for _, s := range steps {
		if err := s.run(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
	}
	if got := flowSet(t, d); !slices.Equal(got, all) {
		t.Fatalf("flows before RevokeFlows = %v, want all of %v (the batch defers the cut)", got, all)
	}
	if got, want := b.Pending(), []uint32{1, 2, 4, 5}; !slices.Equal(got, want) {
		t.Errorf("pending = %v, want %v (an allow-only delta revokes nothing)", got, want)
	}

	n, err := b.RevokeFlows()
	if err != nil || n != 3 {
		t.Fatalf("RevokeFlows = %d, %v; want 3 flows cut", n, err)
	}
	want := []flowID{{1, 301}, {2, 300}, {3, 300}, {3, 301}, {4, 301}, {6, 300}}
	if got := flowSet(t, d); !slices.Equal(got, want) {
		t.Errorf("flows after RevokeFlows = %v, want %v", got, want)
	}
	if p := b.Pending(); len(p) != 0 {
		t.Errorf("pending after RevokeFlows = %v, want none", p)
	}
	if n, err := b.RevokeFlows(); err != nil || n != 0 {
		t.Errorf("second RevokeFlows = %d, %v; want nothing to do", n, err)
	}
}

func TestPolicyBatch_RevokeFlowsJudgesByThePolicyInForceWhenItRuns(t *testing.T) {
	d := openTest(t, Options{})
	allow := allowFrom(300, 80, 0)
	if err := d.ReplacePolicy(1, []PolicyEntry{allow}); err != nil {
		t.Fatal(err)
	}
	putFlow(t, d, 1, 300, 80, 0)
	b := d.NewPolicyBatch()
	if err := b.ApplyPolicyDelta(1, nil, []PolicyEntry{allow}); err != nil {
		t.Fatal(err)
	}
	// The allow comes back before the batch cuts: the flow is admitted again and must survive.
	if err := d.ApplyPolicyDelta(1, []PolicyEntry{allow}, nil); err != nil {
		t.Fatal(err)
	}
	if n, err := b.RevokeFlows(); err != nil || n != 0 {
		t.Fatalf("RevokeFlows = %d, %v; want the re-admitted flow kept", n, err)
	}
	if got := flowSet(t, d); len(got) != 1 {
		t.Fatalf("flows = %v, want the one flow", got)
	}
	// With the policy deleted in the meantime, the endpoint admits nothing: fail closed.
	if err := b.ApplyPolicyDelta(1, []PolicyEntry{{Identity: 999, Direction: Ingress, Deny: true}}, nil); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	err := d.objs.PalPolicy.Delete(uint32(1))
	d.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if n, err := b.RevokeFlows(); err != nil || n != 1 {
		t.Fatalf("RevokeFlows = %d, %v; want the flow of the endpoint without policy cut", n, err)
	}
}

func TestConntrack_DeleteKeysSkipsKeysAlreadyGone(t *testing.T) {
	d := openTest(t, Options{})
	var keys []datapathCtKey
	for id := uint32(300); id < 305; id++ {
		keys = append(keys, putFlow(t, d, 1, id, 80, 0))
	}
	// Two keys vanish (GC, or the datapath closing the flow) between the scan and the delete.
	for _, k := range []datapathCtKey{keys[1], keys[4]} {
		if err := d.objs.PalCt.Delete(&k); err != nil {
			t.Fatal(err)
		}
	}
	n, err := d.Conntrack().deleteKeys(keys)
	if err != nil || n != 3 {
		t.Fatalf("deleteKeys = %d, %v; want the 3 remaining deleted", n, err)
	}
	if got := flowSet(t, d); len(got) != 0 {
		t.Fatalf("flows left: %v", got)
	}
}

// BenchmarkPolicyChange measures one policy change reaching 50 endpoints of 200 entries each
// (every endpoint's ingress allow of 100 identities moves from one port to another, as in the
// agent benchmark), with a few established flows in the table: one ApplyPolicyDelta per endpoint,
// each cutting flows with its own conntrack scan (the baseline), against one PolicyBatch with a
// single scan. ns/op is the whole change of 50 endpoints.
func BenchmarkPolicyChange(b *testing.B) {
	const endpoints, peers = 50, 100
	var ingress [2][]PolicyEntry // the part that changes
	var egress []PolicyEntry
	for i := uint32(0); i < peers; i++ {
		ingress[0] = append(ingress[0], allowFrom(1000+i, 8080, 0))
		ingress[1] = append(ingress[1], allowFrom(1000+i, 8081, 0))
		egress = append(egress, PolicyEntry{Identity: 1000 + i, Direction: Egress})
	}
	for _, mode := range []string{"scan-per-endpoint", "batch"} {
		b.Run(mode, func(b *testing.B) {
			d := openTest(b, Options{Logger: slog.New(slog.DiscardHandler)})
			for ep := uint32(1); ep <= endpoints; ep++ {
				if err := d.ReplacePolicy(ep, append(slices.Clone(egress), ingress[0]...)); err != nil {
					b.Fatal(err)
				}
				putFlow(b, d, ep, 1000+ep, 9000, 0) // admitted by nothing: cut on the first change
			}
			i := 0
			for b.Loop() {
				from, to := ingress[i%2], ingress[(i+1)%2]
				i++
				if mode == "batch" {
					batch := d.NewPolicyBatch()
					for ep := uint32(1); ep <= endpoints; ep++ {
						if err := batch.ApplyPolicyDelta(ep, to, from); err != nil {
							b.Fatal(err)
						}
					}
					if _, err := batch.RevokeFlows(); err != nil {
						b.Fatal(err)
					}
					continue
				}
				for ep := uint32(1); ep <= endpoints; ep++ {
					if err := d.ApplyPolicyDelta(ep, to, from); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
