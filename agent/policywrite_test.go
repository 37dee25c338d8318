package agent

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/palisade-mesh/palisade/bpf"
	"github.com/palisade-mesh/palisade/internal/testenv"
)

func TestDiffEntries_SplitsByEffect(t *testing.T) {
	allow80 := bpf.PolicyEntry{Identity: 5, Direction: bpf.Ingress, Protocol: 6, Port: 80, EndPort: 80}
	allow443 := bpf.PolicyEntry{Identity: 5, Direction: bpf.Ingress, Protocol: 6, Port: 443, EndPort: 443}
	deny22 := bpf.PolicyEntry{Identity: 0, Direction: bpf.Ingress, Protocol: 6, Port: 22, EndPort: 22, Deny: true}
	deny23 := bpf.PolicyEntry{Identity: 0, Direction: bpf.Ingress, Protocol: 6, Port: 23, EndPort: 23, Deny: true}
	allow80Proxy := allow80
	allow80Proxy.ProxyPort = 15001
	allow443Denied := allow443
	allow443Denied.Deny = true

	cases := []struct {
		name     string
		old, new []bpf.PolicyEntry
		want     entryDiff
	}{
		{name: "unchanged", old: []bpf.PolicyEntry{allow80, deny22}, new: []bpf.PolicyEntry{allow80, deny22}},
		{
			name: "allow added, deny replaced",
			old:  []bpf.PolicyEntry{allow80, deny22},
			new:  []bpf.PolicyEntry{allow80, allow443, deny23},
			want: entryDiff{addDeny: []bpf.PolicyEntry{deny23}, addAllow: []bpf.PolicyEntry{allow443}, delDeny: []bpf.PolicyEntry{deny22}},
		},
		{
			name: "allow turned into deny is a tightening; proxy port change is an allow update",
			old:  []bpf.PolicyEntry{allow80, allow443},
			new:  []bpf.PolicyEntry{allow80Proxy, allow443Denied},
			want: entryDiff{addDeny: []bpf.PolicyEntry{allow443Denied}, addAllow: []bpf.PolicyEntry{allow80Proxy}},
		},
		{
			name: "unsorted, a key given twice: the last one wins",
			old:  []bpf.PolicyEntry{deny22, allow443, allow80},
			new:  []bpf.PolicyEntry{allow443, allow80Proxy, deny22, allow80},
		},
		{
			name: "removals",
			old:  []bpf.PolicyEntry{allow80, deny22},
			new:  nil,
			want: entryDiff{delAllow: []bpf.PolicyEntry{allow80}, delDeny: []bpf.PolicyEntry{deny22}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := diffEntries(c.old, c.new)
			for _, part := range []struct {
				name      string
				got, want []bpf.PolicyEntry
			}{
				{"addDeny", got.addDeny, c.want.addDeny},
				{"addAllow", got.addAllow, c.want.addAllow},
				{"delAllow", got.delAllow, c.want.delAllow},
				{"delDeny", got.delDeny, c.want.delDeny},
			} {
				slices.SortFunc(part.got, compareEntries)
				slices.SortFunc(part.want, compareEntries)
				if !slices.Equal(part.got, part.want) {
					t.Errorf("%s = %v, want %v", part.name, part.got, part.want)
				}
			}
		})
	}
}

func TestWritePolicy_BatchLeavesEachEndpointAtItsNewPolicyAndDefersOnlyTheCut(t *testing.T) {
	dp := testDatapath(t, "write")
	a := &Agent{dp: dp}

	allow := func(id uint32, port uint16) bpf.PolicyEntry {
		return bpf.PolicyEntry{Identity: id, Direction: bpf.Ingress, Protocol: bpf.ProtoTCP, Port: port}
	}
	deny := bpf.PolicyEntry{Identity: 0, Direction: bpf.Ingress, Protocol: bpf.ProtoTCP, Port: 22, Deny: true}
	egress := bpf.PolicyEntry{Direction: bpf.Egress}
	cases := []struct {
		ep       uint32
		old, new []bpf.PolicyEntry
		revokes  bool
	}{
		{ep: 1, old: nil, new: []bpf.PolicyEntry{egress, allow(300, 8080)}, revokes: true}, // first install
		{ep: 2, old: []bpf.PolicyEntry{egress, allow(300, 8080)}, new: []bpf.PolicyEntry{egress, allow(300, 8081)}, revokes: true},
		{ep: 3, old: []bpf.PolicyEntry{egress, allow(300, 8080)}, new: []bpf.PolicyEntry{egress, allow(300, 8080), allow(301, 8080)}},
		{ep: 4, old: []bpf.PolicyEntry{egress, deny, allow(300, 8080)}, new: []bpf.PolicyEntry{egress, allow(300, 8080)}},
		{ep: 5, old: []bpf.PolicyEntry{egress, allow(300, 8080)}, new: []bpf.PolicyEntry{egress, deny, allow(300, 8080)}, revokes: true},
	}
	for _, c := range cases {
		if c.old != nil {
			if err := dp.ReplacePolicy(c.ep, c.old); err != nil {
				t.Fatal(err)
			}
		}
	}
	b := dp.NewPolicyBatch()
	var wantPending []uint32
	for _, c := range cases {
		if err := a.writePolicy(b, c.ep, c.old, c.new); err != nil {
			t.Fatalf("endpoint %d: %v", c.ep, err)
		}
		if c.revokes {
			wantPending = append(wantPending, c.ep)
		}
	}
	if got := b.Pending(); !slices.Equal(got, wantPending) {
		t.Errorf("endpoints left to check for refused flows = %v, want %v (those whose change took something away)", got, wantPending)
	}
	if _, err := b.RevokeFlows(); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		stats, err := dp.Policy(c.ep)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, s := range stats {
			got = append(got, fmt.Sprintf("%s %d %d %d deny=%v", s.Direction, s.Identity, s.Protocol, s.Port, s.Deny))
		}
		var want []string
		for _, e := range c.new {
			want = append(want, fmt.Sprintf("%s %d %d %d deny=%v", e.Direction, e.Identity, e.Protocol, e.Port, e.Deny))
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("endpoint %d installed %v, want %v", c.ep, got, want)
		}
	}
}

// diffByMaps is the plain definition diffEntries must agree with.
func diffByMaps(old, new []bpf.PolicyEntry) entryDiff {
	last := func(es []bpf.PolicyEntry) map[bpf.PolicyEntry]bpf.PolicyEntry {
		m := make(map[bpf.PolicyEntry]bpf.PolicyEntry)
		for _, e := range es {
			m[entryKey(e)] = e
		}
		return m
	}
	o, n := last(old), last(new)
	var d entryDiff
	for k, e := range n {
		if prev, ok := o[k]; ok && prev == e {
			continue
		}
		if e.Deny {
			d.addDeny = append(d.addDeny, e)
		} else {
			d.addAllow = append(d.addAllow, e)
		}
	}
	for k, e := range o {
		if _, ok := n[k]; ok {
			continue
		}
		if e.Deny {
			d.delDeny = append(d.delDeny, e)
		} else {
			d.delAllow = append(d.delAllow, e)
		}
	}
	return d
}

func TestDiffEntries_AgreesWithMapsOnRandomPolicies(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	random := func() []bpf.PolicyEntry {
		es := make([]bpf.PolicyEntry, r.IntN(40))
		for i := range es {
			es[i] = bpf.PolicyEntry{
				Identity: uint32(r.IntN(4)), Direction: bpf.Direction(r.IntN(2)), Protocol: bpf.ProtoTCP,
				Port: uint16(80 + r.IntN(3)), Deny: r.IntN(4) == 0,
			}
			if !es[i].Deny && r.IntN(3) == 0 {
				es[i].ProxyPort = 15001
			}
		}
		if r.IntN(2) == 0 {
			slices.SortFunc(es, compareEntries) // the agent's own lists are sorted
		}
		return es
	}
	for i := 0; i < 2000; i++ {
		old, new := random(), random()
		got, want := diffEntries(old, new), diffByMaps(old, new)
		for _, part := range [][2][]bpf.PolicyEntry{
			{got.addDeny, want.addDeny}, {got.addAllow, want.addAllow}, {got.delAllow, want.delAllow}, {got.delDeny, want.delDeny},
		} {
			slices.SortFunc(part[0], compareEntries)
			slices.SortFunc(part[1], compareEntries)
			if !slices.Equal(part[0], part[1]) {
				t.Fatalf("diff of\n%v\n%v\n= %+v\nwant %+v", old, new, got, want)
			}
		}
	}
}

// testDatapath opens a datapath pinned under a name unique to this test process, removed when the
// test ends. It needs root.
func testDatapath(t *testing.T, name string) *bpf.Datapath {
	t.Helper()
	testenv.RequireRoot(t)
	dir := filepath.Join("/sys/fs/bpf", fmt.Sprintf("palisade-test-agent-%s-%d", name, os.Getpid()))
	dp, err := bpf.Open(bpf.Options{PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := dp.Remove(); err != nil {
			t.Errorf("remove datapath: %v", err)
		}
	})
	return dp
}
