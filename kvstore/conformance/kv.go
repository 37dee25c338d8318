package conformance

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/palisade-mesh/palisade/kvstore"
)

func runKV(t *testing.T, srv Server) {
	tests := []struct {
		name string
		run  func(t *testing.T, c *kvstore.Client)
	}{
		{"GetAbsentIsNotFound", testGetAbsent},
		{"PutThenGetRoundTrips", testPutGet},
		{"ListSortedByKeyWithinPrefix", testList},
		{"PrefixesIsolateClients", func(t *testing.T, c *kvstore.Client) { testPrefixIsolation(t, srv, c) }},
		{"DeleteReportsExistence", testDelete},
		{"DeletePrefixCountsAndRefusesEmpty", testDeletePrefix},
		{"CreateOnlyNeverOverwrites", testCreateOnly},
		{"CreateOnlyRaceHasOneWinner", testCreateOnlyRace},
		{"CompareAndSwapNeedsCurrentRevision", testCompareAndSwap},
		{"CompareAndDeleteNeedsCurrentRevision", testCompareAndDelete},
		{"TxnRunsThenOrElse", testTxn},
		{"BadInputIsRefusedAndChangesNothing", testBadInput},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, newClient(t, srv))
		})
	}
}

func mustPut(t *testing.T, c *kvstore.Client, key, value string) {
	t.Helper()
	if err := c.Put(testContext(t), key, []byte(value), kvstore.NoLease); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func mustGet(t *testing.T, c *kvstore.Client, key string) (kvstore.KeyValue, bool) {
	t.Helper()
	kv, found, err := c.Get(testContext(t), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return kv, found
}

func testGetAbsent(t *testing.T, c *kvstore.Client) {
	kv, found := mustGet(t, c, "nothing/here")
	if found {
		t.Fatalf("get absent key: found %+v", kv)
	}
}

func testPutGet(t *testing.T, c *kvstore.Client) {
	mustPut(t, c, "a", "one")
	first, found := mustGet(t, c, "a")
	if !found || first.Key != "a" || string(first.Value) != "one" || first.Lease != kvstore.NoLease {
		t.Fatalf("get after put: %+v found=%v", first, found)
	}
	if first.CreateRevision == 0 || first.ModRevision != first.CreateRevision {
		t.Fatalf("fresh key revisions: create %d mod %d", first.CreateRevision, first.ModRevision)
	}
	mustPut(t, c, "a", "two")
	second, _ := mustGet(t, c, "a")
	if string(second.Value) != "two" || second.ModRevision <= first.ModRevision || second.CreateRevision != first.CreateRevision {
		t.Fatalf("overwrite: %+v after %+v", second, first)
	}
	// Binary values and empty values are values like any other.
	bin := []byte{0, 0xff, '\n', 0}
	if err := c.Put(testContext(t), "bin", bin, kvstore.NoLease); err != nil {
		t.Fatal(err)
	}
	if kv, _ := mustGet(t, c, "bin"); !bytes.Equal(kv.Value, bin) {
		t.Fatalf("binary value: got %q want %q", kv.Value, bin)
	}
	mustPut(t, c, "empty", "")
	if kv, found := mustGet(t, c, "empty"); !found || len(kv.Value) != 0 {
		t.Fatalf("empty value: %+v found=%v", kv, found)
	}
}

func testList(t *testing.T, c *kvstore.Client) {
	for _, k := range []string{"nodes/c", "nodes/a", "nodes/b", "nodesx", "other/a"} {
		mustPut(t, c, k, "v-"+k)
	}
	kvs, rev, err := c.List(testContext(t), "nodes/")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	var maxMod int64
	for _, kv := range kvs {
		keys = append(keys, kv.Key)
		if string(kv.Value) != "v-"+kv.Key {
			t.Errorf("value of %s: %q", kv.Key, kv.Value)
		}
		maxMod = max(maxMod, kv.ModRevision)
	}
	if got, want := strings.Join(keys, ","), "nodes/a,nodes/b,nodes/c"; got != want {
		t.Fatalf("list nodes/: keys %s, want %s", got, want)
	}
	if rev < maxMod {
		t.Fatalf("list revision %d is older than its content (mod revision %d)", rev, maxMod)
	}
	all, _, err := c.List(testContext(t), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 5 {
		t.Fatalf("list of the whole prefix: %d keys, want 5", len(all))
	}
	none, _, err := c.List(testContext(t), "missing/")
	if err != nil || len(none) != 0 {
		t.Fatalf("list of an empty prefix: %v, %v", none, err)
	}
}

func testPrefixIsolation(t *testing.T, srv Server, c *kvstore.Client) {
	other := newClient(t, srv, func(cfg *kvstore.Config) { cfg.Prefix = c.Prefix() + "nested/" })
	mustPut(t, other, "k", "from other")
	kv, found := mustGet(t, c, "nested/k")
	if !found || string(kv.Value) != "from other" {
		t.Fatalf("parent prefix sees nested key as %+v found=%v", kv, found)
	}
	mustPut(t, c, "k", "mine")
	if kv, _ := mustGet(t, other, "k"); string(kv.Value) != "from other" {
		t.Fatalf("clients with different prefixes share key k: %q", kv.Value)
	}
	kvs, _, err := other.List(testContext(t), "")
	if err != nil || len(kvs) != 1 || kvs[0].Key != "k" {
		t.Fatalf("nested client lists %+v, %v; want only k", kvs, err)
	}
}

func testDelete(t *testing.T, c *kvstore.Client) {
	mustPut(t, c, "d", "x")
	for i, want := range []bool{true, false} {
		deleted, err := c.Delete(testContext(t), "d")
		if err != nil || deleted != want {
			t.Fatalf("delete #%d: deleted=%v err=%v, want %v", i+1, deleted, err, want)
		}
	}
	if _, found := mustGet(t, c, "d"); found {
		t.Fatal("key still there after delete")
	}
}

func testDeletePrefix(t *testing.T, c *kvstore.Client) {
	for _, k := range []string{"p/1", "p/2", "p/3", "q/1"} {
		mustPut(t, c, k, "x")
	}
	n, err := c.DeletePrefix(testContext(t), "p/")
	if err != nil || n != 3 {
		t.Fatalf("delete prefix p/: %d, %v; want 3", n, err)
	}
	if _, err := c.DeletePrefix(testContext(t), ""); !errors.Is(err, kvstore.ErrEmptyKey) {
		t.Fatalf("delete of the empty prefix: %v, want ErrEmptyKey", err)
	}
	if _, found := mustGet(t, c, "q/1"); !found {
		t.Fatal("q/1 deleted by a refused empty-prefix delete or by p/")
	}
}

func testCreateOnly(t *testing.T, c *kvstore.Client) {
	ctx := testContext(t)
	created, err := c.CreateOnly(ctx, "once", []byte("first"), kvstore.NoLease)
	if err != nil || !created {
		t.Fatalf("first create: %v, %v", created, err)
	}
	created, err = c.CreateOnly(ctx, "once", []byte("second"), kvstore.NoLease)
	if err != nil || created {
		t.Fatalf("second create: %v, %v; want false", created, err)
	}
	if kv, _ := mustGet(t, c, "once"); string(kv.Value) != "first" {
		t.Fatalf("value after refused create: %q", kv.Value)
	}
}

func testCreateOnlyRace(t *testing.T, c *kvstore.Client) {
	const racers = 8
	var wg sync.WaitGroup
	wins := make(chan string, racers)
	for i := range racers {
		wg.Go(func() {
			me := fmt.Sprintf("racer-%d", i)
			created, err := c.CreateOnly(testContext(t), "contested", []byte(me), kvstore.NoLease)
			if err != nil {
				t.Errorf("%s: %v", me, err)
			}
			if created {
				wins <- me
			}
		})
	}
	wg.Wait()
	close(wins)
	var winners []string
	for w := range wins {
		winners = append(winners, w)
	}
	if len(winners) != 1 {
		t.Fatalf("winners %v, want exactly one", winners)
	}
	if kv, _ := mustGet(t, c, "contested"); string(kv.Value) != winners[0] {
		t.Fatalf("stored %q, winner %s", kv.Value, winners[0])
	}
}

func testCompareAndSwap(t *testing.T, c *kvstore.Client) {
	ctx := testContext(t)
	swapped, err := c.CompareAndSwap(ctx, "cas", 0, []byte("v1"), kvstore.NoLease)
	if err != nil || !swapped {
		t.Fatalf("swap of an absent key at revision 0: %v, %v", swapped, err)
	}
	kv, _ := mustGet(t, c, "cas")
	if swapped, err := c.CompareAndSwap(ctx, "cas", 0, []byte("lost"), kvstore.NoLease); err != nil || swapped {
		t.Fatalf("swap of an existing key at revision 0: %v, %v; want false", swapped, err)
	}
	if swapped, err := c.CompareAndSwap(ctx, "cas", kv.ModRevision, []byte("v2"), kvstore.NoLease); err != nil || !swapped {
		t.Fatalf("swap at the current revision: %v, %v", swapped, err)
	}
	if swapped, err := c.CompareAndSwap(ctx, "cas", kv.ModRevision, []byte("stale"), kvstore.NoLease); err != nil || swapped {
		t.Fatalf("swap at a stale revision: %v, %v; want false", swapped, err)
	}
	if kv, _ := mustGet(t, c, "cas"); string(kv.Value) != "v2" {
		t.Fatalf("value %q, want v2", kv.Value)
	}
}

func testCompareAndDelete(t *testing.T, c *kvstore.Client) {
	ctx := testContext(t)
	mustPut(t, c, "cad", "x")
	kv, _ := mustGet(t, c, "cad")
	if deleted, err := c.CompareAndDelete(ctx, "cad", kv.ModRevision+1000); err != nil || deleted {
		t.Fatalf("delete at a wrong revision: %v, %v", deleted, err)
	}
	if deleted, err := c.CompareAndDelete(ctx, "cad", kv.ModRevision); err != nil || !deleted {
		t.Fatalf("delete at the current revision: %v, %v", deleted, err)
	}
	if deleted, err := c.CompareAndDelete(ctx, "cad", 0); err != nil || deleted {
		t.Fatalf("delete of an absent key: %v, %v; want false", deleted, err)
	}
}

func testTxn(t *testing.T, c *kvstore.Client) {
	ctx := testContext(t)
	mustPut(t, c, "existing", "e")
	res, err := c.Txn(ctx,
		[]kvstore.Cmp{kvstore.KeyMissing("id/7"), kvstore.KeyExists("existing"), kvstore.ValueEquals("existing", []byte("e"))},
		[]kvstore.Op{kvstore.OpPut("id/7", []byte("labels"), kvstore.NoLease), kvstore.OpPut("value/h", []byte("7"), kvstore.NoLease), kvstore.OpGet("existing"), kvstore.OpGet("absent")},
		[]kvstore.Op{kvstore.OpGet("id/7")})
	if err != nil || !res.Succeeded {
		t.Fatalf("txn on fresh keys: %+v, %v", res, err)
	}
	if len(res.Gets) != 1 || res.Gets[0].Key != "existing" || string(res.Gets[0].Value) != "e" {
		t.Fatalf("txn gets %+v, want only existing=e (absent keys omitted)", res.Gets)
	}
	kv, _ := mustGet(t, c, "id/7")
	if res.Revision != kv.ModRevision {
		t.Fatalf("txn revision %d, key written at %d", res.Revision, kv.ModRevision)
	}

	res, err = c.Txn(ctx, []kvstore.Cmp{kvstore.KeyMissing("id/7")},
		[]kvstore.Op{kvstore.OpPut("id/7", []byte("other"), kvstore.NoLease)},
		[]kvstore.Op{kvstore.OpGet("id/7"), kvstore.OpDelete("value/h")})
	if err != nil || res.Succeeded {
		t.Fatalf("txn whose condition fails: %+v, %v", res, err)
	}
	if len(res.Gets) != 1 || string(res.Gets[0].Value) != "labels" {
		t.Fatalf("else branch gets %+v", res.Gets)
	}
	if _, found := mustGet(t, c, "value/h"); found {
		t.Fatal("else branch delete did not run")
	}

	res, err = c.Txn(ctx, []kvstore.Cmp{kvstore.ModRevisionEquals("id/7", kv.ModRevision)},
		[]kvstore.Op{kvstore.OpDelete("id/7")}, nil)
	if err != nil || !res.Succeeded {
		t.Fatalf("txn on mod revision: %+v, %v", res, err)
	}
}

func testBadInput(t *testing.T, c *kvstore.Client) {
	ctx := testContext(t)
	huge := make([]byte, kvstore.DefaultMaxValueBytes+1)
	mustPut(t, c, "keep", "original")
	cases := []struct {
		name string
		call func() error
		want error
	}{
		{"get empty key", func() error { _, _, err := c.Get(ctx, ""); return err }, kvstore.ErrEmptyKey},
		{"put empty key", func() error { return c.Put(ctx, "", []byte("x"), kvstore.NoLease) }, kvstore.ErrEmptyKey},
		{"delete empty key", func() error { _, err := c.Delete(ctx, ""); return err }, kvstore.ErrEmptyKey},
		{"create empty key", func() error { _, err := c.CreateOnly(ctx, "", nil, kvstore.NoLease); return err }, kvstore.ErrEmptyKey},
		{"swap empty key", func() error { _, err := c.CompareAndSwap(ctx, "", 0, nil, kvstore.NoLease); return err }, kvstore.ErrEmptyKey},
		{"compare-delete empty key", func() error { _, err := c.CompareAndDelete(ctx, "", 0); return err }, kvstore.ErrEmptyKey},
		{"txn empty key in condition", func() error {
			_, err := c.Txn(ctx, []kvstore.Cmp{kvstore.KeyExists("")}, []kvstore.Op{kvstore.OpPut("keep", []byte("changed"), 0)}, nil)
			return err
		}, kvstore.ErrEmptyKey},
		{"txn empty key in operation", func() error {
			_, err := c.Txn(ctx, nil, []kvstore.Op{kvstore.OpPut("keep", []byte("changed"), 0), kvstore.OpDelete("")}, nil)
			return err
		}, kvstore.ErrEmptyKey},
		{"put oversized value", func() error { return c.Put(ctx, "keep", huge, kvstore.NoLease) }, kvstore.ErrValueTooLarge},
		{"create oversized value", func() error { _, err := c.CreateOnly(ctx, "new", huge, kvstore.NoLease); return err }, kvstore.ErrValueTooLarge},
		{"txn oversized value", func() error {
			_, err := c.Txn(ctx, nil, []kvstore.Op{kvstore.OpPut("keep", huge, 0)}, nil)
			return err
		}, kvstore.ErrValueTooLarge},
		{"put on a lease that does not exist", func() error { return c.Put(ctx, "keep", []byte("changed"), 0x7eadbeef) }, kvstore.ErrLeaseNotFound},
	}
	for _, tc := range cases {
		err := tc.call()
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.want)
		}
	}
	if kv, _ := mustGet(t, c, "keep"); string(kv.Value) != "original" {
		t.Fatalf("refused operations changed keep to %q", kv.Value)
	}
	if _, found := mustGet(t, c, "new"); found {
		t.Fatal("refused create wrote its key")
	}
	// A value just under the limit goes through: the limit is not stricter than documented.
	if err := c.Put(ctx, "big", huge[:kvstore.DefaultMaxValueBytes], kvstore.NoLease); err != nil {
		t.Fatalf("put of a value at the limit: %v", err)
	}
}
