package kvstore

import (
	"strings"
	"testing"
)

func TestEndpointAddress(t *testing.T) {
	cases := []struct {
		ep, network, addr, serverName string
		secure, bad                   bool
	}{
		{ep: "http://127.0.0.1:2379", network: "tcp", addr: "127.0.0.1:2379", serverName: "127.0.0.1"},
		{ep: "https://etcd-1.example:2379/", network: "tcp", addr: "etcd-1.example:2379", serverName: "etcd-1.example", secure: true},
		{ep: "https://[::1]:2379", network: "tcp", addr: "[::1]:2379", serverName: "::1", secure: true},
		{ep: "unix:///run/palisade/etcd.sock", network: "unix", addr: "/run/palisade/etcd.sock", serverName: "etcd.sock"},
		{ep: "unixs:///run/etcd/localhost:2379", network: "unix", addr: "/run/etcd/localhost:2379", serverName: "localhost", secure: true},
		{ep: "unix://etcd.sock", network: "unix", addr: "etcd.sock", serverName: "etcd.sock"},
		{ep: "127.0.0.1:2379", bad: true},
		{ep: "http://127.0.0.1", bad: true},
		{ep: "http:///path", bad: true},
		{ep: "unix://", bad: true},
		{ep: "grpc://127.0.0.1:2379", bad: true},
		{ep: "", bad: true},
	}
	for _, tc := range cases {
		network, addr, secure, err := endpointAddress(tc.ep)
		if tc.bad {
			if err == nil || !strings.Contains(err.Error(), tc.ep) {
				t.Errorf("%q: error %v, want one naming the endpoint", tc.ep, err)
			}
			continue
		}
		if err != nil || network != tc.network || addr != tc.addr || secure != tc.secure {
			t.Errorf("%q: %s %s %v %v", tc.ep, network, addr, secure, err)
			continue
		}
		if got := serverName(tc.ep, addr); got != tc.serverName {
			t.Errorf("%q: server name %q, want %q", tc.ep, got, tc.serverName)
		}
	}
}

// FuzzEndpointAddress: endpoints come from flags and config files; whatever they hold, parsing
// must not panic, and an accepted endpoint has an address to dial.
func FuzzEndpointAddress(f *testing.F) {
	for _, seed := range []string{"http://127.0.0.1:2379", "https://[::1]:2379/x", "unix:///a/b.sock", "unixs://x:1", "http://", "://", "unix:///"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, ep string) {
		network, addr, _, err := endpointAddress(ep)
		cfgErr := Config{Endpoints: []string{ep}}.validate()
		if (err == nil) != (cfgErr == nil) {
			t.Fatalf("endpointAddress and Config.validate disagree on %q: %v / %v", ep, err, cfgErr)
		}
		if err != nil {
			return
		}
		if addr == "" || (network != "tcp" && network != "unix") {
			t.Fatalf("%q accepted as %s %q", ep, network, addr)
		}
		_ = serverName(ep, addr)
	})
}
