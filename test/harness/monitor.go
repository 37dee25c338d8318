package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/monitor"
)

// Monitor collects the events `palisade monitor -o json` prints for one agent.
type Monitor struct {
	mu     sync.Mutex
	events []monitor.Event
}

// WatchMonitor runs `palisade monitor -o json` with args against the agent until the test ends.
func WatchMonitor(t testing.TB, a *Agent, args ...string) *Monitor {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, Binary(t), append([]string{"monitor", "-o", "json", "--socket", a.Socket}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m := &Monitor{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev monitor.Event
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				m.mu.Lock()
				m.events = append(m.events, ev)
				m.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = cmd.Wait()
	})
	time.Sleep(300 * time.Millisecond) // let the subscription reach the agent
	return m
}

// Events returns the events seen so far.
func (m *Monitor) Events() []monitor.Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]monitor.Event(nil), m.events...)
}

// Seen reports whether any event seen so far matches.
func (m *Monitor) Seen(match func(monitor.Event) bool) bool {
	for _, ev := range m.Events() {
		if match(ev) {
			return true
		}
	}
	return false
}
