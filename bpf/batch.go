package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// Batched map operations. Every program needs TCX (Linux 6.6), so the batch syscalls (5.6) are
// always there; they replace one syscall per key with one per call.

// wholeReadRatio is how many times more entries a batch read copies for the cost of one
// single-key lookup syscall, roughly: reading a policy map whole is cheaper than looking its keys
// up one by one as soon as more than one key in wholeReadRatio is wanted.
const wholeReadRatio = 16

// installedValue is a key's value in an installed policy map, ok false when the key is absent.
type installedValue struct {
	v  datapathPolicyValue
	ok bool
}

// readInstalled returns the installed values of the keys of the given policies from inner, a
// policy map of about size entries: one lookup per key for a few keys, one batch read of the whole
// map otherwise, so a small delta costs the same on a map of 10 or 10,000 entries and a large one
// takes a handful of syscalls instead of one per key.
func readInstalled(inner *ebpf.Map, size int, wanted ...desiredPolicy) (map[datapathPolicyKey]installedValue, error) {
	n := 0
	for _, w := range wanted {
		n += len(w)
	}
	out := make(map[datapathPolicyKey]installedValue, n)
	if n*wholeReadRatio < size {
		for _, w := range wanted {
			for k := range w {
				var v datapathPolicyValue
				err := inner.Lookup(&k, &v)
				if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					return nil, fmt.Errorf("look up %+v: %w", k, err)
				}
				out[k] = installedValue{v, err == nil}
			}
		}
		return out, nil
	}
	for _, w := range wanted {
		for k := range w {
			out[k] = installedValue{}
		}
	}
	err := scanMapN(inner, min(max(size+size/4+1, 64), scanBatch), func(k datapathPolicyKey, v datapathPolicyValue) bool {
		if _, want := out[k]; want {
			out[k] = installedValue{v, true}
		}
		return false
	})
	if err != nil {
		return nil, fmt.Errorf("read policy map: %w", err)
	}
	return out, nil
}

// deleteBatch deletes keys from m in one syscall and returns the keys it deleted. A key that is not
// there is skipped, as a single delete of it would be. On another error the kernel may not have
// reported how far it got, and the keys returned can include ones it never reached: a rollback
// must restore values it knows, not assume what each key held.
func deleteBatch[K any](m *ebpf.Map, keys []K) ([]K, error) {
	deleted := make([]K, 0, len(keys))
	for len(keys) > 0 {
		n, err := m.BatchDelete(keys, nil)
		deleted = append(deleted, keys[:n]...)
		switch {
		case err == nil:
			return deleted, nil
		case errors.Is(err, ebpf.ErrKeyNotExist):
			keys = keys[n+1:]
		default:
			return deleted, fmt.Errorf("batch delete: %w", err)
		}
	}
	return deleted, nil
}

// updateBatch writes keys and vals into m in one syscall, each key atomically and in order, and
// returns how many it wrote (on an error possibly more than it reached, as for deleteBatch). Batch
// updates take no BPF_NOEXIST, so a writer that must not overwrite reads first.
func updateBatch[K, V any](m *ebpf.Map, keys []K, vals []V) (int, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	n, err := m.BatchUpdate(keys, vals, nil)
	if err != nil {
		return n, fmt.Errorf("batch update: %w", err)
	}
	return n, nil
}
