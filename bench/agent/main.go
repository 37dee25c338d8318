// Command agent measures the node agent against the targets of issue 6, with real `palisade agent`
// processes on two nodes of the test topology, a real embedded etcd and real traffic:
//
//  1. time from `palisade policy import` to enforcement on each of 100 endpoints (50 per node),
//     from each agent's API (Endpoint.policy_revision), cross-checked by connections that the
//     new policy allows and the old one did not;
//  2. time from CreateEndpoint to the new endpoint's first allowed TCP connection;
//  3. the agent's resident memory with 10,000 identities (allocated through the identity allocator
//     by a simulated node) and 1,000 rules (imported with the CLI), and the time it takes to
//     absorb them; then figure 1 again in that world.
//
// It needs root (network namespaces, eBPF). Everything it creates (namespaces, pins, etcd data,
// the built binary) is its own and is removed at the end, also on failure or Ctrl-C.
//
//	go run ./bench/agent
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"
)

type config struct {
	palisade      string
	imports       int
	worldImports  int
	endpoints     int
	creates       int
	identities    int
	rules         int
	poll          time.Duration
	probeInterval time.Duration
	fsync         bool
	importsOnly   bool
}

func main() {
	var cfg config
	flag.StringVar(&cfg.palisade, "palisade", "", "palisade binary to run (default: build ./cmd/palisade into the work directory)")
	flag.IntVar(&cfg.imports, "imports", 20, "counted policy imports of figure 1 (after one warm-up import)")
	flag.IntVar(&cfg.worldImports, "world-imports", 6, "figure 1 imports repeated with the 10,000-identity world loaded (0: skip)")
	flag.IntVar(&cfg.endpoints, "endpoints", 100, "endpoints of figure 1, spread over the two nodes")
	flag.IntVar(&cfg.creates, "creates", 32, "endpoints created one by one in figure 2")
	flag.IntVar(&cfg.identities, "identities", 10000, "identities the simulated node allocates in figure 3 (multiple of 10)")
	flag.IntVar(&cfg.rules, "rules", 1000, "rules (one CiliumNetworkPolicy each) imported in figure 3")
	flag.DurationVar(&cfg.poll, "poll", 10*time.Millisecond, "how often each agent's ListEndpoints is polled in figure 1 (2ms makes the agents serve ~1,000 calls/s, which on 2 shared cores slows what is measured)")
	flag.DurationVar(&cfg.probeInterval, "probe-interval", 2*time.Millisecond, "how often a new TCP connection is tried while waiting for one to be allowed")
	flag.BoolVar(&cfg.fsync, "etcd-fsync", true, "run the embedded etcd with fsync, as an install does (false: faster, like the tests)")
	flag.BoolVar(&cfg.importsOnly, "imports-only", false, "run figure 1 only (for comparing binaries with -palisade, interleaved)")
	flag.Parse()
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	if err := validate(cfg); err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		stop()
		log.Fatal(err)
	}
}

func validate(cfg config) error {
	var errs []error
	if os.Geteuid() != 0 {
		errs = append(errs, errors.New("needs root (network namespaces, eBPF)"))
	}
	if cfg.endpoints < 4 || cfg.endpoints > 400 || cfg.endpoints%2 != 0 {
		errs = append(errs, fmt.Errorf("-endpoints %d: want an even number from 4 to 400 (at most 200 per node's /24)", cfg.endpoints))
	}
	if cfg.creates < 1 || cfg.endpoints/2+cfg.creates > 230 {
		errs = append(errs, fmt.Errorf("-creates %d: want at least 1, and endpoints/2+creates within a node's /24", cfg.creates))
	}
	if cfg.imports < 1 {
		errs = append(errs, fmt.Errorf("-imports %d: want at least 1", cfg.imports))
	}
	if cfg.identities < 10 || cfg.identities%worldVersions != 0 || cfg.identities/worldVersions < cfg.endpoints {
		errs = append(errs, fmt.Errorf("-identities %d: want a multiple of %d with at least one app per figure-1 endpoint", cfg.identities, worldVersions))
	}
	if cfg.rules < 1 || cfg.rules > cfg.identities/worldVersions {
		errs = append(errs, fmt.Errorf("-rules %d: want 1 to identities/%d (one rule per app)", cfg.rules, worldVersions))
	}
	if cfg.poll <= 0 || cfg.probeInterval <= 0 {
		errs = append(errs, errors.New("-poll and -probe-interval must be positive"))
	}
	return errors.Join(errs...)
}

// run sets the cluster up, runs the figures in order and prints the results. The deferred
// teardown runs whatever happened.
func run(ctx context.Context, cfg config) (err error) {
	start := time.Now()
	b, err := newBench(ctx, cfg)
	defer func() {
		if b != nil {
			err = errors.Join(err, b.close())
		}
	}()
	if err != nil {
		return err
	}
	var res results
	res.load = loadAverage()

	log.Printf("figure 1: %d policy imports over %d endpoints", cfg.imports, len(b.members))
	if res.imports, err = b.measureImports(ctx, cfg.imports); err != nil {
		return fmt.Errorf("figure 1: %w", err)
	}
	if cfg.importsOnly {
		res.elapsed = time.Since(start)
		res.print(os.Stdout, cfg)
		return nil
	}
	log.Printf("figure 2: %d endpoints created one by one", cfg.creates)
	if res.creates, err = b.measureCreates(ctx); err != nil {
		return fmt.Errorf("figure 2: %w", err)
	}
	log.Printf("figure 3: %d identities and %d rules", cfg.identities, cfg.rules)
	if res.memory, err = b.measureMemory(ctx); err != nil {
		return fmt.Errorf("figure 3: %w", err)
	}
	if cfg.worldImports > 0 {
		log.Printf("figure 1 again with the world loaded: %d imports", cfg.worldImports)
		imp, err := b.measureImports(ctx, cfg.worldImports)
		if err != nil {
			return fmt.Errorf("figure 1 with the world loaded: %w", err)
		}
		res.worldImports = &imp
	}
	res.elapsed = time.Since(start)
	res.print(os.Stdout, cfg)
	return nil
}
