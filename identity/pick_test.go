package identity

import (
	"strings"
	"testing"
)

func TestNewIDRange(t *testing.T) {
	cases := []struct {
		name             string
		layout           Layout
		cluster          uint32
		min, max         uint32
		wantMin, wantMax uint32
		wantErr          string
	}{
		{name: "defaults: the whole local range", layout: DefaultLayout, cluster: 1, wantMin: 256, wantMax: 65535},
		{name: "511 clusters: half the local range", layout: Layout{511}, cluster: 300, wantMin: 256, wantMax: 32767},
		{name: "narrowed", layout: DefaultLayout, cluster: 7, min: 1000, max: 1009, wantMin: 1000, wantMax: 1009},
		{name: "cluster 0", layout: DefaultLayout, cluster: 0, wantErr: "cluster ID 0 out of range 1..255"},
		{name: "cluster 300 with 255 clusters", layout: DefaultLayout, cluster: 300, wantErr: "cluster ID 300 out of range 1..255"},
		{name: "min below 256", layout: DefaultLayout, cluster: 1, min: 10, max: 300, wantErr: "must lie within 256..65535"},
		{name: "max above layout", layout: Layout{511}, cluster: 1, min: 256, max: 40000, wantErr: "must lie within 256..32767"},
		{name: "empty", layout: DefaultLayout, cluster: 1, min: 500, max: 400, wantErr: "not be empty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := newIDRange(c.layout, c.cluster, c.min, c.max)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.min != c.wantMin || r.max != c.wantMax {
				t.Fatalf("range %d..%d, want %d..%d", r.min, r.max, c.wantMin, c.wantMax)
			}
			first, last := r.at(r.min), r.at(r.max)
			if !r.contains(first) || !r.contains(last) || r.contains(first-1) || r.contains(last+1) {
				t.Fatalf("contains is wrong at the edges of %s", r)
			}
			if c.layout.ClusterOf(first) != c.cluster {
				t.Fatalf("ClusterOf(%d) = %d", first, c.layout.ClusterOf(first))
			}
		})
	}
}

func TestPickFree_FindsEveryFreeNumber(t *testing.T) {
	r, err := newIDRange(DefaultLayout, 3, 256, 265)
	if err != nil {
		t.Fatal(err)
	}
	taken := map[ID]bool{}
	for range r.size() {
		id, ok := pickFree(r, func(id ID) bool { return taken[id] })
		if !ok {
			t.Fatalf("no free number with %d of %d taken", len(taken), r.size())
		}
		if taken[id] || !r.contains(id) {
			t.Fatalf("picked %d: taken or outside %s", id, r)
		}
		taken[id] = true
	}
	if id, ok := pickFree(r, func(id ID) bool { return taken[id] }); ok {
		t.Fatalf("picked %d from a full range", id)
	}
}

func TestPickFree_SpreadsConcurrentPicks(t *testing.T) {
	r, err := newIDRange(DefaultLayout, 1, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	// 32 nodes picking with the same (empty) view must rarely choose the same number.
	seen := map[ID]bool{}
	for range 32 {
		id, _ := pickFree(r, func(ID) bool { return false })
		seen[id] = true
	}
	if len(seen) < 28 {
		t.Fatalf("32 picks gave only %d distinct numbers", len(seen))
	}
}
