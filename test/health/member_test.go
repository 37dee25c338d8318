package health_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/test/harness"

	"github.com/palisade-mesh/palisade/health"
)

// Environment of a member process (the test binary re-executed by the harness).
const (
	envMember  = "PALISADE_HEALTH_MEMBER" // the member's name; set means member mode
	envCluster = "PALISADE_HEALTH_CLUSTER"
	envAddr    = "PALISADE_HEALTH_ADDR"
	envKeys    = "PALISADE_HEALTH_KEYS" // key set file
	envSeeds   = "PALISADE_HEALTH_SEEDS"
)

func TestMain(m *testing.M) {
	if name := os.Getenv(envMember); name != "" {
		os.Exit(runMember(name))
	}
	code := m.Run()
	harness.Cleanup()
	os.Exit(code)
}

// memberLine is one line a member prints on stdout: a state change it observed.
type memberLine struct {
	Observer string       `json:"observer"`
	Member   string       `json:"member"`
	State    health.State `json:"state"`
	From     health.State `json:"from"`
	At       time.Time    `json:"at"`
}

// runMember joins the gossip on the node address, reports every change on stdout, retries the
// seeds it does not see alive every second (as the agent does with its node registry) and leaves
// gracefully on SIGTERM.
func runMember(name string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	fail := func(err error) int {
		log.Error("member failed", "error", err)
		return 1
	}
	raw, err := os.ReadFile(os.Getenv(envKeys))
	if err != nil {
		return fail(err)
	}
	keys, err := health.ParseKeySet(raw)
	if err != nil {
		return fail(err)
	}
	addr, err := netip.ParseAddr(os.Getenv(envAddr))
	if err != nil {
		return fail(err)
	}
	var outMu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	h, err := health.New(health.Config{
		Meta:     health.Meta{Node: name, Cluster: os.Getenv(envCluster), Addrs: []string{addr.String()}, Version: "test", Started: time.Now()},
		BindAddr: addr,
		Keys:     keys,
		Logger:   log,
		OnChange: func(c health.Change) {
			outMu.Lock()
			defer outMu.Unlock()
			_ = enc.Encode(memberLine{Observer: name, Member: c.Member.Name, State: c.Member.State, From: c.From, At: c.Member.Since})
		},
	})
	if err != nil {
		return fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var seeds []string
	if s := os.Getenv(envSeeds); s != "" {
		seeds = strings.Split(s, ",")
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		var missing []string
		for _, s := range seeds {
			if !seedAlive(h, s) {
				missing = append(missing, s)
			}
		}
		if len(missing) > 0 {
			_, _ = h.Join(missing)
		}
		select {
		case <-ctx.Done():
			if err := h.Leave(2 * time.Second); err != nil {
				return fail(fmt.Errorf("leave: %w", err))
			}
			return 0
		case <-t.C:
		}
	}
}

func seedAlive(h *health.Health, seed string) bool {
	for _, m := range h.Members() {
		if m.Addr.String() == seed {
			return m.State == health.StateAlive || m.State == health.StateSuspect
		}
	}
	return false
}
