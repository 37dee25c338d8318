package bpf

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"
)

// Verdict of an event.
type Verdict uint8

const (
	VerdictAllowed    Verdict = 1 // a new flow was admitted
	VerdictDenied     Verdict = 2 // a packet was dropped
	VerdictRedirected Verdict = 3 // a new flow was admitted and goes to the proxy
)

func (v Verdict) String() string {
	switch v {
	case VerdictAllowed:
		return "allowed"
	case VerdictDenied:
		return "denied"
	case VerdictRedirected:
		return "redirected"
	}
	return "verdict(" + strconv.Itoa(int(v)) + ")"
}

// DropReason says why a packet was denied.
type DropReason uint8

const (
	ReasonNone             DropReason = 0
	ReasonNoPolicy         DropReason = 1 // no policy entry matched
	ReasonDenyRule         DropReason = 2 // a deny entry matched
	ReasonNoConntrack      DropReason = 3 // TCP packet of no tracked flow that is not a SYN
	ReasonNoPolicyMap      DropReason = 4 // the endpoint has no policy installed
	ReasonSpoofedSource    DropReason = 5 // the endpoint sent from an address not its own
	ReasonUnsupportedL3    DropReason = 6 // neither IPv4 nor ARP
	ReasonMalformed        DropReason = 7 // truncated header or non-first fragment
	ReasonUnknownEndpoint  DropReason = 8 // interface not in the endpoint registry
	ReasonProxyUnavailable DropReason = 9 // flow needs the proxy, none is registered for its port
)

var reasonNames = map[DropReason]string{
	ReasonNone: "none", ReasonNoPolicy: "no policy", ReasonDenyRule: "deny rule",
	ReasonNoConntrack: "no conntrack", ReasonNoPolicyMap: "no policy installed",
	ReasonSpoofedSource: "spoofed source", ReasonUnsupportedL3: "unsupported L3",
	ReasonMalformed: "malformed", ReasonUnknownEndpoint: "unknown endpoint",
	ReasonProxyUnavailable: "proxy unavailable",
}

func (r DropReason) String() string {
	if s, ok := reasonNames[r]; ok {
		return s
	}
	return "reason(" + strconv.Itoa(int(r)) + ")"
}

// Match says which rung of the policy ladder decided a verdict.
type Match uint8

const (
	MatchNone          Match = 0
	MatchIdentityPort  Match = 1 // {identity, port, proto}
	MatchIdentityProto Match = 2 // {identity, any port, proto}
	MatchIdentity      Match = 3 // {identity, any}
	MatchPortProto     Match = 4 // {any identity, port, proto}
	MatchProto         Match = 5 // {any identity, any port, proto}
	MatchAll           Match = 6 // {any}
)

// Event is a policy verdict reported by the datapath.
type Event struct {
	Time        time.Time
	Endpoint    uint32 // 0 when the interface is not registered
	IfIndex     uint32 // node-side interface (0 for proxy-steering events)
	SrcIdentity uint32 // 0 when the verdict came before identities were resolved
	DstIdentity uint32
	Src, Dst    netip.AddrPort
	Protocol    uint8
	Direction   Direction
	Verdict     Verdict
	Reason      DropReason
	Match       Match
	TCPFlags    uint8
	ProxyPort   uint16
	Length      uint32
}

func (e Event) String() string {
	s := fmt.Sprintf("%s %s endpoint %d %s (%d) -> %s (%d) proto %d", e.Verdict, e.Direction, e.Endpoint,
		e.Src, e.SrcIdentity, e.Dst, e.DstIdentity, e.Protocol)
	if e.Verdict == VerdictDenied {
		s += " reason " + e.Reason.String()
	}
	if e.ProxyPort != 0 {
		s += " proxy " + strconv.Itoa(int(e.ProxyPort))
	}
	return s
}

// EventSize is the size of one raw event record.
const EventSize = int(unsafe.Sizeof(datapathEvent{}))

// ParseEvent decodes one raw event record as the datapath writes it into the ring buffer.
func ParseEvent(raw []byte) (Event, error) {
	if len(raw) < EventSize {
		return Event{}, fmt.Errorf("event record of %d bytes, want %d", len(raw), EventSize)
	}
	var ev datapathEvent
	if _, err := binary.Decode(raw[:EventSize], binary.NativeEndian, &ev); err != nil {
		return Event{}, fmt.Errorf("decode event record: %w", err)
	}
	if ev.Family != familyIPv4 && ev.Family != 0 {
		return Event{}, fmt.Errorf("event record with unknown address family %d", ev.Family)
	}
	if ev.Dir > uint8(Egress) {
		return Event{}, fmt.Errorf("event record with unknown direction %d", ev.Dir)
	}
	return Event{
		Time:        monoToTime(ev.Timestamp, monotonicNow(), time.Now()),
		Endpoint:    ev.EndpointId,
		IfIndex:     ev.Ifindex,
		SrcIdentity: ev.SrcIdentity,
		DstIdentity: ev.DstIdentity,
		Src:         netip.AddrPortFrom(wordsAddr(ev.Saddr), hostPort(ev.Sport)),
		Dst:         netip.AddrPortFrom(wordsAddr(ev.Daddr), hostPort(ev.Dport)),
		Protocol:    ev.Proto,
		Direction:   Direction(ev.Dir),
		Verdict:     Verdict(ev.Verdict),
		Reason:      DropReason(ev.Reason),
		Match:       Match(ev.Match),
		TCPFlags:    ev.TcpFlags,
		ProxyPort:   ev.ProxyPort,
		Length:      ev.PktLen,
	}, nil
}

// EventReader reads verdict events from the ring buffer. A ring buffer has one consumer: open one
// reader per datapath and fan events out from it (the monitor package does).
type EventReader struct {
	rd *ringbuf.Reader
}

// ErrClosed is returned by Read after Close.
var ErrClosed = errors.New("event reader closed")

// NewEventReader opens a reader on the events ring buffer.
func (d *Datapath) NewEventReader() (*EventReader, error) {
	rd, err := ringbuf.NewReader(d.objs.PalEvents)
	if err != nil {
		return nil, fmt.Errorf("open events ring buffer: %w", err)
	}
	return &EventReader{rd: rd}, nil
}

// Read blocks until an event arrives, the deadline passes (os.ErrDeadlineExceeded) or the reader
// is closed (ErrClosed).
func (r *EventReader) Read() (Event, error) {
	rec, err := r.rd.Read()
	if errors.Is(err, ringbuf.ErrClosed) {
		return Event{}, ErrClosed
	}
	if err != nil {
		return Event{}, err
	}
	return ParseEvent(rec.RawSample)
}

// SetDeadline makes Read give up at t (zero: never).
func (r *EventReader) SetDeadline(t time.Time) { r.rd.SetDeadline(t) }

// Close unblocks a pending Read and releases the reader.
func (r *EventReader) Close() error { return r.rd.Close() }

// Events streams events until ctx ends, then closes the channel. Undecodable records are skipped.
func (d *Datapath) Events(ctx context.Context) (<-chan Event, error) {
	r, err := d.NewEventReader()
	if err != nil {
		return nil, err
	}
	out := make(chan Event, 256)
	stop := context.AfterFunc(ctx, func() { _ = r.Close() })
	go func() {
		defer close(out)
		defer stop()
		defer r.Close()
		for {
			ev, err := r.Read()
			if errors.Is(err, ErrClosed) || errors.Is(err, os.ErrClosed) {
				return
			}
			if err != nil {
				d.log.Warn("skipping unreadable datapath event", "err", err)
				continue
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// EventStats counts what happened to events, summed over CPUs.
type EventStats struct {
	Emitted     uint64 // written to the ring buffer
	RateLimited uint64 // suppressed by the per-CPU token bucket
	RingbufFull uint64 // lost because the reader fell behind
}

// EventStats reads the event counters.
func (d *Datapath) EventStats() (EventStats, error) {
	var per []datapathEventStats
	if err := d.objs.PalEvStats.Lookup(uint32(0), &per); err != nil {
		return EventStats{}, fmt.Errorf("read event counters: %w", err)
	}
	var s EventStats
	for _, p := range per {
		s.Emitted += p.Emitted
		s.RateLimited += p.RateLimited
		s.RingbufFull += p.RingbufFull
	}
	return s, nil
}
