package identity

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sync"

	"github.com/palisade-mesh/palisade/kvstore"
)

// ClusterConfigKey holds the cluster's ClusterConfig, relative to the kvstore prefix.
const ClusterConfigKey = "cluster/config"

// ClusterConfig is what a cluster is, fixed when its etcd is first used: every agent and mesh API
// server of the cluster must agree on it, because identity numbers depend on the cluster ID and the
// layout.
type ClusterConfig struct {
	// Name is unique in a mesh: lowercase letters, digits and '-', at most 32 characters.
	Name string `json:"name"`
	// ID is unique in a mesh: 1..255, or 1..511 when MaxConnectedClusters is 511.
	ID uint32 `json:"id"`
	// MaxConnectedClusters fixes the identity layout (see Layout). 0 means 255.
	MaxConnectedClusters int `json:"maxConnectedClusters"`
	// Capabilities lists optional features the cluster's components support, for peers to check.
	Capabilities []string `json:"capabilities,omitempty"`
}

var clusterNameRE = lazyRegexp(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)

// Layout returns the identity layout of the cluster.
func (c ClusterConfig) Layout() (Layout, error) {
	n := c.MaxConnectedClusters
	if n == 0 {
		n = DefaultLayout.MaxConnectedClusters
	}
	return NewLayout(n)
}

// Validate checks the name, the layout and that the ID fits the layout.
func (c ClusterConfig) Validate() error {
	if !clusterNameRE().MatchString(c.Name) {
		return fmt.Errorf("cluster name %q: want 1..32 lowercase letters, digits or '-', starting and ending with a letter or digit", c.Name)
	}
	layout, err := c.Layout()
	if err != nil {
		return fmt.Errorf("cluster %s: %w", c.Name, err)
	}
	if err := layout.ValidateClusterID(c.ID); err != nil {
		return fmt.Errorf("cluster %s: %w (max connected clusters %d)", c.Name, err, layout.MaxConnectedClusters)
	}
	return nil
}

func (c ClusterConfig) normalized() ClusterConfig {
	if c.MaxConnectedClusters == 0 {
		c.MaxConnectedClusters = DefaultLayout.MaxConnectedClusters
	}
	c.Capabilities = slices.Clone(c.Capabilities)
	slices.Sort(c.Capabilities)
	c.Capabilities = slices.Compact(c.Capabilities)
	return c
}

// EnsureClusterConfig records want as the cluster's configuration if the cluster has none
// (create-only, so two components starting at once cannot both win), and otherwise checks that the
// stored configuration has the same name, ID and layout, refusing a mismatch with an error naming
// both values. Capabilities are not compared. It returns the stored configuration.
func EnsureClusterConfig(ctx context.Context, kv *kvstore.Client, want ClusterConfig) (ClusterConfig, error) {
	if err := want.Validate(); err != nil {
		return ClusterConfig{}, fmt.Errorf("cluster config: %w", err)
	}
	want = want.normalized()
	b, err := json.Marshal(want)
	if err != nil {
		return ClusterConfig{}, fmt.Errorf("cluster config: encode: %w", err)
	}
	created, err := kv.CreateOnly(ctx, ClusterConfigKey, b, kvstore.NoLease)
	if err != nil {
		return ClusterConfig{}, fmt.Errorf("record cluster config of %s: %w", want.Name, err)
	}
	if created {
		return want, nil
	}
	have, found, err := GetClusterConfig(ctx, kv)
	if err != nil {
		return ClusterConfig{}, err
	}
	if !found {
		// Deleted between our create and our read: someone is tearing the cluster down.
		return ClusterConfig{}, fmt.Errorf("cluster config of %s: %s vanished while being checked; retry", want.Name, ClusterConfigKey)
	}
	if err := compareClusterConfig(have, want); err != nil {
		return ClusterConfig{}, err
	}
	return have, nil
}

func compareClusterConfig(have, want ClusterConfig) error {
	switch {
	case have.Name != want.Name:
		return fmt.Errorf("cluster config mismatch: etcd holds cluster name %q, this component is configured with %q", have.Name, want.Name)
	case have.ID != want.ID:
		return fmt.Errorf("cluster config mismatch: etcd holds cluster ID %d for %s, this component is configured with ID %d", have.ID, have.Name, want.ID)
	case have.MaxConnectedClusters != want.MaxConnectedClusters:
		return fmt.Errorf("cluster config mismatch: cluster %s was created with max connected clusters %d, this component is configured with %d; the identity layout cannot change after creation",
			have.Name, have.MaxConnectedClusters, want.MaxConnectedClusters)
	}
	return nil
}

// GetClusterConfig reads the stored configuration; found is false when the cluster has none yet.
func GetClusterConfig(ctx context.Context, kv *kvstore.Client) (cfg ClusterConfig, found bool, err error) {
	stored, found, err := kv.Get(ctx, ClusterConfigKey)
	if err != nil {
		return ClusterConfig{}, false, fmt.Errorf("read cluster config: %w", err)
	}
	if !found {
		return ClusterConfig{}, false, nil
	}
	cfg, err = decodeClusterConfig(stored.Value)
	if err != nil {
		return ClusterConfig{}, false, err
	}
	return cfg, true, nil
}

// decodeClusterConfig parses and validates a stored configuration.
func decodeClusterConfig(b []byte) (ClusterConfig, error) {
	var cfg ClusterConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return ClusterConfig{}, fmt.Errorf("decode %s: %w", ClusterConfigKey, err)
	}
	if err := cfg.Validate(); err != nil {
		return ClusterConfig{}, fmt.Errorf("decode %s: %w", ClusterConfigKey, err)
	}
	return cfg.normalized(), nil
}

// lazyRegexp compiles expr on first use: a bounded repetition such as {0,62} compiles into many
// states, and compiling at package initialisation would slow the start of every CLI command.
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}
