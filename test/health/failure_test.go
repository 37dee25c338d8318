package health_test

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/health"
)

// detectionTarget is the target for 8 members with the tuned profile; the profile's own
// bound (DetectionBound(8) = 3.6 s) is below it.
const detectionTarget = 5 * time.Second

func TestHealth_KilledMemberIsDeadEverywhereThenAliveAfterRestart(t *testing.T) {
	c := newCluster(t, 8)
	c.startAll()
	c.waitConverged(c.order, 20*time.Second)
	if bound := health.TunedLAN.DetectionBound(8); bound >= detectionTarget {
		t.Fatalf("the tuned profile's bound %s is not under the %s target", bound, detectionTarget)
	}

	victim := "n3"
	t0 := time.Now()
	c.signal(victim, syscall.SIGKILL)
	dead := c.waitFor(c.others(victim), victim, health.StateDead, t0, detectionTarget+2*time.Second)
	times := durations(dead, t0)
	t.Logf("SIGKILLed %s declared dead after %v (per observer)", victim, times)
	if worst := times[len(times)-1]; worst > detectionTarget {
		t.Fatalf("slowest observer took %s, target %s", worst, detectionTarget)
	}

	t1 := time.Now()
	c.start(victim)
	alive := c.waitFor(c.others(victim), victim, health.StateAlive, t1, 10*time.Second)
	t.Logf("restarted %s alive again after %v", victim, durations(alive, t1))
	c.waitConverged(c.order, 10*time.Second)

	// A graceful stop is "left", not "dead".
	t2 := time.Now()
	c.signal("n5", syscall.SIGTERM)
	c.waitFor(c.others("n5"), "n5", health.StateLeft, t2, 5*time.Second)
}

func TestHealth_PartitionedNodeIsSuspectedThenDeadAndHealsWithoutFlapping(t *testing.T) {
	c := newCluster(t, 5)
	c.startAll()
	c.waitConverged(c.order, 20*time.Second)
	isolated := "n5"
	rest := c.others(isolated)
	fh, err := c.topo.Fabric.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	link, err := fh.LinkByName("n-" + isolated)
	if err != nil {
		t.Fatal(err)
	}

	t0 := time.Now()
	if err := fh.LinkSetDown(link); err != nil {
		t.Fatalf("cut %s from the fabric: %v", isolated, err)
	}
	healed := false
	t.Cleanup(func() {
		if !healed {
			_ = fh.LinkSetUp(link)
		}
	})
	dead := c.waitFor(rest, isolated, health.StateDead, t0, 10*time.Second)
	t.Logf("isolated %s dead on the others after %v", isolated, durations(dead, t0))
	suspected := 0
	for _, o := range rest {
		if at, ok := c.firstReport(o, isolated, health.StateSuspect, t0); ok && at.Before(dead[o]) {
			suspected++
		}
	}
	if suspected == 0 {
		t.Fatal("no member suspected the isolated node before declaring it dead")
	}
	// The isolated node takes longer: nobody can confirm its suspicions (so they run to the
	// maximum timeout), and as all its probes fail Lifeguard's awareness slows its own probing up
	// to 8x, which is what keeps an overloaded or cut-off node from declaring everyone dead at once.
	var isolatedView []time.Duration
	for _, o := range rest {
		at := c.waitFor([]string{isolated}, o, health.StateDead, t0, 20*time.Second)
		isolatedView = append(isolatedView, at[isolated].Sub(t0))
	}
	t.Logf("isolated %s saw the others dead after %v", isolated, isolatedView)

	t1 := time.Now()
	if err := fh.LinkSetUp(link); err != nil {
		t.Fatalf("heal the partition: %v", err)
	}
	healed = true
	c.waitFor(rest, isolated, health.StateAlive, t1, 15*time.Second)
	for _, o := range rest {
		c.waitFor([]string{isolated}, o, health.StateAlive, t1, 15*time.Second)
	}
	settled := c.waitConverged(c.order, 15*time.Second)
	t.Logf("healed: everyone alive everywhere %s after the link came back", settled.Sub(t1).Round(time.Millisecond))

	time.Sleep(30 * time.Second)
	if changes := c.changesSince(settled); len(changes) > 0 {
		t.Fatalf("%d state changes in the 30 s after healing, first: %+v", len(changes), changes[0])
	}
}

func TestHealth_NoFalseDeadVerdictUnderCPULoad(t *testing.T) {
	const window = 60 * time.Second
	c := newCluster(t, 8)
	c.startAll()
	settled := c.waitConverged(c.order, 20*time.Second)

	// A busy loop per core (and one more) at the members' own priority.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range runtime.NumCPU() + 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := 0
			for ctx.Err() == nil {
				for i := range 1_000_000 {
					x += i
				}
			}
			_ = x
		}()
	}
	time.Sleep(window)
	cancel()
	wg.Wait()

	var verdicts, suspicions []memberLine
	for _, l := range c.changesSince(settled) {
		switch l.State {
		case health.StateDead, health.StateLeft:
			verdicts = append(verdicts, l)
		case health.StateSuspect:
			suspicions = append(suspicions, l)
		}
	}
	t.Logf("under load for %s: %d suspicions (refuted), %d dead verdicts", window, len(suspicions), len(verdicts))
	if len(verdicts) > 0 {
		t.Fatalf("false verdicts under CPU load: %+v", verdicts)
	}
	for _, m := range c.order {
		for _, o := range c.order {
			if s := c.state(o, m); s != health.StateAlive && s != health.StateSuspect {
				t.Fatalf("%s sees %s %q after the load", o, m, s)
			}
		}
	}
}

func TestHealth_WrongKeyIsRejectedAndLogged(t *testing.T) {
	c := newCluster(t, 4)
	members := []string{"n1", "n2", "n3"}
	for _, n := range members {
		c.start(n)
	}
	c.waitConverged(members, 20*time.Second)
	c.startWithKeys("n4", writeKeys(t, "intruder"))

	deadline := time.Now().Add(10 * time.Second)
	for {
		logged := 0
		for _, n := range members {
			if strings.Contains(c.stderrOf(n), "rejected gossip message") {
				logged++
			}
		}
		if logged > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no member logged the intruder's rejected messages")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // the intruder keeps retrying its seeds every second
	for _, n := range members {
		if s := c.state(n, "n4"); s != "" {
			t.Fatalf("%s reports the intruder as %q", n, s)
		}
		if s := c.state("n4", n); s != "" {
			t.Fatalf("the intruder reports %s as %q", n, s)
		}
	}
	for _, n := range members {
		for _, line := range strings.Split(c.stderrOf(n), "\n") {
			if strings.Contains(line, "primary") || strings.Contains(line, "keys\":") {
				t.Fatalf("%s logged key material: %s", n, line)
			}
		}
	}
}
