package conformance

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/kvstore"
)

func runWatch(t *testing.T, srv Server) {
	tests := []struct {
		name string
		run  func(t *testing.T, c *kvstore.Client)
	}{
		{"ListsThenSyncsThenFollows", testWatchListSyncFollow},
		{"EmptyPrefixSyncsAtOnce", testWatchEmpty},
		{"SeesOnlyItsPrefix", testWatchPrefixOnly},
		{"ClosesOnCancel", testWatchClosesOnCancel},
		{"ClosesOnClientClose", func(t *testing.T, _ *kvstore.Client) { testWatchClosesOnClientClose(t, srv) }},
		{"ManyWatchersAgreeWithStore", testWatchersAgree},
		{"TxnChangesArriveTogether", testWatchTxn},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, newClient(t, srv))
		})
	}
}

func testWatchListSyncFollow(t *testing.T, c *kvstore.Client) {
	mustPut(t, c, "w/b", "2")
	mustPut(t, c, "w/a", "1")
	mustPut(t, c, "elsewhere", "x")
	_, rev, err := c.List(testContext(t), "w/")
	if err != nil {
		t.Fatal(err)
	}
	v := watchView(t, c, "w/")
	initial := v.waitEvents(t, 3)
	if got, want := describe(initial), []string{"upsert w/a=1", "upsert w/b=2", "synced"}; !slices.Equal(got, want) {
		t.Fatalf("initial events %v, want %v", got, want)
	}
	if initial[2].Revision < rev {
		t.Fatalf("synced at revision %d, older than the listing before the watch (%d)", initial[2].Revision, rev)
	}

	mustPut(t, c, "w/c", "3")
	mustPut(t, c, "w/a", "4")
	if _, err := c.Delete(testContext(t), "w/b"); err != nil {
		t.Fatal(err)
	}
	mustPut(t, c, "w/a", "5")
	all := v.waitEvents(t, 7)
	if got, want := describe(all[3:]), []string{"upsert w/c=3", "upsert w/a=4", "delete w/b", "upsert w/a=5"}; !slices.Equal(got, want) {
		t.Fatalf("changes %v, want %v", got, want)
	}
	for i := 4; i < len(all); i++ {
		if all[i].Revision <= all[i-1].Revision {
			t.Fatalf("revisions not increasing: %s", formatEvents(all))
		}
	}
	v.waitEqualStore(t, c, "w/")
}

func testWatchEmpty(t *testing.T, c *kvstore.Client) {
	v := watchView(t, c, "nothing/")
	evs := v.waitEvents(t, 1)
	if evs[0].Type != kvstore.EventSynced || evs[0].Revision == 0 {
		t.Fatalf("first event of an empty prefix: %+v, want synced with a revision", evs[0])
	}
	mustPut(t, c, "nothing/now", "x")
	if got := describe(v.waitEvents(t, 2)); got[1] != "upsert nothing/now=x" {
		t.Fatalf("events %v", got)
	}
}

func testWatchPrefixOnly(t *testing.T, c *kvstore.Client) {
	v := watchView(t, c, "in/")
	v.waitSyncs(t, 1)
	mustPut(t, c, "in", "no")
	mustPut(t, c, "inx/a", "no")
	mustPut(t, c, "out/a", "no")
	mustPut(t, c, "in/a", "yes")
	if got := describe(v.waitEvents(t, 2)); !slices.Equal(got, []string{"synced", "upsert in/a=yes"}) {
		t.Fatalf("events %v: keys outside the prefix leaked in", got)
	}
}

func testWatchClosesOnCancel(t *testing.T, c *kvstore.Client) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := c.Watch(ctx, "x/")
	if ev := <-ch; ev.Type != kvstore.EventSynced {
		t.Fatalf("first event %+v", ev)
	}
	cancel()
	for range ch { // drains until closed; the test times out otherwise
	}
}

func testWatchClosesOnClientClose(t *testing.T, srv Server) {
	c := newClient(t, srv)
	v := watchView(t, c, "x/")
	v.waitSyncs(t, 1)
	s, err := c.NewSession(testContext(t), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	v.waitClosed(t)
	select {
	case <-s.Done():
	default:
		t.Fatal("session not done after its client closed") // Close waits for its keep-alives
	}
	if _, err := s.Acquire(testContext(t)); !errors.Is(err, kvstore.ErrClosed) {
		t.Fatalf("acquire after the client closed: %v, want ErrClosed", err)
	}
	// A watch on a closed client is closed at once.
	if _, ok := <-c.Watch(context.Background(), "x/"); ok {
		t.Fatal("watch on a closed client delivered an event")
	}
}

// testWatchersAgree runs several watchers, started at different moments, under a random writer.
func testWatchersAgree(t *testing.T, c *kvstore.Client) {
	rng := rand.New(rand.NewPCG(1, 2))
	write := func(n int) {
		for range n {
			key := fmt.Sprintf("r/%02d", rng.IntN(20))
			if rng.IntN(3) == 0 {
				if _, err := c.Delete(testContext(t), key); err != nil {
					t.Fatal(err)
				}
				continue
			}
			mustPut(t, c, key, fmt.Sprint(rng.Int()))
		}
	}
	var views []*view
	for range 4 {
		write(40)
		views = append(views, watchView(t, c, "r/"))
	}
	write(100)
	for i, v := range views {
		t.Run(fmt.Sprint("watcher", i), func(t *testing.T) { v.waitEqualStore(t, c, "r/") })
	}
}

func testWatchTxn(t *testing.T, c *kvstore.Client) {
	v := watchView(t, c, "t/")
	v.waitSyncs(t, 1)
	res, err := c.Txn(testContext(t), nil,
		[]kvstore.Op{kvstore.OpPut("t/a", []byte("1"), 0), kvstore.OpPut("t/b", []byte("2"), 0), kvstore.OpPut("u/c", []byte("3"), 0)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	evs := v.waitEvents(t, 3)[1:]
	got := describe(evs)
	slices.Sort(got)
	if !slices.Equal(got, []string{"upsert t/a=1", "upsert t/b=2"}) {
		t.Fatalf("txn events %v", got)
	}
	for i, ev := range evs {
		if ev.Revision != res.Revision {
			t.Fatalf("txn event at revision %d, txn at %d", ev.Revision, res.Revision)
		}
		if last := i == len(evs)-1; ev.EndOfRevision != last {
			t.Fatalf("event %d of the transaction's %d has EndOfRevision %v", i+1, len(evs), ev.EndOfRevision)
		}
	}
	// A lone put is a revision of its own.
	mustPut(t, c, "t/c", "3")
	if ev := v.waitEvents(t, 4)[3]; !ev.EndOfRevision {
		t.Fatalf("a single put's event %+v is not marked as the end of its revision", ev)
	}
}
