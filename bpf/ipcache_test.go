package bpf

import (
	"net/netip"
	"testing"
)

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func mustAddr(s string) netip.Addr     { return netip.MustParseAddr(s) }

func TestIPCache_LongestPrefixWins(t *testing.T) {
	d := openTest(t, Options{})
	for p, id := range map[string]uint32{"10.0.0.0/8": 256, "10.1.0.0/16": 257, "10.1.2.3/32": 258} {
		if err := d.UpsertIPCache(mustPrefix(p), id); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		addr string
		want uint32
	}{
		{"10.1.2.3", 258}, {"10.1.2.4", 257}, {"10.2.0.1", 256}, {"192.0.2.1", IdentityWorld},
	}
	for _, c := range cases {
		got, err := d.LookupIPCache(mustAddr(c.addr))
		if err != nil || got != c.want {
			t.Errorf("identity of %s = %d, %v; want %d", c.addr, got, err, c.want)
		}
	}
	if err := d.DeleteIPCache(mustPrefix("10.1.0.0/16")); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.LookupIPCache(mustAddr("10.1.2.4")); got != 256 {
		t.Errorf("after deleting /16, identity = %d, want 256", got)
	}
	if err := d.DeleteIPCache(mustPrefix("10.1.0.0/16")); err != nil {
		t.Errorf("deleting an absent prefix: %v", err)
	}
	all, err := d.IPCache()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[mustPrefix("10.1.2.3/32")] != 258 {
		t.Errorf("IPCache() = %v", all)
	}
}

func TestIPCache_RejectsBadInput(t *testing.T) {
	d := openTest(t, Options{})
	if err := d.UpsertIPCache(mustPrefix("10.0.0.0/8"), 0); err == nil {
		t.Error("identity 0 accepted")
	}
	if err := d.UpsertIPCache(mustPrefix("2001:db8::/32"), 300); err == nil {
		t.Error("IPv6 prefix accepted")
	}
	if err := d.UpsertIPCache(netip.Prefix{}, 300); err == nil {
		t.Error("invalid prefix accepted")
	}
	if all, _ := d.IPCache(); len(all) != 0 {
		t.Errorf("rejected input changed the ipcache: %v", all)
	}
}
