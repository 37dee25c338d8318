package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
)

// ErrExhausted is returned when every address of the pod CIDR is in use.
var ErrExhausted = errors.New("pod CIDR exhausted")

// IPAM allocates IPv4 addresses of one pod CIDR. The network address, the gateway (the first host
// address, which the node puts on every endpoint's veth) and the broadcast address are never handed
// out. Allocations are written to a state file before they are returned.
type IPAM struct {
	mu      sync.Mutex
	cidr    netip.Prefix
	gateway netip.Addr
	path    string
	owners  map[netip.Addr]string // address -> owner (endpoint name)
	next    netip.Addr            // where the search for a free address starts
}

type stateFile struct {
	CIDR   string            `json:"cidr"`
	Owners map[string]string `json:"owners"`
}

// Open loads the state at path (a missing file is an empty state) for cidr. A state file written for
// another CIDR is refused: the node's pod CIDR changed under live endpoints.
func Open(cidr netip.Prefix, path string) (*IPAM, error) {
	if !cidr.Addr().Is4() {
		return nil, fmt.Errorf("pod CIDR %s: only IPv4 is supported", cidr)
	}
	cidr = cidr.Masked()
	if cidr.Bits() > 30 {
		return nil, fmt.Errorf("pod CIDR %s: too small, need at least a /30", cidr)
	}
	m := &IPAM{cidr: cidr, gateway: cidr.Addr().Next(), path: path, owners: make(map[netip.Addr]string)}
	m.next = m.gateway.Next()
	raw, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return m, nil
	case err != nil:
		return nil, fmt.Errorf("read IPAM state: %w", err)
	}
	var st stateFile
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("IPAM state %s: %w", path, err)
	}
	if st.CIDR != cidr.String() {
		return nil, fmt.Errorf("IPAM state %s was written for pod CIDR %s, the node now has %s: remove the endpoints first", path, st.CIDR, cidr)
	}
	for a, owner := range st.Owners {
		addr, err := netip.ParseAddr(a)
		if err != nil || !m.usable(addr) {
			return nil, fmt.Errorf("IPAM state %s: bad address %q", path, a)
		}
		m.owners[addr] = owner
	}
	return m, nil
}

// Gateway is the node-side address of every endpoint's veth.
func (m *IPAM) Gateway() netip.Addr { return m.gateway }

// CIDR is the pod CIDR addresses come from.
func (m *IPAM) CIDR() netip.Prefix { return m.cidr }

func (m *IPAM) usable(a netip.Addr) bool {
	return m.cidr.Contains(a) && a != m.cidr.Addr() && a != m.gateway && a != lastAddr(m.cidr)
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Allocate gives owner a free address. Addresses are handed out round-robin so that a released
// address is not reused at once (peers may still hold conntrack state for it).
func (m *IPAM) Allocate(owner string) (netip.Addr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.next
	for range 1 << (32 - m.cidr.Bits()) {
		if !m.usable(a) {
			a = m.gateway.Next()
			continue
		}
		if _, used := m.owners[a]; !used {
			m.owners[a] = owner
			if err := m.saveLocked(); err != nil {
				delete(m.owners, a)
				return netip.Addr{}, err
			}
			m.next = a.Next()
			return a, nil
		}
		a = a.Next()
	}
	return netip.Addr{}, fmt.Errorf("allocate address for %s in %s (%d in use): %w", owner, m.cidr, len(m.owners), ErrExhausted)
}

// Claim records that owner holds addr (used when restoring endpoints). Claiming an address held by
// another owner fails.
func (m *IPAM) Claim(addr netip.Addr, owner string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.usable(addr) {
		return fmt.Errorf("claim %s for %s: not a usable address of %s", addr, owner, m.cidr)
	}
	if cur, used := m.owners[addr]; used {
		if cur == owner {
			return nil
		}
		return fmt.Errorf("claim %s for %s: held by %s", addr, owner, cur)
	}
	m.owners[addr] = owner
	if err := m.saveLocked(); err != nil {
		delete(m.owners, addr)
		return err
	}
	return nil
}

// Release frees addr. Releasing a free address is a no-op.
func (m *IPAM) Release(addr netip.Addr) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	owner, used := m.owners[addr]
	if !used {
		return nil
	}
	delete(m.owners, addr)
	if err := m.saveLocked(); err != nil {
		m.owners[addr] = owner
		return err
	}
	return nil
}

// InUse returns the allocated addresses and their owners.
func (m *IPAM) InUse() map[netip.Addr]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[netip.Addr]string, len(m.owners))
	for a, o := range m.owners {
		out[a] = o
	}
	return out
}

// saveLocked writes the state atomically (temp file and rename) so a crash never leaves a torn file.
func (m *IPAM) saveLocked() error {
	st := stateFile{CIDR: m.cidr.String(), Owners: make(map[string]string, len(m.owners))}
	for a, o := range m.owners {
		st.Owners[a.String()] = o
	}
	raw, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode IPAM state: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(m.path), 0o700); err != nil {
		return fmt.Errorf("save IPAM state: %w", err)
	}
	tmp := m.path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return fmt.Errorf("save IPAM state: %w", err)
	}
	if err := os.Rename(tmp, m.path); err != nil {
		return fmt.Errorf("save IPAM state: %w", err)
	}
	return nil
}
