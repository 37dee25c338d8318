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
	var errs []error
	var procs []Process
	for _, e := range s.Endpoints {
		if e.Server != nil {
			procs = append(procs, *e.Server)
		}
	}
	for _, n := range s.Nodes {
		procs = append(procs, n.Agent)
	}
	procs = append(procs, s.Etcd)
	for _, p := range procs {
		if err := stop(p); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range s.Nodes {
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

// stop asks a daemon to end (SIGTERM) and kills it if it has not after five seconds.
func stop(p Process) error {
	if !alive(p.PID) {
		return nil
	}
	if err := syscall.Kill(p.PID, syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop process %d: %w", p.PID, err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if !alive(p.PID) {
			return nil
		}
	}
	if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill process %d: %w", p.PID, err)
	}
	return nil
}
