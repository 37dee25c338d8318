package etcdtest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/prometheus/client_golang/prometheus"
)

// Endpointer is anything with etcd client endpoints: *embedded.Server, *Embedded, *External, *Proxy.
type Endpointer interface {
	Endpoints() []string
}

// ClientOption adjusts the client configuration of NewClient.
type ClientOption func(*kvstore.Config)

// WithPrefix sets the client's key prefix (default kvstore.DefaultPrefix), for tests that share a
// server between independent parts.
func WithPrefix(prefix string) ClientOption { return func(c *kvstore.Config) { c.Prefix = prefix } }

// WithRegisterer registers the client's metrics on reg.
func WithRegisterer(reg prometheus.Registerer) ClientOption {
	return func(c *kvstore.Config) { c.Registerer = reg }
}

// WithEndpoints replaces the server's endpoints, e.g. to use only its unix socket.
func WithEndpoints(eps ...string) ClientOption {
	return func(c *kvstore.Config) { c.Endpoints = eps }
}

// WithClientTLS sets the client's TLS material.
func WithClientTLS(tls *kvstore.TLSConfig) ClientOption {
	return func(c *kvstore.Config) { c.TLS = tls }
}

// WithConfig applies any other change to the client configuration.
func WithConfig(f func(*kvstore.Config)) ClientOption { return ClientOption(f) }

// ClientConfig is the configuration NewClient uses: srv's first endpoint, short timeouts, logs to
// the test log.
func ClientConfig(t testing.TB, srv Endpointer, opts ...ClientOption) kvstore.Config {
	cfg := kvstore.Config{
		Endpoints:      srv.Endpoints()[:1],
		DialTimeout:    5 * time.Second,
		RequestTimeout: 5 * time.Second,
		Logger:         slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// NewClient connects a kvstore client to srv (its first endpoint unless WithEndpoints says
// otherwise); it is closed when the test ends.
func NewClient(t testing.TB, srv Endpointer, opts ...ClientOption) *kvstore.Client {
	t.Helper()
	cfg := ClientConfig(t, srv, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.DialTimeout+5*time.Second)
	defer cancel()
	c, err := kvstore.New(ctx, cfg)
	if err != nil {
		t.Fatalf("connect kvstore client to %v: %v", cfg.Endpoints, err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close kvstore client: %v", err)
		}
	})
	return c
}

// testWriter sends log lines to t.Log so that they show with the failing test only.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}
