package bpf

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// IdentityWorld is the identity of addresses no ipcache prefix covers.
const IdentityWorld = 2

// ipcacheFamilyBits is the prefix length of the family byte and padding that precede the address
// in an ipcache key.
const ipcacheFamilyBits = 32

func ipcacheKey(prefix netip.Prefix) (datapathIpcacheKey, error) {
	if !prefix.IsValid() {
		return datapathIpcacheKey{}, fmt.Errorf("invalid prefix %v", prefix)
	}
	if !prefix.Addr().Is4() {
		return datapathIpcacheKey{}, fmt.Errorf("prefix %v: only IPv4 is supported so far", prefix)
	}
	prefix = prefix.Masked()
	return datapathIpcacheKey{
		Prefixlen: uint32(ipcacheFamilyBits + prefix.Bits()),
		Family:    familyIPv4,
		Addr:      addrWords(prefix.Addr()),
	}, nil
}

// UpsertIPCache maps every address of prefix (longest prefix wins) to identity.
func (d *Datapath) UpsertIPCache(prefix netip.Prefix, identity uint32) error {
	if identity == 0 {
		return fmt.Errorf("ipcache %v: identity 0 is not a valid identity", prefix)
	}
	key, err := ipcacheKey(prefix)
	if err != nil {
		return fmt.Errorf("ipcache upsert: %w", err)
	}
	if err := d.objs.PalIpcache.Put(&key, &datapathIpcacheValue{Identity: identity}); err != nil {
		return fmt.Errorf("ipcache upsert %v -> %d: %w", prefix, identity, err)
	}
	return nil
}

// DeleteIPCache removes prefix; deleting an absent prefix is not an error.
func (d *Datapath) DeleteIPCache(prefix netip.Prefix) error {
	key, err := ipcacheKey(prefix)
	if err != nil {
		return fmt.Errorf("ipcache delete: %w", err)
	}
	if err := d.objs.PalIpcache.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("ipcache delete %v: %w", prefix, err)
	}
	return nil
}

// IPCache returns every prefix and its identity, for reconciliation after a restart.
func (d *Datapath) IPCache() (map[netip.Prefix]uint32, error) {
	out := make(map[netip.Prefix]uint32)
	var (
		key datapathIpcacheKey
		val datapathIpcacheValue
	)
	it := d.objs.PalIpcache.Iterate()
	for it.Next(&key, &val) {
		if key.Family != familyIPv4 {
			continue
		}
		out[netip.PrefixFrom(wordsAddr(key.Addr), int(key.Prefixlen)-ipcacheFamilyBits)] = val.Identity
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read ipcache: %w", err)
	}
	return out, nil
}

// LookupIPCache returns the identity the datapath sees for addr (IdentityWorld when no prefix
// covers it).
func (d *Datapath) LookupIPCache(addr netip.Addr) (uint32, error) {
	key, err := ipcacheKey(netip.PrefixFrom(addr, addr.BitLen()))
	if err != nil {
		return 0, fmt.Errorf("ipcache lookup: %w", err)
	}
	var val datapathIpcacheValue
	err = d.objs.PalIpcache.Lookup(&key, &val)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return IdentityWorld, nil
	}
	if err != nil {
		return 0, fmt.Errorf("ipcache lookup %v: %w", addr, err)
	}
	return val.Identity, nil
}
