package apiserver

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/certs"
	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
)

// expectedState is what a full watch of kv must hold: read straight from etcd.
func expectedState(t *testing.T, kv *kvstore.Client) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	var out []string
	for _, prefix := range []string{identity.MasterPrefix, ipcachePrefix, nodesPrefix} {
		kvs, _, err := kv.List(ctx, prefix)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range kvs {
			switch prefix {
			case identity.MasterPrefix:
				id, _ := decodeIdentityKey(e.Key)
				out = append(out, fmt.Sprintf("identity/%d", id))
			case ipcachePrefix:
				p, _ := decodeIPCacheKey(e.Key)
				out = append(out, "ipcache/"+p)
			default:
				n, _ := decodeNodeKey(e.Key)
				out = append(out, "node/"+n)
			}
		}
	}
	slices.Sort(out)
	return out
}

func TestWatch_EtcdOutageAndRestartLoseAndRepeatNothing(t *testing.T) {
	etcd := etcdtest.StartRestartable(t)
	proxy := etcdtest.NewProxy(t, etcd)
	prefix := etcdtest.WithPrefix("restart/")
	writer := etcdtest.NewClient(t, etcd, prefix)
	served := etcdtest.NewClient(t, proxy, prefix)
	seed(t, writer)
	p := newPKI(t)
	srv := startServer(t, served, p, nil)
	client := dial(t, srv, p.source(t, p.ca, "cluster2", certs.RoleAgent), p.token(t, "cluster2"))
	w := openWatch(t, client, &apiv1.MeshWatchRequest{})
	w.recvUntil("initial sync", waitFor, func(m *mirror) bool { return m.synced })

	// The server loses etcd while the cluster changes and compacts the history it would need:
	// its watches must relist and send only the differences.
	proxy.Cut()
	putIdentity(t, writer, 2001, labels(t, "k8s:org=empire", "k8s:class=probe"))
	del(t, writer, identityKey(1002))
	putIPCache(t, writer, "10.100.1.1/32", 2001, "node1") // changed
	del(t, writer, ipKey("10.100.1.2/32"))
	putNode(t, writer, "node2", "192.168.0.2", "10.100.2.0/24")
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	_, rev, err := writer.List(ctx, "nothing/")
	if err != nil {
		t.Fatal(err)
	}
	if err := writer.Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	proxy.Restore()
	w.recvUntil("relisted differences", 3*waitFor, func(m *mirror) bool {
		return slices.Equal(m.keys(), []string{"identity/1001", "identity/2001", "ipcache/10.100.1.1/32", "node/node1", "node/node2"}) &&
			m.state["ipcache/10.100.1.1/32"] == "2001@node1"
	})

	// etcd itself restarts; the stream carries on.
	etcd.Stop()
	etcd.Restart()
	putIdentity(t, writer, 2002, labels(t, "k8s:org=empire", "k8s:class=interceptor"))
	del(t, writer, nodesPrefix+"node1")
	want := expectedState(t, writer)
	w.recvUntil("changes after the restart", 3*waitFor, func(m *mirror) bool { return slices.Equal(m.keys(), want) })
	if len(w.m.dupes) > 0 {
		t.Fatalf("duplicates or unknown deletes: %v", w.m.dupes)
	}
}

func TestHeartbeat_WrittenEveryInterval(t *testing.T) {
	kv := startEtcd(t)
	p := newPKI(t)
	srv := startServer(t, kv, p, func(o *Options) { o.HeartbeatInterval = 50 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	var seen []time.Time
	for len(seen) < 3 {
		kvp, found, err := kv.Get(ctx, HeartbeatKey)
		if err != nil {
			t.Fatal(err)
		}
		if found {
			ts, err := time.Parse(time.RFC3339Nano, string(kvp.Value))
			if err != nil {
				t.Fatalf("heartbeat %q: %v", kvp.Value, err)
			}
			if len(seen) == 0 || ts.After(seen[len(seen)-1]) {
				seen = append(seen, ts)
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("heartbeat written %d times", len(seen))
		}
		time.Sleep(20 * time.Millisecond)
	}
	client := dial(t, srv, p.source(t, p.ca, "cluster2", certs.RoleAgent), p.token(t, "cluster2"))
	info, err := client.Info(ctx, &apiv1.MeshInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if hb := info.Heartbeat.AsTime(); hb.Before(seen[0]) || time.Since(hb) > 5*time.Second {
		t.Fatalf("Info heartbeat %v, first seen %v", hb, seen[0])
	}
}

func TestGC_OneLeaderAmongReplicasAndTakeover(t *testing.T) {
	kv := startEtcd(t)
	p := newPKI(t)
	replica := func(name string) *Server {
		return startServer(t, kv, p, func(o *Options) {
			o.DisableGC = false
			o.ReplicaName = name
			o.ElectionTTL = 2 * time.Second
			o.GC.Interval = 100 * time.Millisecond
		})
	}
	a, b := replica("replica-a"), replica("replica-b")
	ctx, cancel := context.WithTimeout(context.Background(), 3*waitFor)
	defer cancel()

	leaderOf := func() (string, bool) {
		kvp, found, err := kv.Get(ctx, GCLeaderKey)
		if err != nil || !found {
			return "", false
		}
		return string(kvp.Value), true
	}
	waitLeader := func(want *Server, name string) {
		t.Helper()
		for {
			got, _ := leaderOf()
			if got == name && want.IsGCLeader() {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("leader key %q, want %s leading", got, name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	var leader, follower *Server
	var followerName string
	for leader == nil {
		switch {
		case a.IsGCLeader():
			leader, follower, followerName = a, b, "replica-b"
		case b.IsGCLeader():
			leader, follower, followerName = b, a, "replica-a"
		case ctx.Err() != nil:
			t.Fatal("no GC leader elected")
		default:
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Never two at once.
	for range 20 {
		if a.IsGCLeader() && b.IsGCLeader() {
			t.Fatal("both replicas lead the GC")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// The leader collects an identity nobody references (after two rounds).
	putIdentity(t, kv, 3001, labels(t, "k8s:org=empire", "k8s:class=garbage"))
	waitGone := func(id uint32) {
		t.Helper()
		for {
			_, found, err := kv.Get(ctx, identityKey(id))
			if err == nil && !found {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("identity %d not collected", id)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitGone(3001)

	// The leader stops: the other takes over well before the lease TTL, and collects.
	start := time.Now()
	if err := leader.Close(); err != nil {
		t.Fatal(err)
	}
	waitLeader(follower, followerName)
	t.Logf("takeover after %s", time.Since(start))
	putIdentity(t, kv, 3002, labels(t, "k8s:org=empire", "k8s:class=garbage2"))
	waitGone(3002)
}
