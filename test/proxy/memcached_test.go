package proxy_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/palisade-mesh/palisade/internal/testenv"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
	"github.com/palisade-mesh/palisade/monitor"
	"github.com/palisade-mesh/palisade/test/harness"
	"github.com/palisade-mesh/palisade/test/topology"
)

const memcachedPolicy = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: cache-public-writes
  namespace: default
spec:
  endpointSelector:
    matchLabels: {app: cache}
  ingress:
  - fromEndpoints:
    - matchLabels: {app: web}
    toPorts:
    - ports: [{port: "11211", protocol: TCP}]
      rules:
        l7proto: memcached
        l7:
        - command: readGroup
        - command: writeGroup
          keyPrefix: "public/"
`

// TestL7_MemcachedRealServerAndClient runs Debian's memcached in an endpoint and gomemcache in
// another: reads pass, writes only under public/, and a denied write leaves the client usable.
func TestL7_MemcachedRealServerAndClient(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "memcached", "apt-get install memcached")
	dir := etcdtest.SocketDir(t)
	etcd := etcdtest.StartRestartable(t)
	kv := etcd.Endpoints()[1]
	topo := topology.NewForTest(t, topology.Options{})
	n1 := topo.MustAddNode(t, "n1")
	a1 := harness.StartAgent(t, n1, "cluster1", 1, kv, dir)
	cacheNS, webNS := topo.MustAddNamespace(t, "cache"), topo.MustAddNamespace(t, "web")
	cache := a1.CreateEndpoint(t, cacheNS, "app=cache")
	a1.CreateEndpoint(t, webNS, "app=web")

	mc := cacheNS.Command(context.Background(), "memcached", "-l", "0.0.0.0", "-p", "11211", "-U", "0", "-u", "nobody", "-m", "64")
	if err := cacheNS.Start(mc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mc.Process.Kill(); _ = mc.Wait() })

	client := memcache.New(cache.IPv4 + ":11211")
	client.Timeout = 2 * time.Second
	client.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return webNS.DialContext(ctx, &net.Dialer{}, network, addr)
	}
	harness.WaitFor(t, 10*time.Second, "memcached to answer", func() bool {
		return client.Set(&memcache.Item{Key: "secret", Value: []byte("plans")}) == nil
	})

	pol := filepath.Join(t.TempDir(), "memcached.yaml")
	if err := os.WriteFile(pol, []byte(memcachedPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	l7 := harness.WatchMonitor(t, a1, "--type", "l7")
	harness.ImportPolicy(t, kv, pol)
	// Probe with a key of its own: writes before the policy lands succeed.
	harness.WaitFor(t, 20*time.Second, "writes outside public/ to be denied", func() bool {
		return client.Set(&memcache.Item{Key: "private/probe", Value: []byte("x")}) != nil
	})
	if err := client.Set(&memcache.Item{Key: "secret", Value: []byte("stolen")}); err == nil {
		t.Fatal("denied set succeeded")
	}
	if err := client.Set(&memcache.Item{Key: "public/landing", Value: []byte("bay 7")}); err != nil {
		t.Fatalf("allowed set: %v", err)
	}
	got, err := client.GetMulti([]string{"public/landing", "secret"})
	if err != nil || string(got["public/landing"].Value) != "bay 7" || string(got["secret"].Value) != "plans" {
		t.Fatalf("reads: %v %v (the denied set must not have reached the server)", got, err)
	}
	if err := client.Delete("secret"); err == nil || errors.Is(err, memcache.ErrCacheMiss) {
		t.Fatalf("denied delete: %v", err)
	}
	if err := client.Delete("public/landing"); err != nil {
		t.Fatalf("allowed delete: %v", err)
	}
	harness.WaitFor(t, 10*time.Second, "a memcached access-log event for the denied delete", func() bool {
		_ = client.Delete("secret")
		return l7.Seen(func(ev monitor.Event) bool {
			return ev.Verdict == "denied" && ev.L7 != nil && ev.L7.Protocol == "memcached" && ev.L7.Fields["cmd"] == "delete" && ev.L7.Fields["key"] == "secret"
		})
	})
}
