package ipam

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIPAM_SkipsNetworkGatewayAndBroadcast(t *testing.T) {
	m, err := Open(netip.MustParsePrefix("10.200.1.0/29"), filepath.Join(t.TempDir(), "ipam.json"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Gateway() != netip.MustParseAddr("10.200.1.1") {
		t.Fatalf("gateway = %s", m.Gateway())
	}
	var got []string
	for i := range 5 {
		a, err := m.Allocate("ep" + string(rune('a'+i)))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a.String())
	}
	if want := "10.200.1.2 10.200.1.3 10.200.1.4 10.200.1.5 10.200.1.6"; strings.Join(got, " ") != want {
		t.Fatalf("allocated %v, want %s", got, want)
	}
	if _, err := m.Allocate("one-too-many"); !errors.Is(err, ErrExhausted) {
		t.Fatalf("want ErrExhausted, got %v", err)
	}
	if err := m.Release(netip.MustParseAddr("10.200.1.4")); err != nil {
		t.Fatal(err)
	}
	a, err := m.Allocate("late")
	if err != nil || a != netip.MustParseAddr("10.200.1.4") {
		t.Fatalf("after release: %s, %v", a, err)
	}
}

func TestIPAM_StateSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "ipam.json")
	cidr := netip.MustParsePrefix("10.200.2.0/24")
	m, err := Open(cidr, path)
	if err != nil {
		t.Fatal(err)
	}
	a1, _ := m.Allocate("web")
	a2, _ := m.Allocate("db")
	if err := m.Release(a1); err != nil {
		t.Fatal(err)
	}

	again, err := Open(cidr, path)
	if err != nil {
		t.Fatal(err)
	}
	inUse := again.InUse()
	if len(inUse) != 1 || inUse[a2] != "db" {
		t.Fatalf("restored %v, want only %s=db", inUse, a2)
	}
	if err := again.Claim(a2, "other"); err == nil {
		t.Fatal("claimed an address held by another owner")
	}
	if err := again.Claim(a2, "db"); err != nil {
		t.Fatalf("re-claim by its owner: %v", err)
	}
	if _, err := Open(netip.MustParsePrefix("10.201.0.0/24"), path); err == nil {
		t.Fatal("state of another CIDR accepted")
	}
}

func TestIPAM_BadInput(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(netip.MustParsePrefix("fd00::/64"), filepath.Join(dir, "a")); err == nil {
		t.Error("IPv6 CIDR accepted")
	}
	if _, err := Open(netip.MustParsePrefix("10.0.0.0/31"), filepath.Join(dir, "b")); err == nil {
		t.Error("/31 accepted")
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(netip.MustParsePrefix("10.0.0.0/24"), bad); err == nil {
		t.Error("corrupt state accepted")
	}
	m, _ := Open(netip.MustParsePrefix("10.0.0.0/24"), filepath.Join(dir, "c"))
	if err := m.Claim(netip.MustParseAddr("10.0.0.1"), "x"); err == nil {
		t.Error("gateway claimable")
	}
	if err := m.Claim(netip.MustParseAddr("10.0.1.5"), "x"); err == nil {
		t.Error("address outside the CIDR claimable")
	}
}
