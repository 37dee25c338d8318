package embedded

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Server is a running embedded etcd server.
type Server struct {
	etcd      *embed.Etcd
	cfg       Config
	closeOnce sync.Once
}

// startAttempts bounds retries when a free port picked for a :0 URL was taken before etcd bound it.
const startAttempts = 3

// Start starts an etcd server and waits until it serves clients, ctx is done or cfg.StartTimeout
// passes. The server runs until Close.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", cfg.DataDir, err)
	}
	var lastErr error
	for range startAttempts {
		resolved, err := resolvePorts(cfg)
		if err != nil {
			return nil, err
		}
		srv, err := start(ctx, resolved)
		if err == nil {
			return srv, nil
		}
		lastErr = err
		// Only a lost race for a port we picked ourselves is worth another try.
		if !errors.Is(err, syscall.EADDRINUSE) || !hasZeroPort(cfg) {
			break
		}
	}
	return nil, lastErr
}

func start(ctx context.Context, cfg Config) (*Server, error) {
	ecfg, err := etcdConfig(cfg)
	if err != nil {
		return nil, err
	}
	e, err := embed.StartEtcd(ecfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", cfg.DataDir, err)
	}
	timer := time.NewTimer(cfg.StartTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
		return &Server{etcd: e, cfg: cfg}, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("start embedded etcd in %s: %w", cfg.DataDir, err)
	case <-ctx.Done():
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("start embedded etcd in %s: %w", cfg.DataDir, ctx.Err())
	case <-timer.C:
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("start embedded etcd in %s: not ready after %s", cfg.DataDir, cfg.StartTimeout)
	}
}

func etcdConfig(cfg Config) (*embed.Config, error) {
	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.DataDir
	ec.UnsafeNoFsync = cfg.UnsafeNoFsync
	ec.QuotaBackendBytes = cfg.QuotaBackendBytes
	ec.MaxTxnOps = DefaultMaxTxnOps
	if cfg.MaxTxnOps > 0 {
		ec.MaxTxnOps = cfg.MaxTxnOps
	}
	// The gRPC gateway (HTTP/JSON) is an unused attack surface for palisade.
	ec.EnableGRPCGateway = false
	if cfg.AutoCompactionRetention > 0 {
		ec.AutoCompactionMode = embed.CompactorModePeriodic
		ec.AutoCompactionRetention = cfg.AutoCompactionRetention.String()
	}

	clientURLs, err := parseURLs(cfg.ClientURLs)
	if err != nil {
		return nil, err
	}
	advertise := cfg.AdvertiseClientURLs
	if len(advertise) == 0 {
		advertise = tcpURLs(cfg.ClientURLs)
	}
	advertiseURLs, err := parseURLs(advertise)
	if err != nil {
		return nil, err
	}
	peerURLs, err := parseURLs([]string{cfg.PeerURL})
	if err != nil {
		return nil, err
	}
	ec.ListenClientUrls = clientURLs
	ec.AdvertiseClientUrls = advertiseURLs
	ec.ListenPeerUrls = peerURLs
	ec.AdvertisePeerUrls = peerURLs
	ec.InitialCluster = ec.InitialClusterFromName(cfg.Name)

	if cfg.TLS != nil {
		ec.ClientTLSInfo = transport.TLSInfo{
			CertFile:       cfg.TLS.CertFile,
			KeyFile:        cfg.TLS.KeyFile,
			TrustedCAFile:  cfg.TLS.TrustedCAFile,
			ClientCertAuth: cfg.TLS.TrustedCAFile != "",
		}
	}

	lg, err := zapLogger(cfg.LogLevel)
	if err != nil {
		return nil, err
	}
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	return ec, nil
}

func zapLogger(level string) (*zap.Logger, error) {
	if level == "" {
		return zap.NewNop(), nil
	}
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd log level %q: %w", level, err)
	}
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(lvl)
	lg, err := zc.Build()
	if err != nil {
		return nil, fmt.Errorf("build embedded etcd logger: %w", err)
	}
	return lg, nil
}

func parseURLs(raw []string) ([]url.URL, error) {
	out := make([]url.URL, 0, len(raw))
	for _, r := range raw {
		u, err := parseListenURL(r)
		if err != nil {
			return nil, err
		}
		out = append(out, *u)
	}
	return out, nil
}

// resolvePorts replaces port 0 in TCP URLs with a port that is free right now, so that etcd advertises
// (and a restart reuses) a real address.
func resolvePorts(cfg Config) (Config, error) {
	resolve := func(raw string) (string, error) {
		u, err := parseListenURL(raw)
		if err != nil {
			return "", err
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Port() != "0" {
			return raw, nil
		}
		port, err := freePort(u.Hostname())
		if err != nil {
			return "", fmt.Errorf("pick a free port for %s: %w", raw, err)
		}
		u.Host = net.JoinHostPort(u.Hostname(), port)
		return u.String(), nil
	}
	out := cfg
	out.ClientURLs = make([]string, len(cfg.ClientURLs))
	for i, raw := range cfg.ClientURLs {
		r, err := resolve(raw)
		if err != nil {
			return Config{}, err
		}
		out.ClientURLs[i] = r
	}
	peer, err := resolve(cfg.PeerURL)
	if err != nil {
		return Config{}, err
	}
	out.PeerURL = peer
	return out, nil
}

// tcpURLs drops unix socket URLs, which etcd cannot advertise (it wants host:port).
func tcpURLs(raw []string) []string {
	var out []string
	for _, r := range raw {
		if !strings.HasPrefix(r, "unix") {
			out = append(out, r)
		}
	}
	return out
}

func hasZeroPort(cfg Config) bool {
	for _, raw := range append([]string{cfg.PeerURL}, cfg.ClientURLs...) {
		if u, err := url.Parse(raw); err == nil && u.Port() == "0" {
			return true
		}
	}
	return false
}

func freePort(host string) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer l.Close()
	_, port, err := net.SplitHostPort(l.Addr().String())
	return port, err
}

// Endpoints returns the client URLs the server listens on, with free ports resolved, in the form
// kvstore.Config.Endpoints accepts.
func (s *Server) Endpoints() []string {
	return append([]string(nil), s.cfg.ClientURLs...)
}

// Config returns the configuration the server runs with, ports resolved. Starting a new server
// with it after Close brings the same member back on the same addresses.
func (s *Server) Config() Config {
	c := s.cfg
	c.ClientURLs = append([]string(nil), s.cfg.ClientURLs...)
	c.AdvertiseClientURLs = append([]string(nil), s.cfg.AdvertiseClientURLs...)
	return c
}

// Err delivers an error when the server fails while running (a listener breaks).
func (s *Server) Err() <-chan error { return s.etcd.Err() }

// Done is closed when the server has stopped, by Close or by a fatal error.
func (s *Server) Done() <-chan struct{} { return s.etcd.Server.StopNotify() }

// Close stops the server: open client connections are closed and the data stays in DataDir.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.etcd.Close()
		<-s.etcd.Server.StopNotify()
	})
	return nil
}

// String names the server for logs.
func (s *Server) String() string {
	return fmt.Sprintf("etcd %s (%s)", s.cfg.Name, strings.Join(s.cfg.ClientURLs, ", "))
}
