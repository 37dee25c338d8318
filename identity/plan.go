package identity

import (
	"bytes"

	"github.com/palisade-mesh/palisade/kvstore"
)

// This file decides the next allocation transaction from what the allocator knows. Every
// transaction has the same shape (see doc.go):
//
//	if <conditions on the value key and one master key>
//	then put master(id) = labels, put value(digest) = id, put ref(id, node) with the node's lease
//	else get value(digest), get master(id)
//
// so only the identity and the conditions vary, and a failed attempt always returns what the next
// one needs to know.

// keyState is what a read saw of one key.
type keyState struct {
	present bool
	rev     int64 // ModRevision, 0 when absent
	raw     []byte
}

// cmp is a condition that holds only while the key is as observed.
func (k keyState) cmp(key string) kvstore.Cmp {
	return kvstore.ModRevisionEquals(key, k.rev)
}

// observation is what the allocator last read of a label set's value key and of one master key.
type observation struct {
	value    keyState
	masterID ID
	master   keyState
}

func observe(gets []kvstore.KeyValue, digest string, masterID ID) observation {
	obs := observation{masterID: masterID}
	vk, mk := valueKey(digest), masterKey(masterID)
	for _, kv := range gets {
		switch kv.Key {
		case vk:
			obs.value = keyState{present: true, rev: kv.ModRevision, raw: kv.Value}
		case mk:
			obs.master = keyState{present: true, rev: kv.ModRevision, raw: kv.Value}
		}
	}
	return obs
}

// planKind says what a transaction does if its conditions hold.
type planKind int

const (
	// planRef references an identity that exists with these labels (rewriting its keys).
	planRef planKind = iota + 1
	// planRestore recreates a missing master or value key of an identity with these labels.
	planRestore
	// planCreate creates a new identity.
	planCreate
	// planLost: the identity wanted is owned by other labels now; no transaction can keep it.
	planLost
	// planPick: a new identity is needed but no candidate was given; pick one and plan again.
	planPick
)

// plan is the next transaction.
type plan struct {
	kind planKind
	id   ID
	ifs  []kvstore.Cmp
}

// planner holds what does not change between the attempts of one allocation.
type planner struct {
	lbls    Labels
	digest  string
	encoded []byte // encodeMaster(lbls)
	rng     idRange
	// want is the identity a holder must keep (restoring it after its keys vanished); 0 when any
	// identity will do.
	want ID
}

func newPlanner(lbls Labels, rng idRange, want ID) *planner {
	return &planner{lbls: lbls, digest: lbls.Digest(), encoded: encodeMaster(lbls), rng: rng, want: want}
}

// masterIs reports whether an observed master key holds exactly our labels.
func (p *planner) masterIs(k keyState) bool {
	if !k.present {
		return false
	}
	if bytes.Equal(k.raw, p.encoded) {
		return true
	}
	lbls, err := decodeMaster(k.raw)
	return err == nil && lbls.Equal(p.lbls)
}

// valueID decodes an observed value key; ok is false when it is absent or does not name an
// identity of our cluster (then it is an orphan that may be replaced).
func (p *planner) valueID(k keyState) (ID, bool) {
	if !k.present {
		return 0, false
	}
	id, err := decodeValue(k.raw)
	if err != nil || p.rng.layout.KindOf(id) != KindCluster || p.rng.layout.ClusterOf(id) != p.rng.cluster {
		return 0, false
	}
	return id, true
}

// optimistic plans a reference to id without having read its keys: it succeeds when the value and
// master keys hold exactly what an allocator writes, which is the common case.
func (p *planner) optimistic(id ID) plan {
	return plan{kind: planRef, id: id, ifs: []kvstore.Cmp{
		kvstore.ValueEquals(valueKey(p.digest), encodeValue(id)),
		kvstore.ValueEquals(masterKey(id), p.encoded),
	}}
}

// create plans a new identity at candidate, given what was observed of the value key.
func (p *planner) create(value keyState, candidate ID, extra ...kvstore.Cmp) plan {
	ifs := append([]kvstore.Cmp{value.cmp(valueKey(p.digest)), kvstore.KeyMissing(masterKey(candidate))}, extra...)
	return plan{kind: planCreate, id: candidate, ifs: ifs}
}

// next decides the next transaction from the last observation (nil before the first attempt) and
// the cache's hint (the identity the cache maps the labels to, or 0). A planCreate needs a
// candidate: when candidate is 0 the result is planPick.
func (p *planner) next(obs *observation, hint, candidate ID) plan {
	if obs == nil {
		switch {
		case p.want != 0:
			return p.optimistic(p.want)
		case hint != 0:
			return p.optimistic(hint)
		case candidate == 0:
			return plan{kind: planPick}
		default:
			return p.create(keyState{}, candidate)
		}
	}
	vk := valueKey(p.digest)
	vID, valid := p.valueID(obs.value)
	if valid {
		if p.want != 0 && vID != p.want {
			// The labels have another identity now; ours was given up while we were away.
			return plan{kind: planLost, id: p.want}
		}
		if obs.masterID != vID {
			// We have not read the master the value points at: assume it is ours.
			return plan{kind: planRef, id: vID, ifs: []kvstore.Cmp{
				obs.value.cmp(vk),
				kvstore.ValueEquals(masterKey(vID), p.encoded),
			}}
		}
		mk := masterKey(vID)
		switch {
		case p.masterIs(obs.master):
			return plan{kind: planRef, id: vID, ifs: []kvstore.Cmp{obs.value.cmp(vk), obs.master.cmp(mk)}}
		case !obs.master.present:
			return plan{kind: planRestore, id: vID, ifs: []kvstore.Cmp{obs.value.cmp(vk), kvstore.KeyMissing(mk)}}
		case p.want != 0:
			return plan{kind: planLost, id: p.want}
		}
		// The value key points at an identity owned by other labels (or unreadable): an orphan.
		// Replace it, but only while that master is still as observed, so that a concurrent
		// restore of the master to our labels wins instead of creating a duplicate.
		if candidate == 0 {
			return plan{kind: planPick}
		}
		return p.create(obs.value, candidate, obs.master.cmp(mk))
	}
	if p.want != 0 {
		if obs.masterID != p.want {
			return p.optimistic(p.want)
		}
		mk := masterKey(p.want)
		switch {
		case !obs.master.present:
			return plan{kind: planRestore, id: p.want, ifs: []kvstore.Cmp{obs.value.cmp(vk), kvstore.KeyMissing(mk)}}
		case p.masterIs(obs.master):
			return plan{kind: planRestore, id: p.want, ifs: []kvstore.Cmp{obs.value.cmp(vk), obs.master.cmp(mk)}}
		}
		return plan{kind: planLost, id: p.want}
	}
	if obs.master.present && p.masterIs(obs.master) && p.rng.contains(obs.masterID) {
		// An orphan master with our labels (its value key vanished): adopt it rather than
		// creating a duplicate.
		return plan{kind: planRestore, id: obs.masterID, ifs: []kvstore.Cmp{obs.value.cmp(vk), obs.master.cmp(masterKey(obs.masterID))}}
	}
	if candidate == 0 {
		return plan{kind: planPick}
	}
	return p.create(obs.value, candidate)
}

// ops returns the transaction's Then and Else operations for identity id.
func (p *planner) ops(id ID, node string, lease kvstore.LeaseID) (then, els []kvstore.Op) {
	then = []kvstore.Op{
		kvstore.OpPut(masterKey(id), p.encoded, kvstore.NoLease),
		kvstore.OpPut(valueKey(p.digest), encodeValue(id), kvstore.NoLease),
		kvstore.OpPut(refKey(id, node), refValue, lease),
	}
	els = []kvstore.Op{kvstore.OpGet(valueKey(p.digest)), kvstore.OpGet(masterKey(id))}
	return then, els
}
