package bpf

import (
	"encoding/binary"
	"fmt"
	"testing"
)

// testSegment builds an Ethernet/IPv4/TCP frame from 10.0.0.1:40000 to 10.0.0.2:80.
func testSegment(flags uint8) []byte {
	pkt := make([]byte, 14+20+20)
	binary.BigEndian.PutUint16(pkt[12:], 0x0800)
	ip := pkt[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 40)
	ip[8] = 64
	ip[9] = ProtoTCP
	copy(ip[12:], []byte{10, 0, 0, 1})
	copy(ip[16:], []byte{10, 0, 0, 2})
	tcp := ip[20:]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 80)
	tcp[12] = 5 << 4
	tcp[13] = flags
	return pkt
}

// BenchmarkPolicyVerdict measures the ingress program on one packet with BPF_PROG_TEST_RUN: a
// SYN (the full policy ladder plus a conntrack insert) and an established segment (one conntrack
// hit), with 1 and 10,000 entries in the endpoint's policy map. The program runs against the
// loopback device, registered as the endpoint, so nothing is attached anywhere.
func BenchmarkPolicyVerdict(b *testing.B) {
	for _, entries := range []int{1, 10000} {
		for _, kind := range []struct {
			name  string
			flags uint8
		}{{"syn", 0x02}, {"established", 0x10}} {
			b.Run(fmt.Sprintf("entries=%d/%s", entries, kind.name), func(b *testing.B) {
				d := openTest(b, Options{})
				if err := d.registerEndpoint(7, 1, mustAddr("10.0.0.2")); err != nil {
					b.Fatal(err)
				}
				if err := d.UpsertIPCache(mustPrefix("10.0.0.1/32"), 300); err != nil {
					b.Fatal(err)
				}
				policy := []PolicyEntry{{Identity: 300, Protocol: ProtoTCP, Port: 80}}
				for i := 1; i < entries; i++ {
					policy = append(policy, PolicyEntry{Identity: uint32(1000 + i), Protocol: ProtoTCP, Port: 80})
				}
				if err := d.ReplacePolicy(7, policy); err != nil {
					b.Fatal(err)
				}
				// The SYN run also creates the flow the established run hits.
				if ret, _, err := d.objs.ToEndpoint.Benchmark(testSegment(0x02), 1, nil); err != nil || int32(ret) != -1 {
					b.Fatalf("SYN verdict %d, %v; want TCX_NEXT (allowed)", int32(ret), err)
				}
				b.ResetTimer()
				ret, per, err := d.objs.ToEndpoint.Benchmark(testSegment(kind.flags), b.N, nil)
				if err != nil || int32(ret) != -1 {
					b.Fatalf("verdict %d, %v; want TCX_NEXT (allowed)", int32(ret), err)
				}
				b.ReportMetric(float64(per.Nanoseconds()), "ns/packet")
			})
		}
	}
}

// BenchmarkPolicyUpdate measures what the agent pays to change an endpoint's policy of 10,000
// entries: a whole atomic replacement, and a delta of one added and one removed entry.
func BenchmarkPolicyUpdate(b *testing.B) {
	policy := make([]PolicyEntry, 10000)
	for i := range policy {
		policy[i] = PolicyEntry{Identity: uint32(1000 + i), Protocol: ProtoTCP, Port: 80}
	}
	b.Run("replace-10000", func(b *testing.B) {
		d := openTest(b, Options{})
		for b.Loop() {
			if err := d.ReplacePolicy(7, policy); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("delta-1-of-10000", func(b *testing.B) {
		d := openTest(b, Options{})
		if err := d.ReplacePolicy(7, policy); err != nil {
			b.Fatal(err)
		}
		extra := []PolicyEntry{{Identity: 99, Protocol: ProtoTCP, Port: 80}}
		i := 0
		for b.Loop() {
			adds, dels := extra, []PolicyEntry(nil)
			if i%2 == 1 {
				adds, dels = nil, extra
			}
			if err := d.ApplyPolicyDelta(7, adds, dels); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
