// Command health measures gossip failure detection: for clusters of 8 and 32 members it kills a
// member (its gossip stops without a goodbye, as after SIGKILL), times until the first and the
// last other member declare it dead, restarts it under the same name and address (joining every
// other member, as the agent joins every registered node), and repeats;
// it also measures the bytes each member sends per second in a quiet cluster. The tuned profile
// and memberlist's default LAN profile run in the same invocation, concurrently, and the output
// is a Markdown table with ratios.
//
// Members run in this process on 127.0.0.1 with encryption on, so the figures are memberlist's
// timers and protocol cost, not a network's.
//
//	go run ./bench/health -kills 20 -sizes 8,32
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/palisade-mesh/palisade/health"
)

func main() {
	kills := flag.Int("kills", 20, "kills per cluster")
	sizesFlag := flag.String("sizes", "8,32", "cluster sizes")
	quiet := flag.Duration("quiet", 10*time.Second, "quiet window for the bandwidth measurement")
	flag.Parse()
	var sizes []int
	for _, s := range strings.Split(*sizesFlag, ",") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 3 {
			log.Fatalf("-sizes: %q is not a cluster size of at least 3", s)
		}
		sizes = append(sizes, n)
	}
	keys, err := health.NewKeySet()
	if err != nil {
		log.Fatal(err)
	}
	profiles := []health.Profile{health.TunedLAN, health.DefaultLAN}

	type key struct {
		profile string
		n       int
	}
	results := map[key]result{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range profiles {
		for _, n := range sizes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := run(p, n, *kills, *quiet, keys)
				if err != nil {
					log.Fatalf("%s, %d members: %v", p.Name, n, err)
				}
				mu.Lock()
				results[key{p.Name, n}] = r
				mu.Unlock()
			}()
		}
	}
	wg.Wait()

	fmt.Printf("| members | profile | bound | first dead: median | p99 | all dead: median | p99 | max | sent per member | all-dead median vs default |\n")
	fmt.Printf("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, n := range sizes {
		base := results[key{health.DefaultLAN.Name, n}]
		for _, p := range profiles {
			r := results[key{p.Name, n}]
			fmt.Printf("| %d | %s | %s | %s | %s | %s | %s | %s | %.0f B/s | %.2fx |\n", n, p.Name, p.DetectionBound(n).Round(10*time.Millisecond),
				ms(percentile(r.first, 50)), ms(percentile(r.first, 99)), ms(percentile(r.all, 50)), ms(percentile(r.all, 99)), ms(slices.Max(r.all)),
				r.bytesPerSec, float64(percentile(r.all, 50))/float64(percentile(base.all, 50)))
		}
	}
}

type result struct {
	first, all  []time.Duration
	bytesPerSec float64
}

type member struct {
	name string
	port int
	h    *health.Health
}

func start(p health.Profile, name string, port int, keys health.KeySet) (*health.Health, error) {
	return health.New(health.Config{
		Meta:        health.Meta{Node: name, Cluster: "bench-" + p.Name, Started: time.Now()},
		BindAddr:    netip.MustParseAddr("127.0.0.1"),
		Port:        port,
		BindAnyPort: port == 0,
		Keys:        keys,
		Profile:     p,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
}

func run(p health.Profile, n, kills int, quiet time.Duration, keys health.KeySet) (result, error) {
	var r result
	members := make([]*member, n)
	defer func() {
		for _, m := range members {
			if m != nil && m.h != nil {
				m.h.Close()
			}
		}
	}()
	for i := range members {
		name := fmt.Sprintf("m%02d", i)
		h, err := start(p, name, 0, keys)
		if err != nil {
			return r, err
		}
		members[i] = &member{name: name, port: int(h.LocalAddr().Port()), h: h}
		if i > 0 {
			if _, err := h.Join([]string{members[0].h.LocalAddr().String()}); err != nil {
				return r, err
			}
		}
	}
	if err := waitAll(members, nil, health.StateAlive, time.Minute); err != nil {
		return r, err
	}

	before := sent(members)
	time.Sleep(quiet)
	r.bytesPerSec = float64(sent(members)-before) / float64(n) / quiet.Seconds()

	for k := range kills {
		victim := members[1+k%(n-1)]
		t0 := time.Now()
		victim.h.Close()
		if err := waitAll(members, victim, health.StateDead, 2*time.Minute); err != nil {
			return r, fmt.Errorf("kill %d: %w", k, err)
		}
		first, last := time.Duration(1<<62), time.Duration(0)
		for _, m := range members {
			if m == victim {
				continue
			}
			v, _ := m.h.Member(victim.name)
			d := v.Since.Sub(t0)
			first, last = min(first, d), max(last, d)
		}
		r.first = append(r.first, first)
		r.all = append(r.all, last)
		t1 := time.Now()

		h, err := start(p, victim.name, victim.port, keys)
		if err != nil {
			return r, fmt.Errorf("restart %s: %w", victim.name, err)
		}
		victim.h = h
		// Like the agent, which joins every registered node it does not see alive.
		var seeds []string
		for _, m := range members {
			if m != victim {
				seeds = append(seeds, m.h.LocalAddr().String())
			}
		}
		if _, err := h.Join(seeds); err != nil {
			return r, err
		}
		if err := waitAll(members, victim, health.StateAlive, time.Minute); err != nil {
			return r, fmt.Errorf("rejoin after kill %d: %w", k, err)
		}
		log.Printf("%s, %d members: kill %d: dead on all after %s, alive again after %s", p.Name, n, k+1, last.Round(time.Millisecond), time.Since(t1).Round(time.Millisecond))
	}
	return r, nil
}

func sent(members []*member) uint64 {
	var total uint64
	for _, m := range members {
		p, s := m.h.SentBytes()
		total += p + s
	}
	return total
}

// waitAll waits until every member other than target sees target (every member when nil) in state.
func waitAll(members []*member, target *member, state health.State, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		ok := true
		for _, obs := range members {
			if obs == target {
				continue
			}
			for _, m := range members {
				if (target != nil && m != target) || m == obs {
					continue
				}
				if v, found := obs.h.Member(m.name); !found || v.State != state {
					ok = false
				}
			}
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("members did not all reach %s within %s", state, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func init() { log.SetOutput(os.Stderr) }
