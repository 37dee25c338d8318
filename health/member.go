package health

import (
	"net/netip"
	"time"
)

// State is a member's liveness as this node sees it.
type State string

const (
	// StateAlive: the member answers probes (directly or through others).
	StateAlive State = "alive"
	// StateSuspect: this node's probe of the member failed; the member has the suspicion timeout
	// to refute before it is declared dead. Suspicion is this node's own view (memberlist does not
	// expose suspicions it only heard of), the dead verdict is the cluster's.
	StateSuspect State = "suspect"
	// StateDead: the member stopped answering and did not refute the suspicion.
	StateDead State = "dead"
	// StateLeft: the member announced it was leaving (graceful agent shutdown).
	StateLeft State = "left"
)

// States lists every state, in the order metrics and tables show them.
var States = []State{StateAlive, StateSuspect, StateDead, StateLeft}

// Member is one node of the cluster as this node sees it.
type Member struct {
	Name  string
	Addr  netip.AddrPort
	State State
	// Since is when the member entered State (as observed here).
	Since time.Time
	// RTT is the round trip of this node's last successful probe of the member; zero until one.
	RTT  time.Duration
	Meta Meta
	// Local is this node itself.
	Local bool
}

// Change is one state transition of a member. From is empty when the member was unknown.
type Change struct {
	Member Member
	From   State
}
