package kvstore

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

type cmpKind int

const (
	cmpMissing cmpKind = iota + 1
	cmpExists
	cmpValue
	cmpModRevision
)

// Cmp is one condition of a transaction; build it with KeyMissing, KeyExists, ValueEquals or
// ModRevisionEquals.
type Cmp struct {
	kind  cmpKind
	key   string
	value []byte
	rev   int64
}

// KeyMissing holds when key does not exist.
func KeyMissing(key string) Cmp { return Cmp{kind: cmpMissing, key: key} }

// KeyExists holds when key exists.
func KeyExists(key string) Cmp { return Cmp{kind: cmpExists, key: key} }

// ValueEquals holds when key exists with value v.
func ValueEquals(key string, v []byte) Cmp {
	return Cmp{kind: cmpValue, key: key, value: bytes.Clone(v)}
}

// ModRevisionEquals holds when key was last written at rev (rev 0: the key does not exist).
func ModRevisionEquals(key string, rev int64) Cmp {
	return Cmp{kind: cmpModRevision, key: key, rev: rev}
}

func (c *Client) etcdCmp(cmp Cmp) (clientv3.Cmp, error) {
	if err := c.checkKey(cmp.key); err != nil {
		return clientv3.Cmp{}, fmt.Errorf("condition: %w", err)
	}
	full := c.fullKey(cmp.key)
	switch cmp.kind {
	case cmpMissing:
		return clientv3.Compare(clientv3.CreateRevision(full), "=", 0), nil
	case cmpExists:
		return clientv3.Compare(clientv3.CreateRevision(full), ">", 0), nil
	case cmpValue:
		return clientv3.Compare(clientv3.Value(full), "=", string(cmp.value)), nil
	case cmpModRevision:
		return clientv3.Compare(clientv3.ModRevision(full), "=", cmp.rev), nil
	default:
		return clientv3.Cmp{}, fmt.Errorf("condition on %q: not built with a kvstore constructor", cmp.key)
	}
}

type opKind int

const (
	opKindPut opKind = iota + 1
	opKindDelete
	opKindGet
)

// Op is one operation of a transaction; build it with OpPut, OpDelete or OpGet.
type Op struct {
	kind  opKind
	key   string
	value []byte
	lease LeaseID
}

// OpPut writes key, attached to lease (NoLease for none).
func OpPut(key string, value []byte, lease LeaseID) Op {
	return Op{kind: opKindPut, key: key, value: value, lease: lease}
}

// OpDelete removes key.
func OpDelete(key string) Op { return Op{kind: opKindDelete, key: key} }

// OpGet reads key; its result appears in TxnResult.Gets.
func OpGet(key string) Op { return Op{kind: opKindGet, key: key} }

func (c *Client) etcdOp(op Op) (clientv3.Op, error) {
	if err := c.checkKey(op.key); err != nil {
		return clientv3.Op{}, fmt.Errorf("operation: %w", err)
	}
	full := c.fullKey(op.key)
	switch op.kind {
	case opKindPut:
		if err := c.checkValue(op.key, op.value); err != nil {
			return clientv3.Op{}, err
		}
		return clientv3.OpPut(full, string(op.value), leaseOpts(op.lease)...), nil
	case opKindDelete:
		return clientv3.OpDelete(full), nil
	case opKindGet:
		return clientv3.OpGet(full), nil
	default:
		return clientv3.Op{}, fmt.Errorf("operation on %q: not built with a kvstore constructor", op.key)
	}
}

// TxnResult is the outcome of Txn.
type TxnResult struct {
	// Succeeded is true when every condition held and the Then operations ran; otherwise the Else
	// operations ran.
	Succeeded bool
	// Revision of the store after the transaction.
	Revision int64
	// Gets holds the results of the OpGet operations of the branch that ran, in order; keys that do
	// not exist are omitted.
	Gets []KeyValue
}

// Txn runs thenOps if every condition in ifs holds, elseOps otherwise, atomically.
func (c *Client) Txn(ctx context.Context, ifs []Cmp, thenOps []Op, elseOps []Op) (res TxnResult, err error) {
	start := time.Now()
	defer func() { c.metrics.observe(opTxn, start, err) }()
	cmps := make([]clientv3.Cmp, len(ifs))
	for i, cmp := range ifs {
		if cmps[i], err = c.etcdCmp(cmp); err != nil {
			return TxnResult{}, fmt.Errorf("kvstore txn: %w", err)
		}
	}
	thens, err := c.etcdOps(thenOps)
	if err != nil {
		return TxnResult{}, fmt.Errorf("kvstore txn: then: %w", err)
	}
	elses, err := c.etcdOps(elseOps)
	if err != nil {
		return TxnResult{}, fmt.Errorf("kvstore txn: else: %w", err)
	}
	ctx, cancel, err := c.opContext(ctx)
	if err != nil {
		return TxnResult{}, fmt.Errorf("kvstore txn: %w", err)
	}
	defer cancel()
	resp, err := c.cli.Txn(ctx).If(cmps...).Then(thens...).Else(elses...).Commit()
	if err != nil {
		return TxnResult{}, fmt.Errorf("kvstore txn on %s: %w", describeOps(thenOps, elseOps), translate(err))
	}
	res = TxnResult{Succeeded: resp.Succeeded, Revision: resp.Header.Revision}
	for _, r := range resp.Responses {
		if rr := r.GetResponseRange(); rr != nil {
			for _, kv := range rr.Kvs {
				res.Gets = append(res.Gets, c.keyValue(kv))
			}
		}
	}
	return res, nil
}

func (c *Client) etcdOps(ops []Op) ([]clientv3.Op, error) {
	out := make([]clientv3.Op, len(ops))
	for i, op := range ops {
		var err error
		if out[i], err = c.etcdOp(op); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// describeOps names the keys a transaction touches, for error messages.
func describeOps(thenOps, elseOps []Op) string {
	keys := make([]string, 0, len(thenOps)+len(elseOps))
	for _, op := range append(append([]Op(nil), thenOps...), elseOps...) {
		keys = append(keys, fmt.Sprintf("%q", op.key))
	}
	if len(keys) == 0 {
		return "no keys"
	}
	// Name a few keys, not thousands: the message is for people.
	const shown = 5
	if len(keys) > shown {
		return fmt.Sprintf("%d keys (%s, ...)", len(keys), strings.Join(keys[:shown], ", "))
	}
	return fmt.Sprint(keys)
}
