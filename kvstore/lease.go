package kvstore

import (
	"context"
	"fmt"
	"math"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// GrantLease creates a lease of ttl (rounded up to whole seconds; etcd may raise it to its minimum
// TTL). Keys attached to it are deleted when it expires or is revoked.
func (c *Client) GrantLease(ctx context.Context, ttl time.Duration) (id LeaseID, err error) {
	start := time.Now()
	defer func() { c.metrics.observe(opLeaseGrant, start, err) }()
	if ttl <= 0 {
		return 0, fmt.Errorf("kvstore grant lease: ttl %s must be positive", ttl)
	}
	ctx, cancel, err := c.opContext(ctx)
	if err != nil {
		return 0, fmt.Errorf("kvstore grant lease: %w", err)
	}
	defer cancel()
	resp, err := c.cli.Grant(ctx, int64(math.Ceil(ttl.Seconds())))
	if err != nil {
		return 0, fmt.Errorf("kvstore grant lease of %s: %w", ttl, err)
	}
	return LeaseID(resp.ID), nil
}

// KeepAliveOnce renews lease once. It returns an error wrapping ErrLeaseNotFound when the lease has
// expired or was revoked.
func (c *Client) KeepAliveOnce(ctx context.Context, lease LeaseID) (err error) {
	start := time.Now()
	defer func() { c.metrics.observe(opLeaseKeepAlive, start, err) }()
	ctx, cancel, err := c.opContext(ctx)
	if err != nil {
		return fmt.Errorf("kvstore keep lease %x alive: %w", lease, err)
	}
	defer cancel()
	if _, err := c.cli.KeepAliveOnce(ctx, clientv3.LeaseID(lease)); err != nil {
		return fmt.Errorf("kvstore keep lease %x alive: %w", lease, translate(err))
	}
	return nil
}

// RevokeLease ends lease now; its keys are deleted. Revoking a lease that no longer exists returns
// an error wrapping ErrLeaseNotFound.
func (c *Client) RevokeLease(ctx context.Context, lease LeaseID) (err error) {
	start := time.Now()
	defer func() { c.metrics.observe(opLeaseRevoke, start, err) }()
	ctx, cancel, err := c.opContext(ctx)
	if err != nil {
		return fmt.Errorf("kvstore revoke lease %x: %w", lease, err)
	}
	defer cancel()
	if _, err := c.cli.Revoke(ctx, clientv3.LeaseID(lease)); err != nil {
		return fmt.Errorf("kvstore revoke lease %x: %w", lease, translate(err))
	}
	return nil
}

// LeaseTTL returns the remaining time to live of lease, or an error wrapping ErrLeaseNotFound.
func (c *Client) LeaseTTL(ctx context.Context, lease LeaseID) (time.Duration, error) {
	ctx, cancel, err := c.opContext(ctx)
	if err != nil {
		return 0, fmt.Errorf("kvstore lease %x ttl: %w", lease, err)
	}
	defer cancel()
	resp, err := c.cli.TimeToLive(ctx, clientv3.LeaseID(lease))
	if err != nil {
		return 0, fmt.Errorf("kvstore lease %x ttl: %w", lease, translate(err))
	}
	if resp.TTL < 0 {
		return 0, fmt.Errorf("kvstore lease %x ttl: %w", lease, ErrLeaseNotFound)
	}
	return time.Duration(resp.TTL) * time.Second, nil
}
