package bpf

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/cilium/ebpf"
)

// Datapath is the loaded datapath of one node: its programs and pinned maps. It is safe for
// concurrent use. Close releases this process's handles and leaves enforcement running; Remove
// tears everything down.
type Datapath struct {
	opts         Options
	log          *slog.Logger
	mapsDir      string
	endpointsDir string
	objs         datapathObjects
	innerSpec    *ebpf.MapSpec

	// mu serialises changes to endpoints and policies; map lookups from the kernel side need no lock.
	mu sync.Mutex
	// policyCounts caches the number of entries in each endpoint's policy map.
	policyCounts map[uint32]int
	// inspectOnly marks a Datapath from OpenPinned: maps only, no programs.
	inspectOnly bool
}

// Open loads the datapath programs and opens (or creates) the maps pinned under Options.PinDir.
// When the pins already exist, as after an agent restart, it adopts them: maps keep their content,
// every pinned endpoint link moves to the freshly loaded programs, and links whose interface or
// namespace disappeared are removed with their endpoint's registry entry and policy.
func Open(opts Options) (*Datapath, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("datapath options: %w", err)
	}
	if err := ensureBPFFS(opts.PinDir); err != nil {
		return nil, err
	}
	d := &Datapath{
		opts:         opts,
		log:          opts.Logger.With("component", "datapath"),
		mapsDir:      filepath.Join(opts.PinDir, "maps"),
		endpointsDir: filepath.Join(opts.PinDir, "endpoints"),
		policyCounts: make(map[uint32]int),
	}
	for _, dir := range []string{d.mapsDir, d.endpointsDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
	}

	spec, err := loadDatapath()
	if err != nil {
		return nil, fmt.Errorf("parse datapath object: %w", err)
	}
	vars := map[string]uint64{
		"ct_timeout_syn_ns":     uint64(opts.CTTimeoutSYN.Nanoseconds()),
		"ct_timeout_tcp_ns":     uint64(opts.CTTimeoutTCP.Nanoseconds()),
		"ct_timeout_closing_ns": uint64(opts.CTTimeoutClosing.Nanoseconds()),
		"ct_timeout_other_ns":   uint64(opts.CTTimeoutOther.Nanoseconds()),
		"events_per_sec":        uint64(opts.EventsPerSecond),
		"events_burst":          uint64(opts.EventsBurst),
	}
	for name, v := range vars {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("set datapath variable %s: %w", name, err)
		}
	}
	d.innerSpec = spec.Maps["pal_policy"].InnerMap.Copy()
	d.innerSpec.MaxEntries = uint32(opts.PolicyMapMaxEntries)

	err = spec.LoadAndAssign(&d.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: d.mapsDir}})
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return nil, fmt.Errorf("load datapath: maps pinned in %s come from an incompatible version "+
			"(detach the endpoints and remove the directory to start over): %w", d.mapsDir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("load datapath: %w", err)
	}
	if err := d.reconcile(); err != nil {
		d.objs.Close()
		return nil, err
	}
	return d, nil
}

// PinDir is the bpffs directory holding this datapath's pins.
func (d *Datapath) PinDir() string { return d.opts.PinDir }

// Close releases the process's handles on programs and maps. Pinned maps and links stay, so the
// kernel keeps enforcing the last installed state until a new Open adopts it.
func (d *Datapath) Close() error {
	if err := d.objs.Close(); err != nil {
		return fmt.Errorf("close datapath objects: %w", err)
	}
	return nil
}

// Remove detaches every endpoint, unpins every map and deletes the pin directory. Programs and
// maps disappear from the kernel once no other process holds them. The Datapath is closed after.
func (d *Datapath) Remove() error {
	if d.inspectOnly {
		return fmt.Errorf("remove datapath: %w", errInspectOnly)
	}
	ids, err := d.pinnedEndpointIDs()
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, id := range ids {
		if err := d.DetachEndpoint(id); err != nil {
			errs = append(errs, err)
		}
	}
	for _, m := range []*ebpf.Map{
		d.objs.PalCt, d.objs.PalEndpoints, d.objs.PalEvLimit, d.objs.PalEvStats,
		d.objs.PalEvents, d.objs.PalIpcache, d.objs.PalPolicy, d.objs.PalProxySocks,
	} {
		if err := m.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpin map %s: %w", m, err))
		}
	}
	if err := d.Close(); err != nil {
		errs = append(errs, err)
	}
	for _, dir := range []string{d.endpointsDir, d.mapsDir, d.opts.PinDir} {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}

// pinnedEndpointIDs lists the endpoints that have a pin directory.
func (d *Datapath) pinnedEndpointIDs() ([]uint32, error) {
	entries, err := os.ReadDir(d.endpointsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list pinned endpoints in %s: %w", d.endpointsDir, err)
	}
	var ids []uint32
	for _, e := range entries {
		id, err := strconv.ParseUint(e.Name(), 10, 32)
		if err != nil || !e.IsDir() {
			d.log.Warn("ignoring unexpected entry in pin directory", "path", filepath.Join(d.endpointsDir, e.Name()))
			continue
		}
		ids = append(ids, uint32(id))
	}
	return ids, nil
}

// reconcile adopts the pinned endpoint links: each moves to the programs just loaded; endpoints
// whose interface or namespace vanished while nobody watched are removed.
func (d *Datapath) reconcile() error {
	ids, err := d.pinnedEndpointIDs()
	if err != nil {
		return err
	}
	for _, id := range ids {
		stale, err := d.adoptEndpointLinks(id)
		if err != nil {
			return fmt.Errorf("adopt pinned links of endpoint %d: %w", id, err)
		}
		if stale {
			d.log.Info("removing endpoint whose interface or namespace is gone", "endpoint", id)
			if err := d.DetachEndpoint(id); err != nil {
				return err
			}
			continue
		}
		d.log.Debug("adopted pinned endpoint", "endpoint", id)
	}
	return nil
}

// ProgramIDs returns the kernel IDs of the programs this Datapath loaded, by program name, for
// diagnostics (bpftool prog show id N) and for checking that nothing stays loaded after Remove.
func (d *Datapath) ProgramIDs() (map[string]uint32, error) {
	if d.inspectOnly {
		return nil, errInspectOnly
	}
	out := make(map[string]uint32)
	for name, p := range map[string]*ebpf.Program{
		"from_endpoint": d.objs.FromEndpoint, "to_endpoint": d.objs.ToEndpoint, "steer_to_proxy": d.objs.SteerToProxy,
	} {
		info, err := p.Info()
		if err != nil {
			return nil, fmt.Errorf("program %s info: %w", name, err)
		}
		id, ok := info.ID()
		if !ok {
			return nil, fmt.Errorf("program %s: kernel reports no ID", name)
		}
		out[name] = uint32(id)
	}
	return out, nil
}
