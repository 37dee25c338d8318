package conformance

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
)

// dialTimeout is short in these tests; failures must come within it plus this slack.
const (
	dialTimeout = time.Second
	slack       = 2 * time.Second
)

func runConnect(t *testing.T, srv Server, start Target) {
	t.Run("UnixSocketEndpoint", func(t *testing.T) {
		t.Parallel()
		testUnixSocket(t, srv)
	})
	t.Run("OneDeadEndpointOfTwo", func(t *testing.T) {
		t.Parallel()
		testOneDeadEndpoint(t, srv)
	})
	t.Run("StatusReportsMemberAndQuorum", func(t *testing.T) {
		t.Parallel()
		testStatus(t, srv)
	})
	t.Run("BadConfigFailsClearlyAndFast", func(t *testing.T) {
		t.Parallel()
		testBadConfig(t)
	})
	t.Run("TLS", func(t *testing.T) {
		t.Parallel()
		testTLS(t, start)
	})
}

// deadEndpoint is a 127.0.0.1 address nobody listens on.
func deadEndpoint(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// newFails calls kvstore.New and checks it fails in bounded time with an error mentioning all of
// want.
func newFails(t *testing.T, what string, cfg kvstore.Config, want ...string) {
	t.Helper()
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = dialTimeout
	}
	start := time.Now()
	c, err := kvstore.New(context.Background(), cfg)
	took := time.Since(start)
	if err == nil {
		c.Close()
		t.Errorf("%s: connected", what)
		return
	}
	if took > cfg.DialTimeout+slack {
		t.Errorf("%s: failed only after %s", what, took)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: error %q does not mention %q", what, err, w)
		}
	}
	t.Logf("%s: %v (after %s)", what, err, took.Round(time.Millisecond))
}

func testUnixSocket(t *testing.T, srv Server) {
	eps := srv.Endpoints()
	if len(eps) < 2 || !strings.HasPrefix(eps[1], "unix") {
		t.Fatalf("server endpoints %v: no unix socket", eps)
	}
	c := newClient(t, srv, etcdtest.WithEndpoints(eps[1]))
	mustPut(t, c, "u/a", "over the socket")
	v := watchView(t, c, "u/")
	v.waitSyncs(t, 1)
	mustPut(t, c, "u/b", "live")
	v.waitEqualStore(t, c, "u/")
}

func testOneDeadEndpoint(t *testing.T, srv Server) {
	c := newClient(t, srv, etcdtest.WithEndpoints(deadEndpoint(t), srv.Endpoints()[0]),
		etcdtest.WithConfig(func(c *kvstore.Config) { c.DialTimeout = dialTimeout }))
	for range 5 { // round-robin would hit the dead endpoint at least once
		mustPut(t, c, "m/a", "x")
		mustGet(t, c, "m/a")
	}
	st, err := c.Status(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if !st.Healthy || st.Endpoints[0].Reachable || !st.Endpoints[1].Reachable {
		t.Fatalf("status with one dead endpoint: %+v", st)
	}
}

func testStatus(t *testing.T, srv Server) {
	c := newClient(t, srv, etcdtest.WithEndpoints(srv.Endpoints()...))
	st, err := c.Status(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if !st.Healthy || st.Error != "" || st.Members != 1 || st.ClusterID == "" || len(st.Endpoints) != len(srv.Endpoints()) {
		t.Fatalf("status: %+v", st)
	}
	for _, es := range st.Endpoints {
		if !es.Reachable || es.Version == "" || es.MemberID == "" || es.Leader != es.MemberID || !es.IsLeader || es.RaftTerm == 0 || es.DBSize == 0 {
			t.Fatalf("endpoint status: %+v", es)
		}
	}
	t.Logf("etcd version %s", st.Endpoints[0].Version)
}

func testBadConfig(t *testing.T) {
	dead := deadEndpoint(t)
	newFails(t, "unreachable endpoint", kvstore.Config{Endpoints: []string{dead}}, dead, "no endpoint answered")
	newFails(t, "no endpoints", kvstore.Config{}, "no endpoints")
	newFails(t, "endpoint without scheme", kvstore.Config{Endpoints: []string{"127.0.0.1:2379"}}, "127.0.0.1:2379", "scheme")
	newFails(t, "unknown scheme", kvstore.Config{Endpoints: []string{"ftp://127.0.0.1:2379"}}, "ftp")
	newFails(t, "missing CA file", kvstore.Config{Endpoints: []string{dead}, TLS: &kvstore.TLSConfig{CAFile: "/nonexistent/ca.pem"}}, "/nonexistent/ca.pem")
	newFails(t, "cert without key", kvstore.Config{Endpoints: []string{dead}, TLS: &kvstore.TLSConfig{CertFile: "/x/cert.pem"}}, "key")
	// A cancelled context fails New at once, whatever the dial timeout.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if _, err := kvstore.New(ctx, kvstore.Config{Endpoints: []string{dead}, DialTimeout: time.Minute}); !errors.Is(err, context.Canceled) || time.Since(start) > slack {
		t.Errorf("new with a cancelled context: %v after %s", err, time.Since(start))
	}
}

func testTLS(t *testing.T, start Target) {
	files := etcdtest.NewTLSFiles(t)
	srv := start(t, etcdtest.WithServerTLS(files))
	eps := srv.Endpoints()
	if !strings.HasPrefix(eps[0], "https://") {
		t.Fatalf("TLS server endpoints %v", eps)
	}

	for _, ep := range eps { // TCP and unix socket
		c := newClient(t, srv, etcdtest.WithEndpoints(ep), etcdtest.WithClientTLS(files.ClientTLS()))
		mustPut(t, c, "tls/a", ep)
		v := watchView(t, c, "tls/")
		v.waitEqualStore(t, c, "tls/")
	}

	cfg := func(tls *kvstore.TLSConfig, ep string) kvstore.Config {
		return kvstore.Config{Endpoints: []string{ep}, TLS: tls, DialTimeout: dialTimeout}
	}
	newFails(t, "server certificate from an untrusted CA",
		cfg(&kvstore.TLSConfig{CAFile: files.OtherCAFile, CertFile: files.ClientCert, KeyFile: files.ClientKey}, eps[0]),
		eps[0], "certificate")
	newFails(t, "no client certificate",
		cfg(&kvstore.TLSConfig{CAFile: files.CAFile}, eps[0]), eps[0])
	newFails(t, "client certificate from another CA",
		cfg(&kvstore.TLSConfig{CAFile: files.CAFile, CertFile: files.OtherClient, KeyFile: files.OtherKey}, eps[0]), eps[0])
	newFails(t, "plaintext to a TLS port",
		cfg(nil, "http://"+strings.TrimPrefix(eps[0], "https://")), "no endpoint answered", "https://")
	newFails(t, "key that does not match the certificate",
		cfg(&kvstore.TLSConfig{CAFile: files.CAFile, CertFile: files.ClientCert, KeyFile: files.OtherKey}, eps[0]), files.ClientCert)
}
