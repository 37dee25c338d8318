package identity

import "testing"

func TestLayout_ClusterScoped(t *testing.T) {
	cases := []struct {
		name    string
		layout  Layout
		cluster uint32
		n       uint32
		want    ID
		wantErr bool
	}{
		{"first of cluster 1", DefaultLayout, 1, 256, 1<<16 | 256, false},
		{"last of cluster 255", DefaultLayout, 255, 65535, 255<<16 | 65535, false},
		{"cluster 0", DefaultLayout, 0, 256, 0, true},
		{"cluster 256 in 255 mode", DefaultLayout, 256, 256, 0, true},
		{"local part in reserved range", DefaultLayout, 1, 255, 0, true},
		{"cluster 511 in 511 mode", Layout{511}, 511, 32767, 511<<15 | 32767, false},
		{"local part too big in 511 mode", Layout{511}, 3, 32768, 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.layout.ClusterScoped(c.cluster, c.n)
			if (err != nil) != c.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, c.wantErr)
			}
			if err != nil {
				return
			}
			if got != c.want {
				t.Fatalf("got %d, want %d", got, c.want)
			}
			if k := c.layout.KindOf(got); k != KindCluster {
				t.Fatalf("KindOf = %v", k)
			}
			if cl := c.layout.ClusterOf(got); cl != c.cluster {
				t.Fatalf("ClusterOf = %d, want %d", cl, c.cluster)
			}
			if lp := c.layout.LocalPart(got); lp != c.n {
				t.Fatalf("LocalPart = %d, want %d", lp, c.n)
			}
		})
	}
}

func TestLayout_KindOf(t *testing.T) {
	cidr, err := LocalCIDR(7)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		id   ID
		want Kind
	}{
		{0, KindUnknown},
		{IDHost, KindReserved},
		{IDWorldIPv6, KindReserved},
		{11, KindInvalid},
		{300, KindInvalid}, // cluster 0
		{2<<16 | 100, KindInvalid},
		{2<<16 | 300, KindCluster},
		{cidr, KindLocalCIDR},
		{LocalCIDRFlag, KindInvalid},
		{1 << 25, KindInvalid},
	}
	for _, c := range cases {
		if got := DefaultLayout.KindOf(c.id); got != c.want {
			t.Errorf("KindOf(%d) = %v, want %v", c.id, got, c.want)
		}
	}
	if _, err := LocalCIDR(0); err == nil {
		t.Error("LocalCIDR(0) accepted")
	}
}

func TestNewLayout(t *testing.T) {
	for _, n := range []int{255, 511} {
		if _, err := NewLayout(n); err != nil {
			t.Errorf("NewLayout(%d): %v", n, err)
		}
	}
	for _, n := range []int{0, 256, 1023} {
		if _, err := NewLayout(n); err == nil {
			t.Errorf("NewLayout(%d) accepted", n)
		}
	}
	if got := (Layout{511}).MaxClusterID(); got != 511 {
		t.Errorf("MaxClusterID = %d", got)
	}
}

func TestReservedNames(t *testing.T) {
	for _, id := range ReservedIDs() {
		back, err := ParseID(id.String())
		if err != nil || back != id {
			t.Errorf("ParseID(%q) = %d, %v; want %d", id.String(), back, err, id)
		}
		ls, ok := ReservedLabels(id)
		if !ok || len(ls) != 1 || ls[0].Source != SourceReserved {
			t.Errorf("ReservedLabels(%d) = %v", id, ls)
		}
	}
	if id, err := ParseID("65792"); err != nil || id != 65792 {
		t.Errorf("ParseID number: %d %v", id, err)
	}
	if _, err := ParseID("deathstar"); err == nil {
		t.Error("ParseID accepted a bogus name")
	}
}
