package bpf

import (
	"context"
	"testing"
	"time"
)

func TestConntrack_RunGCRemovesExpiredFlows(t *testing.T) {
	d := openTest(t, Options{})
	now := monotonicNow()
	live := datapathCtKey{Saddr: addrWords(mustAddr("10.0.0.1")), Daddr: addrWords(mustAddr("10.0.0.2")), Sport: 1, Dport: 2, Proto: ProtoTCP, Family: familyIPv4}
	dead := live
	dead.Sport = 3
	if err := d.objs.PalCt.Put(&live, &datapathCtValue{Created: now, Expires: now + uint64(time.Hour), EndpointId: 1}); err != nil {
		t.Fatal(err)
	}
	if err := d.objs.PalCt.Put(&dead, &datapathCtValue{Created: now - 2, Expires: now - 1, EndpointId: 1}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.Conntrack().RunGC(ctx, 10*time.Millisecond)
	}()
	deadline := time.Now().Add(2 * time.Second)
	for {
		flows, err := d.Conntrack().Dump()
		if err != nil {
			t.Fatal(err)
		}
		if len(flows) == 1 && flows[0].Src.Port() == hostPort(1) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("flows after GC: %v, want only the live one", flows)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
}
