package bpf

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// Conntrack gives access to the datapath's connection tracking table.
type Conntrack struct{ d *Datapath }

// Conntrack returns the connection tracking table of the datapath.
func (d *Datapath) Conntrack() *Conntrack { return &Conntrack{d: d} }

// TCP state bits of a Flow.
const (
	FlowSYNSeen     uint32 = 1 << 0
	FlowEstablished uint32 = 1 << 1
	FlowFINOriginal uint32 = 1 << 2
	FlowFINReply    uint32 = 1 << 3
	FlowClosed      uint32 = 1 << 4
)

// Flow is one conntrack entry: a flow admitted by an endpoint's policy in one direction.
type Flow struct {
	Src, Dst  netip.AddrPort // as the flow's first packet carried them
	Protocol  uint8
	Direction Direction // the endpoint's policy direction that admitted the flow
	Endpoint  uint32
	Identity  uint32 // the peer's identity when the flow was admitted
	ProxyPort uint16
	Flags     uint32 // Flow* TCP state bits
	Created   time.Time
	Expires   time.Time
	Packets   uint64
	Bytes     uint64
}

func (f Flow) String() string {
	return fmt.Sprintf("%s %s -> %s proto %d endpoint %d identity %d flags %#x",
		f.Direction, f.Src, f.Dst, f.Protocol, f.Endpoint, f.Identity, f.Flags)
}

// monotonicNow reads the clock bpf_ktime_get_ns uses.
func monotonicNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// monoToTime converts a CLOCK_MONOTONIC timestamp to wall-clock time.
func monoToTime(mono, nowMono uint64, now time.Time) time.Time {
	return now.Add(time.Duration(int64(mono) - int64(nowMono)))
}

func flowFrom(k datapathCtKey, v datapathCtValue, nowMono uint64, now time.Time) Flow {
	return Flow{
		Src:       netip.AddrPortFrom(wordsAddr(k.Saddr), hostPort(k.Sport)),
		Dst:       netip.AddrPortFrom(wordsAddr(k.Daddr), hostPort(k.Dport)),
		Protocol:  k.Proto,
		Direction: Direction(k.Dir),
		Endpoint:  v.EndpointId,
		Identity:  v.Identity,
		ProxyPort: v.ProxyPort,
		Flags:     v.Flags,
		Created:   monoToTime(v.Created, nowMono, now),
		Expires:   monoToTime(v.Expires, nowMono, now),
		Packets:   v.Packets,
		Bytes:     v.Bytes,
	}
}

// Dump returns every tracked flow, expired ones included until GC removes them.
func (c *Conntrack) Dump() ([]Flow, error) {
	nowMono, now := monotonicNow(), time.Now()
	var out []Flow
	err := c.scan(func(k datapathCtKey, v datapathCtValue) bool {
		out = append(out, flowFrom(k, v, nowMono, now))
		return false
	})
	return out, err
}

// FlushEndpoint deletes the flows admitted by the endpoint's policy and returns how many.
func (c *Conntrack) FlushEndpoint(epID uint32) (int, error) {
	return c.deleteWhere(func(_ datapathCtKey, v datapathCtValue) bool { return v.EndpointId == epID })
}

// FlushIdentity deletes the flows whose peer had the identity and returns how many; the agent
// calls it when an identity goes away or an address changes identity.
func (c *Conntrack) FlushIdentity(identity uint32) (int, error) {
	return c.deleteWhere(func(_ datapathCtKey, v datapathCtValue) bool { return v.Identity == identity })
}

// GC deletes expired flows and returns how many. The agent runs it periodically (RunGC).
func (c *Conntrack) GC() (int, error) {
	now := monotonicNow()
	return c.deleteWhere(func(_ datapathCtKey, v datapathCtValue) bool { return v.Expires <= now })
}

// RunGC calls GC every interval until ctx ends, logging failures.
func (c *Conntrack) RunGC(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := c.GC()
			if err != nil {
				c.d.log.Warn("conntrack garbage collection failed", "err", err)
				continue
			}
			if n > 0 {
				c.d.log.Debug("conntrack garbage collected", "flows", n)
			}
		}
	}
}

// scan calls fn for every entry; fn returning true stops the scan.
func (c *Conntrack) scan(fn func(datapathCtKey, datapathCtValue) bool) error {
	if err := scanMap(c.d.objs.PalCt, fn); err != nil {
		return fmt.Errorf("read conntrack table: %w", err)
	}
	return nil
}

// deleteWhere collects the matching keys first: deleting while iterating a hash map can restart
// or skip the iteration.
func (c *Conntrack) deleteWhere(match func(datapathCtKey, datapathCtValue) bool) (int, error) {
	var keys []datapathCtKey
	if err := c.scan(func(k datapathCtKey, v datapathCtValue) bool {
		if match(k, v) {
			keys = append(keys, k)
		}
		return false
	}); err != nil {
		return 0, err
	}
	return c.deleteKeys(keys)
}

// deleteKeys deletes keys in one batch and returns how many were still there (the datapath or GC
// may have removed some since they were read).
func (c *Conntrack) deleteKeys(keys []datapathCtKey) (int, error) {
	deleted, err := deleteBatch(c.d.objs.PalCt, keys)
	if err != nil {
		return len(deleted), fmt.Errorf("delete conntrack entries: %w", err)
	}
	return len(deleted), nil
}

// revokeFlows cuts the endpoint's established flows that the policy read through lookup (nil: no
// policy) no longer admits through the same proxy port.
func (d *Datapath) revokeFlows(epID uint32, lookup policyLookup) error {
	if lookup == nil {
		lookup = func(datapathPolicyKey) (datapathPolicyValue, bool) { return datapathPolicyValue{}, false }
	}
	n, err := d.Conntrack().deleteWhere(func(k datapathCtKey, v datapathCtValue) bool {
		if v.EndpointId != epID {
			return false
		}
		ok, proxy := verdictWith(lookup, v.Identity, hostPort(k.Dport), k.Proto, Direction(k.Dir))
		return !ok || proxy != v.ProxyPort
	})
	if err != nil {
		return fmt.Errorf("cut flows revoked by the policy of endpoint %d: %w", epID, err)
	}
	if n > 0 {
		d.log.Info("cut flows the new policy no longer allows", "endpoint", epID, "flows", n)
	}
	return nil
}
