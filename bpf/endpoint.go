package bpf

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// EndpointConfig names an endpoint and where its programs go.
type EndpointConfig struct {
	// ID is the endpoint's ID (non-zero); it keys the endpoint's policy.
	ID uint32
	// IfName or IfIndex names the node-side veth of the endpoint, resolved in the calling
	// thread's network namespace. IfIndex wins when both are set.
	IfName  string
	IfIndex int
	// NetnsPath is the endpoint's network namespace (e.g. /var/run/netns/x or /proc/<pid>/ns/net).
	// When set, the proxy-steering program is attached there; leave it empty for endpoints that
	// never need the L7 proxy.
	NetnsPath string
	// IPv4 is the endpoint's address; packets it sends from any other source are dropped.
	IPv4 netip.Addr
}

// EndpointState is an endpoint as recorded in the pinned registry.
type EndpointState struct {
	ID            uint32
	IfIndex       int
	IPv4          netip.Addr
	ProxySteering bool // an sk_lookup link is pinned for the endpoint's namespace
	PolicyEntries int  // -1 when no policy is installed
}

const (
	pinFromEndpoint = "from_endpoint"
	pinToEndpoint   = "to_endpoint"
	pinSkLookup     = "sk_lookup"
)

func (c EndpointConfig) validate() error {
	if c.ID == 0 {
		return errors.New("endpoint ID must not be 0")
	}
	if !c.IPv4.Is4() {
		return fmt.Errorf("endpoint %d: IPv4 address %v is not an IPv4 address", c.ID, c.IPv4)
	}
	if c.IfIndex <= 0 && c.IfName == "" {
		return fmt.Errorf("endpoint %d: neither IfName nor IfIndex given", c.ID)
	}
	if c.NetnsPath != "" {
		if _, err := os.Stat(c.NetnsPath); err != nil {
			return fmt.Errorf("endpoint %d: network namespace: %w", c.ID, err)
		}
	}
	return nil
}

func (d *Datapath) endpointDir(id uint32) string {
	return filepath.Join(d.endpointsDir, strconv.FormatUint(uint64(id), 10))
}

// AttachEndpoint registers the endpoint and attaches its programs: TCX on both hooks of its
// node-side veth and, with NetnsPath, the proxy-steering program on its namespace. It is
// idempotent: links already pinned for the same interface and namespace are kept (and moved to the
// current programs), others are replaced. Until a policy is installed the endpoint's traffic is
// dropped. On error nothing new is left attached.
func (d *Datapath) AttachEndpoint(cfg EndpointConfig) error {
	if d.inspectOnly {
		return fmt.Errorf("attach endpoint %d: %w", cfg.ID, errInspectOnly)
	}
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("attach endpoint: %w", err)
	}
	ifindex := cfg.IfIndex
	if ifindex <= 0 {
		iface, err := net.InterfaceByName(cfg.IfName)
		if err != nil {
			return fmt.Errorf("attach endpoint %d: interface %q: %w", cfg.ID, cfg.IfName, err)
		}
		ifindex = iface.Index
	}

	d.mu.Lock()
	defer d.mu.Unlock()

	dir := d.endpointDir(cfg.ID)
	_, statErr := os.Stat(dir)
	existed := statErr == nil
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("attach endpoint %d: create pin directory: %w", cfg.ID, err)
	}
	err := d.attachLocked(cfg, ifindex, dir)
	if err != nil && !existed {
		// Undo the attachment only: a policy installed beforehand stays for the next attempt.
		if derr := errors.Join(d.detachLinksLocked(cfg.ID)...); derr != nil {
			err = errors.Join(err, fmt.Errorf("roll back: %w", derr))
		}
	}
	return err
}

func (d *Datapath) attachLocked(cfg EndpointConfig, ifindex int, dir string) error {
	// The registry entry goes first: the programs drop traffic of interfaces they do not know.
	if err := d.registerEndpoint(cfg.ID, ifindex, cfg.IPv4); err != nil {
		return err
	}
	hooks := []struct {
		pin    string
		prog   *ebpf.Program
		attach ebpf.AttachType
	}{
		{pinFromEndpoint, d.objs.FromEndpoint, ebpf.AttachTCXIngress},
		{pinToEndpoint, d.objs.ToEndpoint, ebpf.AttachTCXEgress},
	}
	for _, h := range hooks {
		path := filepath.Join(dir, h.pin)
		keep, err := d.keepPinnedLink(path, h.prog, func(info *link.Info) bool {
			tcx := info.TCX()
			return tcx != nil && int(tcx.Ifindex) == ifindex && ebpf.AttachType(tcx.AttachType) == h.attach
		})
		if err != nil {
			return fmt.Errorf("attach endpoint %d: %w", cfg.ID, err)
		}
		if keep {
			continue
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: h.prog, Attach: h.attach})
		if err != nil {
			return fmt.Errorf("attach endpoint %d: TCX %s on ifindex %d: %w", cfg.ID, h.attach, ifindex, err)
		}
		if err := pinAndClose(l, path); err != nil {
			return fmt.Errorf("attach endpoint %d: %w", cfg.ID, err)
		}
	}

	path := filepath.Join(dir, pinSkLookup)
	if cfg.NetnsPath == "" {
		return removePinnedLink(path)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(cfg.NetnsPath, &st); err != nil {
		return fmt.Errorf("attach endpoint %d: network namespace %s: %w", cfg.ID, cfg.NetnsPath, err)
	}
	keep, err := d.keepPinnedLink(path, d.objs.SteerToProxy, func(info *link.Info) bool {
		ns := info.NetNs()
		return ns != nil && uint64(ns.NetnsInode) == st.Ino
	})
	if err != nil || keep {
		return err
	}
	nsFile, err := os.Open(cfg.NetnsPath)
	if err != nil {
		return fmt.Errorf("attach endpoint %d: open network namespace: %w", cfg.ID, err)
	}
	defer nsFile.Close()
	l, err := link.AttachNetNs(int(nsFile.Fd()), d.objs.SteerToProxy)
	if err != nil {
		return fmt.Errorf("attach endpoint %d: sk_lookup on %s: %w", cfg.ID, cfg.NetnsPath, err)
	}
	return pinAndClose(l, path)
}

// registerEndpoint records ifindex -> endpoint, replacing entries of the same endpoint left by an
// interface that was recreated.
func (d *Datapath) registerEndpoint(id uint32, ifindex int, addr netip.Addr) error {
	states, err := d.registry()
	if err != nil {
		return err
	}
	for _, s := range states {
		if s.id == id && s.ifindex != uint32(ifindex) {
			if err := d.objs.PalEndpoints.Delete(s.ifindex); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("remove stale registry entry of endpoint %d: %w", id, err)
			}
		}
		if s.ifindex == uint32(ifindex) && s.id != id {
			return fmt.Errorf("attach endpoint %d: ifindex %d already belongs to endpoint %d", id, ifindex, s.id)
		}
	}
	info := datapathEndpointInfo{EndpointId: id, Family: familyIPv4, Addr: addrWords(addr)}
	if err := d.objs.PalEndpoints.Put(uint32(ifindex), &info); err != nil {
		return fmt.Errorf("register endpoint %d on ifindex %d: %w", id, ifindex, err)
	}
	return nil
}

type registryEntry struct {
	ifindex uint32
	id      uint32
	addr    netip.Addr
}

func (d *Datapath) registry() ([]registryEntry, error) {
	var out []registryEntry
	err := scanMap(d.objs.PalEndpoints, func(ifindex uint32, info datapathEndpointInfo) bool {
		out = append(out, registryEntry{ifindex: ifindex, id: info.EndpointId, addr: wordsAddr(info.Addr)})
		return false
	})
	if err != nil {
		return nil, fmt.Errorf("read endpoint registry: %w", err)
	}
	return out, nil
}

// keepPinnedLink reports whether the link pinned at path still serves its purpose (same target as
// matches says, and updatable to prog); a link that does not is detached and unpinned.
func (d *Datapath) keepPinnedLink(path string, prog *ebpf.Program, matches func(*link.Info) bool) (bool, error) {
	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("load pinned link %s: %w", path, err)
	}
	defer l.Close()
	info, err := l.Info()
	if err == nil && matches(info) && l.Update(prog) == nil {
		return true, nil
	}
	return false, detachPinned(l, path)
}

func detachPinned(l link.Link, path string) error {
	// A link whose interface or namespace is gone fails to detach; it is inert already.
	_ = l.Detach()
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("unpin link %s: %w", path, err)
	}
	return nil
}

func removePinnedLink(path string) error {
	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load pinned link %s: %w", path, err)
	}
	defer l.Close()
	return detachPinned(l, path)
}

func pinAndClose(l link.Link, path string) error {
	defer l.Close()
	if err := l.Pin(path); err != nil {
		_ = l.Detach()
		return fmt.Errorf("pin link %s: %w", path, err)
	}
	return nil
}

// adoptEndpointLinks moves an endpoint's pinned links to the current programs. stale reports an
// endpoint whose interface or namespace is gone.
func (d *Datapath) adoptEndpointLinks(id uint32) (stale bool, err error) {
	dir := d.endpointDir(id)
	progs := map[string]*ebpf.Program{
		pinFromEndpoint: d.objs.FromEndpoint,
		pinToEndpoint:   d.objs.ToEndpoint,
		pinSkLookup:     d.objs.SteerToProxy,
	}
	found := 0
	for name, prog := range progs {
		l, err := link.LoadPinnedLink(filepath.Join(dir, name), nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("load pinned link %s: %w", name, err)
		}
		found++
		err = l.Update(prog)
		l.Close()
		if err != nil {
			// ENOLINK: the interface or namespace was destroyed.
			return true, nil
		}
	}
	return found == 0, nil
}

// DetachEndpoint removes the endpoint's programs, pins, registry entry, policy and conntrack
// entries. Detaching an unknown endpoint is not an error.
func (d *Datapath) DetachEndpoint(id uint32) error {
	if d.inspectOnly {
		return fmt.Errorf("detach endpoint %d: %w", id, errInspectOnly)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.detachLocked(id)
}

func (d *Datapath) detachLocked(id uint32) error {
	errs := d.detachLinksLocked(id)
	if err := d.objs.PalPolicy.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		errs = append(errs, fmt.Errorf("delete policy of endpoint %d: %w", id, err))
	}
	delete(d.policyCounts, id)
	if _, err := d.Conntrack().FlushEndpoint(id); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("detach endpoint %d: %w", id, errors.Join(errs...))
	}
	return nil
}

// detachLinksLocked removes the endpoint's links, pins and registry entries.
func (d *Datapath) detachLinksLocked(id uint32) []error {
	var errs []error
	dir := d.endpointDir(id)
	for _, name := range []string{pinFromEndpoint, pinToEndpoint, pinSkLookup} {
		if err := removePinnedLink(filepath.Join(dir, name)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
	}
	states, err := d.registry()
	if err != nil {
		errs = append(errs, err)
	}
	for _, s := range states {
		if s.id != id {
			continue
		}
		if err := d.objs.PalEndpoints.Delete(s.ifindex); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("unregister endpoint %d: %w", id, err))
		}
	}
	return errs
}

// Endpoints lists the registered endpoints.
func (d *Datapath) Endpoints() ([]EndpointState, error) {
	entries, err := d.registry()
	if err != nil {
		return nil, err
	}
	out := make([]EndpointState, 0, len(entries))
	for _, e := range entries {
		_, serr := os.Stat(filepath.Join(d.endpointDir(e.id), pinSkLookup))
		n, err := d.policySize(e.id)
		if err != nil {
			return nil, err
		}
		out = append(out, EndpointState{ID: e.id, IfIndex: int(e.ifindex), IPv4: e.addr, ProxySteering: serr == nil, PolicyEntries: n})
	}
	return out, nil
}
