package agent

import (
	"slices"
	"testing"

	"github.com/palisade-mesh/palisade/bpf"
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
