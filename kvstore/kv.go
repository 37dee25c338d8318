package kvstore

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// KeyValue is a key (relative to the client's prefix) with its value and revisions.
type KeyValue struct {
	Key            string
	Value          []byte
	ModRevision    int64 // revision of the last write
	CreateRevision int64 // revision that created the key
	Lease          LeaseID
}

// LeaseID identifies a lease; 0 means no lease.
type LeaseID int64

// NoLease attaches a key to no lease.
const NoLease LeaseID = 0

func (c *Client) keyValue(kv *mvccpb.KeyValue) KeyValue {
	return KeyValue{
		Key:            c.relKey(kv.Key),
		Value:          kv.Value,
		ModRevision:    kv.ModRevision,
		CreateRevision: kv.CreateRevision,
		Lease:          LeaseID(kv.Lease),
	}
}

func leaseOpts(lease LeaseID) []clientv3.OpOption {
	if lease == NoLease {
		return nil
	}
	return []clientv3.OpOption{clientv3.WithLease(clientv3.LeaseID(lease))}
}

// Get reads key. found is false when the key does not exist.
func (c *Client) Get(ctx context.Context, key string) (kv KeyValue, found bool, err error) {
	start := time.Now()
	defer func() { c.metrics.observe(opGet, start, err) }()
	if err := c.checkKey(key); err != nil {
		return KeyValue{}, false, fmt.Errorf("kvstore get: %w", err)
	}
	ctx, cancel, err := c.opContext(ctx)
	if err != nil {
		return KeyValue{}, false, fmt.Errorf("kvstore get %q: %w", key, err)
	}
	defer cancel()
	resp, err := c.cli.Get(ctx, c.fullKey(key))
	if err != nil {
		return KeyValue{}, false, fmt.Errorf("kvstore get %q: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return KeyValue{}, false, nil
	}
	return c.keyValue(resp.Kvs[0]), true, nil
}

// List reads every key starting with prefix ("" lists the whole client prefix), sorted by key, and
// the store revision the listing is consistent with.
func (c *Client) List(ctx context.Context, prefix string) (kvs []KeyValue, rev int64, err error) {
	start := time.Now()
	defer func() { c.metrics.observe(opList, start, err) }()
	ctx, cancel, err := c.opContext(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("kvstore list %q: %w", prefix, err)
	}
	defer cancel()
	return c.list(ctx, prefix)
}

func (c *Client) list(ctx context.Context, prefix string) ([]KeyValue, int64, error) {
	resp, err := c.cli.Get(ctx, c.fullKey(prefix), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, 0, fmt.Errorf("kvstore list %q: %w", prefix, err)
	}
	out := make([]KeyValue, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		out[i] = c.keyValue(kv)
	}
	return out, resp.Header.Revision, nil
}

// Put writes key, attached to lease (NoLease for none).
func (c *Client) Put(ctx context.Context, key string, value []byte, lease LeaseID) (err error) {
	start := time.Now()
	defer func() { c.metrics.observe(opPut, start, err) }()
	if err := c.checkPut(key, value); err != nil {
		return fmt.Errorf("kvstore put: %w", err)
	}
	ctx, cancel, err := c.opContext(ctx)
	if err != nil {
		return fmt.Errorf("kvstore put %q: %w", key, err)
	}
	defer cancel()
	if _, err := c.cli.Put(ctx, c.fullKey(key), string(value), leaseOpts(lease)...); err != nil {
		return fmt.Errorf("kvstore put %q: %w", key, translate(err))
	}
	return nil
}

func (c *Client) checkPut(key string, value []byte) error {
	if err := c.checkKey(key); err != nil {
		return err
	}
	return c.checkValue(key, value)
}

// Delete removes key and reports whether it existed.
func (c *Client) Delete(ctx context.Context, key string) (deleted bool, err error) {
	start := time.Now()
	defer func() { c.metrics.observe(opDelete, start, err) }()
	if err := c.checkKey(key); err != nil {
		return false, fmt.Errorf("kvstore delete: %w", err)
	}
	ctx, cancel, err := c.opContext(ctx)
	if err != nil {
		return false, fmt.Errorf("kvstore delete %q: %w", key, err)
	}
	defer cancel()
	resp, err := c.cli.Delete(ctx, c.fullKey(key))
	if err != nil {
		return false, fmt.Errorf("kvstore delete %q: %w", key, err)
	}
	return resp.Deleted > 0, nil
}

// DeletePrefix removes every key starting with prefix and returns how many there were. An empty
// prefix is refused: it would wipe the whole store of this client.
func (c *Client) DeletePrefix(ctx context.Context, prefix string) (deleted int64, err error) {
	start := time.Now()
	defer func() { c.metrics.observe(opDeletePrefix, start, err) }()
	if prefix == "" {
		return 0, fmt.Errorf("kvstore delete prefix: %w (refusing to delete every key under %q)", ErrEmptyKey, c.cfg.Prefix)
	}
	ctx, cancel, err := c.opContext(ctx)
	if err != nil {
		return 0, fmt.Errorf("kvstore delete prefix %q: %w", prefix, err)
	}
	defer cancel()
	resp, err := c.cli.Delete(ctx, c.fullKey(prefix), clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("kvstore delete prefix %q: %w", prefix, err)
	}
	return resp.Deleted, nil
}

// CreateOnly writes key only if it does not exist; created is false when it existed (nothing is
// written then).
func (c *Client) CreateOnly(ctx context.Context, key string, value []byte, lease LeaseID) (created bool, err error) {
	start := time.Now()
	defer func() { c.metrics.observe(opCreateOnly, start, err) }()
	if err := c.checkPut(key, value); err != nil {
		return false, fmt.Errorf("kvstore create: %w", err)
	}
	created, err = c.condPut(ctx, clientv3.Compare(clientv3.CreateRevision(c.fullKey(key)), "=", 0), key, value, lease)
	if err != nil {
		return false, fmt.Errorf("kvstore create %q: %w", key, err)
	}
	return created, nil
}

// CompareAndSwap writes key only if its ModRevision is expectModRevision (0: the key must not
// exist); swapped is false otherwise.
func (c *Client) CompareAndSwap(ctx context.Context, key string, expectModRevision int64, value []byte, lease LeaseID) (swapped bool, err error) {
	start := time.Now()
	defer func() { c.metrics.observe(opCompareAndSwap, start, err) }()
	if err := c.checkPut(key, value); err != nil {
		return false, fmt.Errorf("kvstore compare-and-swap: %w", err)
	}
	swapped, err = c.condPut(ctx, clientv3.Compare(clientv3.ModRevision(c.fullKey(key)), "=", expectModRevision), key, value, lease)
	if err != nil {
		return false, fmt.Errorf("kvstore compare-and-swap %q at revision %d: %w", key, expectModRevision, err)
	}
	return swapped, nil
}

func (c *Client) condPut(ctx context.Context, cmp clientv3.Cmp, key string, value []byte, lease LeaseID) (bool, error) {
	ctx, cancel, err := c.opContext(ctx)
	if err != nil {
		return false, err
	}
	defer cancel()
	resp, err := c.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(c.fullKey(key), string(value), leaseOpts(lease)...)).Commit()
	if err != nil {
		return false, translate(err)
	}
	return resp.Succeeded, nil
}

// CompareAndDelete removes key only if its ModRevision is expectModRevision; deleted is false
// otherwise (also when the key does not exist).
func (c *Client) CompareAndDelete(ctx context.Context, key string, expectModRevision int64) (deleted bool, err error) {
	start := time.Now()
	defer func() { c.metrics.observe(opCompareAndDelete, start, err) }()
	if err := c.checkKey(key); err != nil {
		return false, fmt.Errorf("kvstore compare-and-delete: %w", err)
	}
	ctx, cancel, err := c.opContext(ctx)
	if err != nil {
		return false, fmt.Errorf("kvstore compare-and-delete %q: %w", key, err)
	}
	defer cancel()
	full := c.fullKey(key)
	resp, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(full), "=", expectModRevision)).
		Then(clientv3.OpDelete(full)).Commit()
	if err != nil {
		return false, fmt.Errorf("kvstore compare-and-delete %q at revision %d: %w", key, expectModRevision, err)
	}
	if !resp.Succeeded || len(resp.Responses) == 0 {
		return false, nil
	}
	return resp.Responses[0].GetResponseDeleteRange().GetDeleted() > 0, nil
}

// Compact discards the history before rev (keys' current values stay). Watchers that still needed
// that history relist. It returns once the compaction is applied.
func (c *Client) Compact(ctx context.Context, rev int64) error {
	ctx, cancel, err := c.opContext(ctx)
	if err != nil {
		return fmt.Errorf("kvstore compact to %d: %w", rev, err)
	}
	defer cancel()
	if _, err := c.cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		return fmt.Errorf("kvstore compact to %d: %w", rev, err)
	}
	return nil
}
