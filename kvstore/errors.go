package kvstore

import (
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

var (
	// ErrEmptyKey: a key (or a prefix where one is required) was empty.
	ErrEmptyKey = errors.New("empty key")
	// ErrValueTooLarge: a value exceeds Config.MaxValueBytes.
	ErrValueTooLarge = errors.New("value too large")
	// ErrLeaseNotFound: the lease does not exist (expired or revoked).
	ErrLeaseNotFound = errors.New("lease not found")
	// ErrClosed: the Client or Session was closed.
	ErrClosed = errors.New("kvstore client closed")
	// ErrSessionExpired: a lease of the session expired; its keys are gone and the session is done.
	ErrSessionExpired = errors.New("kvstore session expired")
)

func (c *Client) checkKey(key string) error {
	if key == "" {
		return ErrEmptyKey
	}
	return nil
}

func (c *Client) checkValue(key string, value []byte) error {
	if len(value) > c.cfg.MaxValueBytes {
		return fmt.Errorf("%w: %d bytes for key %q, limit %d", ErrValueTooLarge, len(value), key, c.cfg.MaxValueBytes)
	}
	return nil
}

// translate maps etcd errors that callers act on to this package's sentinels.
func translate(err error) error {
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("%w (%v)", ErrLeaseNotFound, err)
	}
	return err
}
