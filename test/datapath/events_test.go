package datapath

import (
	"runtime"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/bpf"
)

func TestEvents_FloodIsRateLimited(t *testing.T) {
	const rate, burst = 50, 10
	c := newCluster(t)
	n1 := c.addNode("n1", bpf.Options{EventsPerSecond: rate, EventsBurst: burst})
	a := c.addEndpoint(n1, "a", idClient)
	b := c.addEndpoint(n1, "b", idServer)
	c.policy(a, allowAllEgress)
	c.policy(b) // every datagram is a new flow that b's policy drops: one drop event each

	conn, err := a.NS.DialTimeout("udp", addrPort(b, 9999).String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	const sent = 3000
	for i := 0; i < sent; i++ {
		if _, err := conn.Write([]byte("flood")); err != nil {
			t.Fatal(err)
		}
	}
	elapsed := time.Since(start)

	stats, err := n1.dp.EventStats()
	if err != nil {
		t.Fatal(err)
	}
	cpus := runtime.NumCPU()
	// Per CPU: the burst plus what the rate refills; generous slack for the egress verdicts of a.
	limit := uint64(cpus) * (burst + uint64(float64(rate)*elapsed.Seconds()) + 2)
	if stats.Emitted > limit {
		t.Errorf("%d events emitted for %d packets in %v, want at most %d", stats.Emitted, sent, elapsed, limit)
	}
	if stats.RateLimited < sent/2 {
		t.Errorf("only %d events rate limited out of %d drops", stats.RateLimited, sent)
	}
	// The reader still gets the events that were emitted.
	n1.events.wait(t, "a drop event of the flood", verdict(bpf.VerdictDenied, bpf.ReasonNoPolicy))
}
