package kvstore_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
)

// TestClient_CloseLeavesNoGoroutines: watches, sessions and the connection all belong to the
// client and are gone once Close returns (give or take gRPC's own goroutines winding down).
func TestClient_CloseLeavesNoGoroutines(t *testing.T) {
	srv := etcdtest.Start(t)
	// Let the server's goroutines settle, with one client having come and gone.
	warm := etcdtest.NewClient(t, srv)
	warm.Close()
	time.Sleep(200 * time.Millisecond)
	baseline := runtime.NumGoroutine()

	c := etcdtest.NewClient(t, srv)
	ctx := context.Background()
	for range 10 {
		ch := c.Watch(ctx, "g/")
		<-ch // synced
	}
	s, err := c.NewSession(ctx, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := s.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if during := runtime.NumGoroutine(); during <= baseline+10 {
		t.Fatalf("goroutines with 10 watches and a session: %d, baseline %d: the test measures nothing", during, baseline)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines 5s after Close, baseline %d:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
