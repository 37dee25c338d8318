package embedded

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"
)

// DefaultMaxTxnOps is the embedded server's limit of operations per transaction.
const DefaultMaxTxnOps = 8192

// Config configures an embedded etcd server. The zero value of every optional field has the default
// named in its comment.
type Config struct {
	// DataDir holds the server's write-ahead log and database. Required. Restarting on the same
	// directory brings the data back.
	DataDir string
	// Name of the member. Default "palisade".
	Name string
	// ClientURLs the server listens on for clients: "http://127.0.0.1:2379", "https://...",
	// "unix:///run/palisade/etcd.sock", "unixs://...". Port 0 picks a free port. Default
	// ["http://127.0.0.1:0"].
	ClientURLs []string
	// AdvertiseClientURLs are the client URLs published in the cluster membership (host:port URLs
	// only). Default: the resolved TCP ClientURLs; required when every client URL is a unix socket.
	AdvertiseClientURLs []string
	// PeerURL is the raft listen and advertise URL. A single-node server never dials it but etcd
	// needs one. Default "http://127.0.0.1:0" (a free port).
	PeerURL string
	// TLS enables TLS on the https:// and unixs:// client URLs. Nil: plaintext only.
	TLS *TLSServerConfig
	// LogLevel of etcd's own zap logger: "debug", "info", "warn", "error". Default "" discards
	// etcd's logs, which are verbose and not structured like palisade's.
	LogLevel string
	// StartTimeout bounds how long Start waits for the server to be ready. Default 60s.
	StartTimeout time.Duration
	// UnsafeNoFsync skips fsync: faster, but a machine crash can lose acknowledged writes. Only
	// for tests and throwaway demos. Default false.
	UnsafeNoFsync bool
	// MaxTxnOps bounds the operations of one transaction. Default 0: DefaultMaxTxnOps, far above
	// etcd's own 128, because `palisade policy import` writes a whole file in one transaction.
	MaxTxnOps uint
	// QuotaBackendBytes is the database size limit after which etcd refuses writes. Default 0:
	// etcd's default (2 GiB).
	QuotaBackendBytes int64
	// AutoCompactionRetention keeps this much history (periodic compaction); watchers that fall
	// further behind relist. Default 1h. Negative disables auto-compaction.
	AutoCompactionRetention time.Duration
}

// TLSServerConfig is the server side of TLS on the client URLs.
type TLSServerConfig struct {
	CertFile string // server certificate (PEM)
	KeyFile  string // its private key (PEM)
	// TrustedCAFile, when set, makes the server require client certificates signed by this CA.
	TrustedCAFile string
}

const (
	defaultName           = "palisade"
	defaultClientURL      = "http://127.0.0.1:0"
	defaultPeerURL        = "http://127.0.0.1:0"
	defaultStartTimeout   = 60 * time.Second
	defaultAutoCompaction = time.Hour
)

func (c Config) withDefaults() Config {
	if c.Name == "" {
		c.Name = defaultName
	}
	if len(c.ClientURLs) == 0 {
		c.ClientURLs = []string{defaultClientURL}
	}
	if c.PeerURL == "" {
		c.PeerURL = defaultPeerURL
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = defaultStartTimeout
	}
	if c.AutoCompactionRetention == 0 {
		c.AutoCompactionRetention = defaultAutoCompaction
	}
	return c
}

func (c Config) validate() error {
	if c.DataDir == "" {
		return errors.New("embedded etcd config: DataDir is required")
	}
	if c.TLS != nil {
		if err := c.TLS.check(); err != nil {
			return fmt.Errorf("embedded etcd config: %w", err)
		}
	}
	for _, raw := range c.ClientURLs {
		u, err := parseListenURL(raw)
		if err != nil {
			return fmt.Errorf("embedded etcd config: client URL: %w", err)
		}
		secure := u.Scheme == "https" || u.Scheme == "unixs"
		if secure && c.TLS == nil {
			return fmt.Errorf("embedded etcd config: client URL %s needs TLS (CertFile, KeyFile)", raw)
		}
		if !secure && c.TLS != nil {
			return fmt.Errorf("embedded etcd config: client URL %s is plaintext while TLS is configured; use https:// or unixs://", raw)
		}
	}
	if len(c.AdvertiseClientURLs) == 0 && len(tcpURLs(c.ClientURLs)) == 0 {
		return errors.New("embedded etcd config: every client URL is a unix socket: set AdvertiseClientURLs (host:port URLs)")
	}
	for _, raw := range c.AdvertiseClientURLs {
		if _, err := parseListenURL(raw); err != nil {
			return fmt.Errorf("embedded etcd config: advertise client URL: %w", err)
		}
	}
	u, err := parseListenURL(c.PeerURL)
	if err != nil {
		return fmt.Errorf("embedded etcd config: peer URL: %w", err)
	}
	if u.Scheme != "http" {
		return fmt.Errorf("embedded etcd config: peer URL %s: only http:// is supported for the single-node server", c.PeerURL)
	}
	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("embedded etcd config: log level %q: want debug, info, warn or error", c.LogLevel)
	}
	return nil
}

func parseListenURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("parse %q: %w", raw, err)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Port() == "" {
			return nil, fmt.Errorf("%q: needs a port (0 picks a free one)", raw)
		}
	case "unix", "unixs":
		if u.Host+u.Path == "" {
			return nil, fmt.Errorf("%q: needs a socket path", raw)
		}
	default:
		return nil, fmt.Errorf("%q: scheme %q is not one of http, https, unix, unixs", raw, u.Scheme)
	}
	return u, nil
}

// check loads the TLS material so that a missing or broken file fails Start, not every client's
// handshake later.
func (t *TLSServerConfig) check() error {
	if t.CertFile == "" || t.KeyFile == "" {
		return errors.New("TLS needs both CertFile and KeyFile")
	}
	if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
		return fmt.Errorf("TLS certificate %s, key %s: %w", t.CertFile, t.KeyFile, err)
	}
	if t.TrustedCAFile != "" {
		pem, err := os.ReadFile(t.TrustedCAFile)
		if err != nil {
			return fmt.Errorf("TLS trusted CA: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return fmt.Errorf("TLS trusted CA %s: no PEM certificate in it", t.TrustedCAFile)
		}
	}
	return nil
}
