package conformance

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/kvstore"
)

func runLeases(t *testing.T, srv Server) {
	tests := []struct {
		name string
		opts []func(*kvstore.Config)
		run  func(t *testing.T, c *kvstore.Client)
	}{
		{"RevokeDeletesKeys", nil, testLeaseRevoke},
		{"LeaseWithoutKeepAliveExpires", nil, testLeaseExpires},
		{"KeepAliveOnceExtends", nil, testLeaseKeepAliveOnce},
		{"BadTTLRefused", nil, testLeaseBadTTL},
		{"SessionRotatesAtMaxKeysAndKeepsAlive", []func(*kvstore.Config){maxKeys(3)}, testSessionRotates},
		{"SessionCloseRevokes", nil, testSessionClose},
		{"SessionOrphanLetsKeysExpire", nil, testSessionOrphan},
		{"SessionLostLeaseClosesDone", nil, func(t *testing.T, c *kvstore.Client) { testSessionLost(t, srv, c) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var opts []func(*kvstore.Config)
			opts = append(opts, tc.opts...)
			c := newClient(t, srv, withConfigs(opts)...)
			tc.run(t, c)
		})
	}
}

func maxKeys(n int) func(*kvstore.Config) { return func(c *kvstore.Config) { c.MaxKeysPerLease = n } }

// shortTTL is etcd's minimum lease TTL with its default election timeout (1s): 1.5 election
// timeouts, rounded up to whole seconds.
const shortTTL = 2 * time.Second

// waitGone waits until key is deleted (by its lease) and returns how long that took.
func waitGone(t *testing.T, c *kvstore.Client, key string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if _, found := mustGet(t, c, key); !found {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s still there %s later", key, within)
	return 0
}

func testLeaseRevoke(t *testing.T, c *kvstore.Client) {
	ctx := testContext(t)
	lease, err := c.GrantLease(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"l/a", "l/b"} {
		if err := c.Put(ctx, k, []byte("x"), lease); err != nil {
			t.Fatal(err)
		}
	}
	if kv, _ := mustGet(t, c, "l/a"); kv.Lease != lease {
		t.Fatalf("key lease %x, want %x", kv.Lease, lease)
	}
	if err := c.RevokeLease(ctx, lease); err != nil {
		t.Fatal(err)
	}
	kvs, _, err := c.List(ctx, "l/")
	if err != nil || len(kvs) != 0 {
		t.Fatalf("after revoke: %+v, %v", kvs, err)
	}
	if err := c.KeepAliveOnce(ctx, lease); !errors.Is(err, kvstore.ErrLeaseNotFound) {
		t.Fatalf("keep-alive of a revoked lease: %v, want ErrLeaseNotFound", err)
	}
	if err := c.RevokeLease(ctx, lease); !errors.Is(err, kvstore.ErrLeaseNotFound) {
		t.Fatalf("second revoke: %v, want ErrLeaseNotFound", err)
	}
	if _, err := c.LeaseTTL(ctx, lease); !errors.Is(err, kvstore.ErrLeaseNotFound) {
		t.Fatalf("ttl of a revoked lease: %v, want ErrLeaseNotFound", err)
	}
}

func testLeaseExpires(t *testing.T, c *kvstore.Client) {
	ctx := testContext(t)
	lease, err := c.GrantLease(ctx, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Put(ctx, "l/ephemeral", []byte("x"), lease); err != nil {
		t.Fatal(err)
	}
	mustPut(t, c, "l/durable", "y")
	took := waitGone(t, c, "l/ephemeral", 10*time.Second)
	t.Logf("lease of 1s (etcd minimum %s) expired after %s", shortTTL, took)
	if _, found := mustGet(t, c, "l/durable"); !found {
		t.Fatal("a key without lease went with the lease")
	}
}

func testLeaseKeepAliveOnce(t *testing.T, c *kvstore.Client) {
	ctx := testContext(t)
	// Renewing every second keeps a 3s lease (with 2s to spare for a loaded machine) well past its
	// TTL.
	const ttl = 3 * time.Second
	lease, err := c.GrantLease(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Put(ctx, "l/kept", []byte("x"), lease); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		time.Sleep(time.Second)
		if err := c.KeepAliveOnce(ctx, lease); err != nil {
			t.Fatalf("keep-alive: %v", err)
		}
	}
	if _, found := mustGet(t, c, "l/kept"); !found {
		t.Fatal("key of a renewed lease expired")
	}
	left, err := c.LeaseTTL(ctx, lease)
	if err != nil || left <= 0 || left > ttl {
		t.Fatalf("remaining ttl %s, %v", left, err)
	}
}

func testLeaseBadTTL(t *testing.T, c *kvstore.Client) {
	for _, ttl := range []time.Duration{0, -time.Second} {
		if _, err := c.GrantLease(testContext(t), ttl); err == nil {
			t.Errorf("grant lease of %s: no error", ttl)
		}
	}
	if _, err := c.NewSession(testContext(t), 100*time.Millisecond); err == nil {
		t.Error("session with a sub-second ttl: no error")
	}
}

func testSessionRotates(t *testing.T, c *kvstore.Client) {
	ctx := testContext(t)
	s, err := c.NewSession(ctx, shortTTL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(testContext(t)) })
	perLease := map[kvstore.LeaseID]int{}
	var order []kvstore.LeaseID
	for i := range 7 {
		lease, err := s.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if perLease[lease] == 0 {
			order = append(order, lease)
		}
		perLease[lease]++
		if err := c.Put(ctx, fmt.Sprintf("s/%d", i), []byte("x"), lease); err != nil {
			t.Fatal(err)
		}
	}
	if len(order) != 3 || perLease[order[0]] != 3 || perLease[order[1]] != 3 || perLease[order[2]] != 1 {
		t.Fatalf("7 keys with 3 per lease spread as %v over %v", perLease, order)
	}
	// A released slot on the first lease is used before the third fills up.
	s.Release(order[0])
	if lease, err := s.Acquire(ctx); err != nil || lease != order[0] {
		t.Fatalf("acquire after release: %x, %v; want %x", lease, err, order[0])
	}
	// Keep-alive holds every lease well past its TTL.
	time.Sleep(2*shortTTL + 500*time.Millisecond)
	kvs, _, err := c.List(ctx, "s/")
	if err != nil || len(kvs) != 7 {
		t.Fatalf("after 2 TTLs the session's keys are %d (%v), want 7", len(kvs), err)
	}
	select {
	case <-s.Done():
		t.Fatalf("session done while kept alive: %v", s.Err())
	default:
	}
}

func testSessionClose(t *testing.T, c *kvstore.Client) {
	ctx := testContext(t)
	s, err := c.NewSession(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	lease, err := s.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Put(ctx, "s/closed", []byte("x"), lease); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, found := mustGet(t, c, "s/closed"); found {
		t.Fatal("key of a closed session still there")
	}
	<-s.Done()
	if _, err := s.Acquire(ctx); !errors.Is(err, kvstore.ErrClosed) {
		t.Fatalf("acquire after close: %v, want ErrClosed", err)
	}
}

func testSessionOrphan(t *testing.T, c *kvstore.Client) {
	ctx := testContext(t)
	s, err := c.NewSession(ctx, shortTTL)
	if err != nil {
		t.Fatal(err)
	}
	lease, err := s.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Put(ctx, "s/orphan", []byte("x"), lease); err != nil {
		t.Fatal(err)
	}
	s.Orphan()
	<-s.Done()
	if _, found := mustGet(t, c, "s/orphan"); !found {
		t.Fatal("orphaning revoked the lease at once")
	}
	waitGone(t, c, "s/orphan", 10*time.Second)
}

func testSessionLost(t *testing.T, srv Server, c *kvstore.Client) {
	ctx := testContext(t)
	s, err := c.NewSession(ctx, shortTTL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(testContext(t)) })
	lease, err := s.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Someone else (an operator, a bug) revokes the lease: its keys are gone and the owner must know.
	other := newClient(t, srv)
	if err := other.RevokeLease(ctx, lease); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-time.After(3 * shortTTL):
		t.Fatalf("session not done %s after its lease was revoked", 3*shortTTL)
	}
	if err := s.Err(); !errors.Is(err, kvstore.ErrSessionExpired) {
		t.Fatalf("session error %v, want ErrSessionExpired", err)
	}
	if _, err := s.Acquire(ctx); !errors.Is(err, kvstore.ErrSessionExpired) {
		t.Fatalf("acquire on a lost session: %v, want ErrSessionExpired", err)
	}
}
