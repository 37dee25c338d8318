package bpf

import (
	"os"
	"testing"
)

func TestAttachEndpoint_RejectsBadConfig(t *testing.T) {
	d := openTest(t, Options{})
	cases := map[string]EndpointConfig{
		"zero ID":         {IfIndex: 1, IPv4: mustAddr("10.0.0.1")},
		"no interface":    {ID: 1, IPv4: mustAddr("10.0.0.1")},
		"IPv6 address":    {ID: 1, IfIndex: 1, IPv4: mustAddr("2001:db8::1")},
		"unknown name":    {ID: 1, IfName: "nonexistent0", IPv4: mustAddr("10.0.0.1")},
		"missing netns":   {ID: 1, IfIndex: 1, IPv4: mustAddr("10.0.0.1"), NetnsPath: "/nonexistent/netns"},
		"unknown ifindex": {ID: 1, IfIndex: 1 << 30, IPv4: mustAddr("10.0.0.1")},
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			if err := d.AttachEndpoint(cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	eps, err := d.Endpoints()
	if err != nil || len(eps) != 0 {
		t.Fatalf("failed attachments left endpoints behind: %+v, %v", eps, err)
	}
	if entries, _ := os.ReadDir(d.endpointsDir); len(entries) != 0 {
		t.Fatalf("failed attachments left pins behind: %v", entries)
	}
}

func TestAttachEndpoint_FailureKeepsInstalledPolicy(t *testing.T) {
	d := openTest(t, Options{})
	if err := d.ReplacePolicy(4, []PolicyEntry{{Direction: Egress}}); err != nil {
		t.Fatal(err)
	}
	if err := d.AttachEndpoint(EndpointConfig{ID: 4, IfIndex: 1 << 30, IPv4: mustAddr("10.0.0.4")}); err == nil {
		t.Fatal("attach to a missing interface succeeded")
	}
	if p, err := d.Policy(4); err != nil || len(p) != 1 {
		t.Fatalf("policy after failed attach = %+v, %v; want it kept", p, err)
	}
}
