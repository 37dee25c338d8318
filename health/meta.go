package health

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/hashicorp/memberlist"
)

// Meta is what a member tells the others about itself; it travels with every alive message, so it
// is small (memberlist caps it at 512 bytes).
type Meta struct {
	Node    string    `json:"node"`
	Cluster string    `json:"cluster"`
	Addrs   []string  `json:"addrs,omitempty"`
	Version string    `json:"version,omitempty"`
	Started time.Time `json:"started"`
	// Leaving is set just before a graceful leave, so the others record the member as left
	// rather than dead.
	Leaving bool `json:"leaving,omitempty"`
}

func (m Meta) validate() error {
	var errs []error
	if m.Node == "" {
		errs = append(errs, errors.New("health meta: node name is required"))
	}
	if m.Cluster == "" {
		errs = append(errs, errors.New("health meta: cluster is required"))
	}
	for _, a := range m.Addrs {
		if _, err := netip.ParseAddr(a); err != nil {
			errs = append(errs, fmt.Errorf("health meta: address %q: %w", a, err))
		}
	}
	return errors.Join(errs...)
}

func (m Meta) encode() ([]byte, error) {
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode health meta: %w", err)
	}
	if len(raw) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("health meta of %s is %d bytes, more than memberlist's %d", m.Node, len(raw), memberlist.MetaMaxSize)
	}
	return raw, nil
}

// DecodeMeta reads a member's metadata as received from the network.
func DecodeMeta(raw []byte) (Meta, error) {
	var m Meta
	if len(raw) > memberlist.MetaMaxSize {
		return m, fmt.Errorf("health meta: %d bytes, more than %d", len(raw), memberlist.MetaMaxSize)
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return Meta{}, fmt.Errorf("health meta: %w", err)
	}
	if err := m.validate(); err != nil {
		return Meta{}, err
	}
	return m, nil
}
