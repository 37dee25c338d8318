package bpf

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// errInspectOnly is returned by operations that need the programs on a Datapath from OpenPinned.
var errInspectOnly = errors.New("datapath opened for inspection (OpenPinned): programs are not loaded")

// OpenPinned opens the maps pinned under pinDir (DefaultPinDir when empty) without loading
// programs or touching any link, for inspecting a datapath that an agent owns, or owned before it
// stopped: endpoints, ipcache, policies, conntrack and event counters read as usual, and conntrack
// flushes and GC work. Attaching, detaching and Remove are refused. Close releases the maps.
func OpenPinned(pinDir string, logger *slog.Logger) (*Datapath, error) {
	opts := Options{PinDir: pinDir, Logger: logger}.withDefaults()
	d := &Datapath{
		opts:         opts,
		log:          opts.Logger.With("component", "datapath"),
		mapsDir:      filepath.Join(opts.PinDir, "maps"),
		endpointsDir: filepath.Join(opts.PinDir, "endpoints"),
		policyCounts: make(map[uint32]int),
		inspectOnly:  true,
	}
	spec, err := loadDatapath()
	if err != nil {
		return nil, fmt.Errorf("parse datapath object: %w", err)
	}
	maps := map[string]**ebpf.Map{
		"pal_ct": &d.objs.PalCt, "pal_endpoints": &d.objs.PalEndpoints, "pal_ev_limit": &d.objs.PalEvLimit,
		"pal_ev_stats": &d.objs.PalEvStats, "pal_events": &d.objs.PalEvents, "pal_ipcache": &d.objs.PalIpcache,
		"pal_policy": &d.objs.PalPolicy, "pal_proxy_socks": &d.objs.PalProxySocks,
	}
	for name, dst := range maps {
		path := filepath.Join(d.mapsDir, name)
		m, err := ebpf.LoadPinnedMap(path, nil)
		if err != nil {
			d.objs.Close()
			return nil, fmt.Errorf("open pinned map %s (is a datapath pinned in %s?): %w", path, opts.PinDir, err)
		}
		if err := spec.Maps[name].Compatible(m); err != nil {
			m.Close()
			d.objs.Close()
			return nil, fmt.Errorf("pinned map %s was made by an incompatible version: %w", path, err)
		}
		*dst = m
	}
	return d, nil
}
