package bpf

import (
	"fmt"
	"log/slog"
	"time"
)

// DefaultPinDir is where the datapath pins its maps and links unless Options.PinDir says otherwise.
const DefaultPinDir = "/sys/fs/bpf/palisade"

// Options configure a Datapath. The zero value of every field selects its documented default.
type Options struct {
	// PinDir is the bpffs directory holding the pinned maps and links (default DefaultPinDir).
	// When it lies under /sys/fs/bpf and no bpffs is mounted there, Open mounts one.
	PinDir string

	// PolicyMapMaxEntries caps one endpoint's policy entries after port-range expansion
	// (default 16384). Larger maps cost kernel memory only for entries in use.
	PolicyMapMaxEntries int

	// CTTimeoutSYN is how long a TCP flow lives before its reply arrives (default 60s): short, so a
	// SYN flood cannot fill the table for long.
	CTTimeoutSYN time.Duration
	// CTTimeoutTCP is the idle lifetime of an established TCP flow (default 6h).
	CTTimeoutTCP time.Duration
	// CTTimeoutClosing is how long a flow stays after FIN from both sides or RST, so that the last
	// ACKs pass (default 10s).
	CTTimeoutClosing time.Duration
	// CTTimeoutOther is the idle lifetime of UDP and other flows (default 60s).
	CTTimeoutOther time.Duration

	// EventsPerSecond is the sustained rate of verdict events per CPU (default 1000); EventsBurst
	// the burst above it (default 200). Events beyond are counted, not sent, so a flood of drops
	// cannot starve the reader or the ring buffer.
	EventsPerSecond int
	EventsBurst     int

	// Logger receives reconciliation and flush reports (default slog.Default()).
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.PinDir == "" {
		o.PinDir = DefaultPinDir
	}
	if o.PolicyMapMaxEntries == 0 {
		o.PolicyMapMaxEntries = 16384
	}
	if o.CTTimeoutSYN == 0 {
		o.CTTimeoutSYN = 60 * time.Second
	}
	if o.CTTimeoutTCP == 0 {
		o.CTTimeoutTCP = 6 * time.Hour
	}
	if o.CTTimeoutClosing == 0 {
		o.CTTimeoutClosing = 10 * time.Second
	}
	if o.CTTimeoutOther == 0 {
		o.CTTimeoutOther = 60 * time.Second
	}
	if o.EventsPerSecond == 0 {
		o.EventsPerSecond = 1000
	}
	if o.EventsBurst == 0 {
		o.EventsBurst = 200
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

func (o Options) validate() error {
	if o.PolicyMapMaxEntries < 1 || o.PolicyMapMaxEntries > 1<<20 {
		return fmt.Errorf("PolicyMapMaxEntries %d out of range 1..%d", o.PolicyMapMaxEntries, 1<<20)
	}
	for name, d := range map[string]time.Duration{
		"CTTimeoutSYN": o.CTTimeoutSYN, "CTTimeoutTCP": o.CTTimeoutTCP,
		"CTTimeoutClosing": o.CTTimeoutClosing, "CTTimeoutOther": o.CTTimeoutOther,
	} {
		if d < time.Second {
			return fmt.Errorf("%s %v is below one second", name, d)
		}
	}
	if o.EventsPerSecond < 1 || o.EventsPerSecond > 1_000_000 {
		return fmt.Errorf("EventsPerSecond %d out of range 1..1000000", o.EventsPerSecond)
	}
	if o.EventsBurst < 1 || o.EventsBurst > 1_000_000 {
		return fmt.Errorf("EventsBurst %d out of range 1..1000000", o.EventsBurst)
	}
	return nil
}
