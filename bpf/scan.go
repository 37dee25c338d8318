package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// scanBatch is the number of entries read per syscall when scanning a hash map.
const scanBatch = 4096

// scanMap calls fn for every entry of a hash map until fn returns true, reading scanBatch entries
// per syscall (a map of 10,000 entries costs three syscalls instead of 20,000 with an iterator).
func scanMap[K comparable, V any](m *ebpf.Map, fn func(K, V) bool) error {
	return scanMapN(m, scanBatch, fn)
}

// scanMapN is scanMap reading up to batch entries per syscall; a map expected to hold few entries
// is read with buffers of its size instead of scanBatch. fn must tolerate seeing entries again:
// a batch too small for the first bucket it meets makes the scan start over with scanBatch.
func scanMapN[K comparable, V any](m *ebpf.Map, batch int, fn func(K, V) bool) error {
	keys := make([]K, batch)
	vals := make([]V, batch)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := 0; i < n; i++ {
			if fn(keys[i], vals[i]) {
				return nil
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			return iterateMap(m, fn)
		}
		if errors.Is(err, unix.ENOSPC) && n == 0 && batch < scanBatch {
			return scanMapN(m, scanBatch, fn)
		}
		if err != nil {
			return fmt.Errorf("scan map %s: %w", m, err)
		}
	}
}

func iterateMap[K comparable, V any](m *ebpf.Map, fn func(K, V) bool) error {
	var (
		k K
		v V
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		if fn(k, v) {
			return nil
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate map %s: %w", m, err)
	}
	return nil
}
