package identity

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/palisade-mesh/palisade/kvstore"
)

// StoredIdentity is an identity as stored in a cluster's etcd, for operators and tools.
type StoredIdentity struct {
	ID     ID
	Labels Labels
	// Nodes holds the nodes referencing the identity, sorted. None: garbage collection will delete
	// it.
	Nodes []string
	// Invalid says why the stored labels could not be read (Labels is then empty).
	Invalid string
}

// ListStored reads every identity of the cluster behind kv, in numeric order, with its references.
// It reads etcd directly (two listings) rather than a cache: it is for tools, not the data path.
func ListStored(ctx context.Context, kv *kvstore.Client) ([]StoredIdentity, error) {
	masters, _, err := kv.List(ctx, MasterPrefix)
	if err != nil {
		return nil, fmt.Errorf("list identities: %w", err)
	}
	refs, _, err := kv.List(ctx, RefPrefix)
	if err != nil {
		return nil, fmt.Errorf("list identity references: %w", err)
	}
	nodes := make(map[ID][]string)
	for _, r := range refs {
		if id, node, err := parseRefKey(r.Key); err == nil {
			nodes[id] = append(nodes[id], node)
		}
	}
	out := make([]StoredIdentity, 0, len(masters))
	for _, m := range masters {
		id, err := parseMasterKey(m.Key)
		if err != nil {
			continue
		}
		out = append(out, storedIdentity(id, m.Value, nodes[id]))
	}
	slices.SortFunc(out, func(a, b StoredIdentity) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// GetStored reads one identity of the cluster behind kv; found is false when it does not exist.
func GetStored(ctx context.Context, kv *kvstore.Client, id ID) (si StoredIdentity, found bool, err error) {
	m, found, err := kv.Get(ctx, masterKey(id))
	if err != nil || !found {
		return StoredIdentity{}, false, err
	}
	refs, _, err := kv.List(ctx, refPrefix(id))
	if err != nil {
		return StoredIdentity{}, false, fmt.Errorf("list references of identity %d: %w", id, err)
	}
	var nodes []string
	for _, r := range refs {
		if _, node, err := parseRefKey(r.Key); err == nil {
			nodes = append(nodes, node)
		}
	}
	return storedIdentity(id, m.Value, nodes), true, nil
}

// LookupStored finds the identity of a label set in etcd; found is false when it has none.
func LookupStored(ctx context.Context, kv *kvstore.Client, lbls Labels) (si StoredIdentity, found bool, err error) {
	v, found, err := kv.Get(ctx, valueKey(lbls.Digest()))
	if err != nil || !found {
		return StoredIdentity{}, false, err
	}
	id, err := decodeValue(v.Value)
	if err != nil {
		return StoredIdentity{}, false, fmt.Errorf("identity of %s: %w", lbls, err)
	}
	si, found, err = GetStored(ctx, kv, id)
	if err != nil || !found || !si.Labels.Equal(lbls) {
		// A value key without its master, or one pointing at other labels, is garbage.
		return StoredIdentity{}, false, err
	}
	return si, true, nil
}

func storedIdentity(id ID, value []byte, nodes []string) StoredIdentity {
	si := StoredIdentity{ID: id, Nodes: nodes}
	slices.Sort(si.Nodes)
	lbls, err := decodeMaster(value)
	if err != nil {
		si.Invalid = err.Error()
	} else {
		si.Labels = lbls
	}
	return si
}
