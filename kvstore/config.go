package kvstore

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/client/pkg/v3/transport"
)

// Config configures a Client. Zero values take the defaults documented on each field.
type Config struct {
	// Endpoints of the etcd cluster: "http://127.0.0.1:2379", "https://etcd-1:2379",
	// "unix:///run/palisade/etcd.sock". Required.
	Endpoints []string
	// TLS material for https:// and unixs:// endpoints. Nil: plaintext.
	TLS *TLSConfig
	// Prefix is prepended to every key. Default "palisade/v1/". Clients with different prefixes
	// share an etcd without seeing each other's keys.
	Prefix string
	// DialTimeout bounds New: it fails when no endpoint answers within it. Default 5s.
	DialTimeout time.Duration
	// RequestTimeout applies to an operation whose context has no deadline. Default 10s.
	RequestTimeout time.Duration
	// MaxKeysPerLease is how many keys a Session attaches to one lease before it grants another:
	// etcd's cost of a put with a lease, and of the lease's expiry, grows with its keys.
	// Default 1000.
	MaxKeysPerLease int
	// MaxValueBytes rejects larger values before they reach etcd, whose default request limit is
	// 1.5 MiB. Default 1 MiB.
	MaxValueBytes int
	// Registerer receives the client's metrics. Nil: metrics are kept but not registered. Clients
	// sharing a Registerer share (and sum into) the same collectors.
	Registerer prometheus.Registerer
	// Logger for connection and watch events. Default slog.Default().
	Logger *slog.Logger
}

// TLSConfig names PEM files for TLS to etcd.
type TLSConfig struct {
	// CAFile verifies the server's certificate. Empty: the system roots.
	CAFile string
	// CertFile and KeyFile are the client certificate, for servers that require one.
	CertFile, KeyFile string
}

// The server's certificate must name the endpoint's host. For a unixs:// endpoint etcd's client
// verifies the socket's file name without any ":port" suffix ("unixs:///run/etcd/localhost:2379"
// expects "localhost"), so name the socket after a name in the certificate.

// Defaults of Config.
const (
	DefaultPrefix          = "palisade/v1/"
	DefaultDialTimeout     = 5 * time.Second
	DefaultRequestTimeout  = 10 * time.Second
	DefaultMaxKeysPerLease = 1000
	DefaultMaxValueBytes   = 1 << 20
	// DefaultEndpoint is where `palisade kvstore serve` listens by default.
	DefaultEndpoint = "http://127.0.0.1:2379"
)

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.MaxKeysPerLease <= 0 {
		c.MaxKeysPerLease = DefaultMaxKeysPerLease
	}
	if c.MaxValueBytes <= 0 {
		c.MaxValueBytes = DefaultMaxValueBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	if len(c.Endpoints) == 0 {
		return errors.New("kvstore config: no endpoints")
	}
	for _, ep := range c.Endpoints {
		if _, _, _, err := endpointAddress(ep); err != nil {
			return fmt.Errorf("kvstore config: %w", err)
		}
	}
	if c.TLS != nil && (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return errors.New("kvstore config: TLS needs both a certificate and a key file, or neither")
	}
	return nil
}

// clientTLS loads the TLS material, naming the file at fault when one cannot be used.
func (t *TLSConfig) clientTLS() (*tls.Config, error) {
	if t == nil {
		return nil, nil
	}
	info := transport.TLSInfo{CertFile: t.CertFile, KeyFile: t.KeyFile, TrustedCAFile: t.CAFile}
	cfg, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kvstore TLS (ca %q, cert %q, key %q): %w", t.CAFile, t.CertFile, t.KeyFile, err)
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	return cfg, nil
}
