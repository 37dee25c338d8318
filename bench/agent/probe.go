package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/palisade-mesh/palisade/test/topology"
)

// attemptTimeout bounds one connection attempt of a probe. A SYN the datapath drops is not
// answered, and the kernel would retransmit it only after a second: an attempt gives up long
// before that, while a new attempt starts every probe interval, so the first attempt made after
// the policy allows the flow connects. A connection inside one machine takes well under a
// millisecond, so 25 ms only fails an allowed attempt on a badly overloaded machine.
const attemptTimeout = 25 * time.Millisecond

// probeStats describe the attempts of one firstConnect, to explain a slow sample.
type probeStats struct {
	attempts int
	lastErr  error // of the last failed attempt
}

// firstConnect starts a TCP connection attempt from inside ns to addr every interval, until one
// connects, and returns the time it connected. Attempts overlap (each lasts up to
// attemptTimeout), so the resolution is the interval, not the attempt timeout.
func firstConnect(ctx context.Context, ns *topology.Namespace, addr string, interval, limit time.Duration) (time.Time, probeStats, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		stats probeStats
	)
	defer wg.Wait()
	defer cancel()
	connected := make(chan time.Time, 1)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	result := func() probeStats {
		mu.Lock()
		defer mu.Unlock()
		return stats
	}
	for {
		stats.attempts++
		wg.Add(1)
		go func() {
			defer wg.Done()
			attemptCtx, cancel := context.WithTimeout(ctx, attemptTimeout)
			defer cancel()
			conn, err := ns.DialContext(attemptCtx, nil, "tcp4", addr)
			if err != nil {
				mu.Lock()
				stats.lastErr = err
				mu.Unlock()
				return
			}
			at := time.Now()
			conn.Close()
			select {
			case connected <- at:
			default:
			}
		}()
		select {
		case at := <-connected:
			return at, result(), nil
		case <-ctx.Done():
			st := result()
			return time.Time{}, st, fmt.Errorf("no connection from %s to %s within %s (%d attempts, last: %v): %w", ns.Name, addr, limit, st.attempts, st.lastErr, ctx.Err())
		case <-tick.C:
		}
	}
}

// connects reports whether one TCP connection from inside ns to addr succeeds within timeout.
func connects(ctx context.Context, ns *topology.Namespace, addr string, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := ns.DialContext(ctx, nil, "tcp4", addr)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}
