package playground

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/palisade-mesh/palisade/test/topology"
)

// Down stops every process of the playground, deletes its namespaces and pinned eBPF state, and
// removes its directory. It carries on past errors and reports them all.
func (s *State) Down() error {
	// Workloads and agents first, then what they talk to: the mesh API servers, then etcd.
	var workloads, servers, etcds []Process
	for _, e := range s.Endpoints {
		if e.Server != nil {
			workloads = append(workloads, *e.Server)
		}
	}
	for _, n := range s.Nodes() {
		workloads = append(workloads, n.Agent)
	}
	for _, c := range s.Clusters {
		if c.MeshAPIServer != nil {
			servers = append(servers, *c.MeshAPIServer)
		}
		etcds = append(etcds, c.Etcd)
	}
	errs := []error{stopAll(workloads), stopAll(servers), stopAll(etcds)}
	for _, n := range s.Nodes() {
		if err := os.RemoveAll(n.PinDir); err != nil {
			errs = append(errs, fmt.Errorf("remove pinned state %s: %w", n.PinDir, err))
		}
	}
	if s.NSPrefix != "" {
		for _, name := range topology.NamespacesWithPrefix(s.NSPrefix) {
			if err := topology.DeleteNamespace(name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := os.RemoveAll(s.Dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", s.Dir, err))
	}
	return errors.Join(errs...)
}

// stopAll asks daemons to end (SIGTERM), all at once so that a large playground stops as fast as
// its slowest daemon, and kills those still running after five seconds.
func stopAll(procs []Process) error {
	var errs []error
	var running []Process
	for _, p := range procs {
		if !alive(p.PID) {
			continue
		}
		if err := syscall.Kill(p.PID, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("stop process %d: %w", p.PID, err))
			continue
		}
		running = append(running, p)
	}
	for deadline := time.Now().Add(5 * time.Second); len(running) > 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		still := running[:0]
		for _, p := range running {
			if alive(p.PID) {
				still = append(still, p)
			}
		}
		running = still
	}
	for _, p := range running {
		if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill process %d: %w", p.PID, err))
		}
	}
	return errors.Join(errs...)
}
