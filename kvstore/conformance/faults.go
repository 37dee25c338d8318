package conformance

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
	"github.com/prometheus/client_golang/prometheus"
)

func runFaults(t *testing.T, shared Server, start Target) {
	// Not in parallel with the compaction below: a compaction would turn its resume into a relist.
	t.Run("LostConnectionResumesWithoutLoss", func(t *testing.T) { testLostConnection(t, shared) })
	t.Run("ListRetriesUntilServerReachable", func(t *testing.T) {
		t.Parallel()
		testListRetries(t, shared)
	})
	t.Run("CompactionBehindWatcherRelistsOnlyDifferences", func(t *testing.T) {
		t.Parallel()
		testCompactionBehindWatcher(t, shared)
	})
	t.Run("ServerRestartMidWatch", func(t *testing.T) {
		t.Parallel()
		testServerRestart(t, start(t))
	})
}

// resyncs reads palisade_kvstore_watch_resyncs_total{reason} from reg.
func resyncs(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "palisade_kvstore_watch_resyncs_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// awayChanges changes the store under "f/" in every way a returning watcher must notice, and in
// ways it must not report (a key created and deleted while it was away).
func awayChanges(t *testing.T, c *kvstore.Client) {
	t.Helper()
	ctx := testContext(t)
	mustPut(t, c, "f/k1", "changed")
	if _, err := c.Delete(ctx, "f/k2"); err != nil {
		t.Fatal(err)
	}
	mustPut(t, c, "f/k7", "new")
	mustPut(t, c, "f/k8", "ephemeral")
	if _, err := c.Delete(ctx, "f/k8"); err != nil {
		t.Fatal(err)
	}
	// Deleted and re-created with the same value: a new key as far as revisions go.
	if _, err := c.Delete(ctx, "f/k3"); err != nil {
		t.Fatal(err)
	}
	mustPut(t, c, "f/k3", "v3")
}

func putInitial(t *testing.T, c *kvstore.Client) {
	t.Helper()
	for i := 1; i <= 6; i++ {
		mustPut(t, c, fmt.Sprintf("f/k%d", i), fmt.Sprintf("v%d", i))
	}
}

func compactNow(t *testing.T, c *kvstore.Client) {
	t.Helper()
	_, rev, err := c.List(testContext(t), "f/")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Compact(testContext(t), rev); err != nil {
		t.Fatal(err)
	}
}

func testCompactionBehindWatcher(t *testing.T, srv Server) {
	writer := newClient(t, srv)
	putInitial(t, writer)
	proxy := etcdtest.NewProxy(t, srv)
	reg := prometheus.NewRegistry()
	watcher := newClient(t, proxy, etcdtest.WithRegisterer(reg))
	v := watchView(t, watcher, "f/")
	v.waitSyncs(t, 1)
	before := len(v.snapshotEvents())

	proxy.Cut()
	awayChanges(t, writer)
	compactNow(t, writer)
	proxy.Restore()

	v.waitSyncs(t, 2)
	v.waitEqualStore(t, writer, "f/")
	got := describe(v.snapshotEvents()[before:])
	want := []string{"upsert f/k1=changed", "upsert f/k3=v3", "upsert f/k7=new", "delete f/k2", "synced"}
	if !slices.Equal(got, want) {
		t.Fatalf("events after the compaction: %v, want exactly %v", got, want)
	}
	if n := resyncs(t, reg, "compacted"); n != 1 {
		t.Fatalf("compacted resyncs %v, want 1", n)
	}
	// And the watch goes on live.
	mustPut(t, writer, "f/k9", "after")
	v.waitEqualStore(t, writer, "f/")
}

func testLostConnection(t *testing.T, srv Server) {
	writer := newClient(t, srv)
	putInitial(t, writer)
	proxy := etcdtest.NewProxy(t, srv)
	watcher := newClient(t, proxy)
	v := watchView(t, watcher, "f/")
	v.waitSyncs(t, 1)
	before := len(v.snapshotEvents())

	proxy.Cut()
	for i := range 3 {
		mustPut(t, writer, "f/k1", fmt.Sprint("step", i))
	}
	if _, err := writer.Delete(testContext(t), "f/k2"); err != nil {
		t.Fatal(err)
	}
	proxy.Restore()

	v.waitEqualStore(t, writer, "f/")
	got := describe(v.snapshotEvents()[before:])
	// Without a compaction the stream resumes where it stopped: every intermediate value arrives.
	want := []string{"upsert f/k1=step0", "upsert f/k1=step1", "upsert f/k1=step2", "delete f/k2"}
	if !slices.Equal(got, want) {
		t.Fatalf("events after reconnecting: %v, want exactly %v", got, want)
	}
}

func testServerRestart(t *testing.T, srv Server) {
	writer := newClient(t, srv)
	putInitial(t, writer)
	direct := watchView(t, newClient(t, srv), "f/")
	proxy := etcdtest.NewProxy(t, srv)
	reg := prometheus.NewRegistry()
	behind := watchView(t, newClient(t, proxy, etcdtest.WithRegisterer(reg)), "f/")
	direct.waitSyncs(t, 1)
	behind.waitSyncs(t, 1)

	impatient := newClient(t, srv, etcdtest.WithConfig(func(c *kvstore.Config) { c.RequestTimeout = 500 * time.Millisecond }))

	// Round 1: the server goes away and comes back; the watcher reconnects by itself.
	srv.Stop()
	statusWhileDown(t, writer)
	opsWhileDown(t, impatient)
	srv.Restart()
	awayChanges(t, writer)
	direct.waitEqualStore(t, writer, "f/")
	behind.waitEqualStore(t, writer, "f/")

	// Round 2: one watcher is also cut off while the server restarts and the store changes and is
	// compacted behind it.
	proxy.Cut()
	srv.Stop()
	srv.Restart()
	mustPut(t, writer, "f/k4", "round2")
	if _, err := writer.DeletePrefix(testContext(t), "f/k5"); err != nil {
		t.Fatal(err)
	}
	compactNow(t, writer)
	proxy.Restore()
	direct.waitEqualStore(t, writer, "f/")
	behind.waitEqualStore(t, writer, "f/")
	if n := resyncs(t, reg, "compacted"); n < 1 {
		t.Fatalf("the cut-off watcher did not relist after the compaction (compacted resyncs %v)", n)
	}
	if got := behind.keys(); !slices.Equal(got, []string{"f/k1", "f/k3", "f/k4", "f/k6", "f/k7"}) {
		t.Fatalf("final keys %v", got)
	}
}

// statusWhileDown checks that Status reports an unreachable server, and does so in bounded time.
func statusWhileDown(t *testing.T, c *kvstore.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatalf("status while down: %v", err)
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Fatalf("status while down took %s", took)
	}
	if st.Healthy || st.Error == "" || len(st.Endpoints) != 1 || st.Endpoints[0].Reachable || st.Endpoints[0].Error == "" {
		t.Fatalf("status while down: %+v", st)
	}
}

// testListRetries starts a watch while its client cannot reach etcd: the listing fails (the
// request timeout is short) and is retried until the connection comes back.
func testListRetries(t *testing.T, srv Server) {
	writer := newClient(t, srv)
	putInitial(t, writer)
	proxy := etcdtest.NewProxy(t, srv)
	reg := prometheus.NewRegistry()
	watcher := newClient(t, proxy, etcdtest.WithRegisterer(reg),
		etcdtest.WithConfig(func(c *kvstore.Config) { c.RequestTimeout = 300 * time.Millisecond }))
	proxy.Cut()
	v := watchView(t, watcher, "f/")
	awayChanges(t, writer)
	// Wait for a failed listing, proof that the watch really started while cut off.
	deadline := time.Now().Add(10 * time.Second)
	for gatherOperationErrors(t, reg, "list") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no failed listing 10s after starting the watch behind a cut connection")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if evs := v.snapshotEvents(); len(evs) != 0 {
		t.Fatalf("events while no listing could succeed: %s", formatEvents(evs))
	}
	proxy.Restore()
	v.waitSyncs(t, 1)
	v.waitEqualStore(t, writer, "f/")
}

func gatherOperationErrors(t *testing.T, reg *prometheus.Registry, op string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "palisade_kvstore_operation_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "operation" && l.GetValue() == op {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// opsWhileDown checks that operations without a deadline of their own fail within the client's
// request timeout while etcd is away, instead of hanging.
func opsWhileDown(t *testing.T, c *kvstore.Client) {
	t.Helper()
	ctx := context.Background()
	ops := map[string]func() error{
		"put":  func() error { return c.Put(ctx, "f/down", []byte("x"), kvstore.NoLease) },
		"get":  func() error { _, _, err := c.Get(ctx, "f/k1"); return err },
		"txn":  func() error { _, err := c.Txn(ctx, []kvstore.Cmp{kvstore.KeyMissing("f/down")}, nil, nil); return err },
		"list": func() error { _, _, err := c.List(ctx, "f/"); return err },
	}
	for name, op := range ops {
		start := time.Now()
		err := op()
		if err == nil {
			t.Errorf("%s while etcd is down: no error", name)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("%s while etcd is down took %s (request timeout 500ms)", name, took)
		}
	}
}
