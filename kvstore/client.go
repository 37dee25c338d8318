package kvstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
)

// Client talks to one etcd cluster under one key prefix. It is safe for concurrent use. Close stops
// its watches and sessions' keep-alives (without revoking leases) and the connection.
type Client struct {
	cfg     Config
	tls     *tls.Config
	cli     *clientv3.Client
	metrics *metrics
	log     *slog.Logger

	// ctx is cancelled by Close; every background goroutine derives from it and is counted in wg.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex // guards closed against wg.Add racing with Close's wg.Wait
	closed    bool
	closeOnce sync.Once
}

// New connects to etcd. It fails within cfg.DialTimeout (or earlier if ctx ends) when no endpoint
// answers, naming the endpoints and the cause.
func New(ctx context.Context, cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	tlsCfg, err := cfg.TLS.clientTLS()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		TLS:         tlsCfg,
		DialTimeout: cfg.DialTimeout,
		// Keepalive pings detect a silently dead connection (a partition, a crashed host) so that
		// requests and watches move to another endpoint instead of waiting on TCP timeouts.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		MaxCallSendMsgSize:   cfg.MaxValueBytes + 64<<10,
		// gRPC's default reconnect backoff grows to 2 minutes; a restarted etcd should be used again
		// within seconds.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second},
			MinConnectTimeout: cfg.DialTimeout,
		})},
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("connect to etcd at %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	cctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg:     cfg,
		tls:     tlsCfg,
		cli:     cli,
		metrics: m,
		log:     cfg.Logger.With("component", "kvstore"),
		ctx:     cctx,
		cancel:  cancel,
	}
	if err := c.probe(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// probe makes one cheap serializable read so that New fails (in bounded time) when no endpoint
// answers, instead of the first real operation hanging until its timeout.
func (c *Client) probe(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	_, err := c.cli.Get(pctx, c.cfg.Prefix, clientv3.WithSerializable(), clientv3.WithCountOnly())
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("connect to etcd at %s: %w", strings.Join(c.cfg.Endpoints, ","), ctx.Err())
	}
	// gRPC only says the deadline passed: find out what is wrong with each endpoint.
	causes := make([]string, 0, len(c.cfg.Endpoints))
	for _, ep := range c.cfg.Endpoints {
		if derr := diagnose(ctx, ep, c.tls); derr != nil {
			causes = append(causes, fmt.Sprintf("%s: %v", ep, derr))
		} else {
			causes = append(causes, fmt.Sprintf("%s: reachable, but etcd did not answer", ep))
		}
	}
	return fmt.Errorf("connect to etcd: no endpoint answered within %s (%s): %w",
		c.cfg.DialTimeout, strings.Join(causes, "; "), err)
}

// Close stops the client's watches and sessions (their leases are left to expire) and closes the
// connection. It is safe to call more than once.
func (c *Client) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.cancel()
		c.wg.Wait()
		err = c.cli.Close()
		if errors.Is(err, context.Canceled) {
			err = nil
		}
	})
	return err
}

// Prefix returns the prefix the client puts in front of every key.
func (c *Client) Prefix() string { return c.cfg.Prefix }

// Endpoints returns the configured endpoints.
func (c *Client) Endpoints() []string { return append([]string(nil), c.cfg.Endpoints...) }

func (c *Client) fullKey(key string) string { return c.cfg.Prefix + key }

func (c *Client) relKey(full []byte) string { return strings.TrimPrefix(string(full), c.cfg.Prefix) }

// opContext applies the default request timeout when ctx has no deadline, and fails fast once the
// client is closed.
func (c *Client) opContext(ctx context.Context) (context.Context, context.CancelFunc, error) {
	if c.ctx.Err() != nil {
		return nil, nil, ErrClosed
	}
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}, nil
	}
	cctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	return cctx, cancel, nil
}

// goBackground runs f in a goroutine owned by the client: its context ends when ctx or the client
// does, and Close waits for it. It returns false (and does not run f) once the client is closed.
func (c *Client) goBackground(ctx context.Context, f func(ctx context.Context)) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		fctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stop := context.AfterFunc(c.ctx, cancel)
		defer stop()
		f(fctx)
	}()
	return true
}
