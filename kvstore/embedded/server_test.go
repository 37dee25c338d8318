package embedded_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/kvstore/embedded"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
)

func start(t *testing.T, cfg embedded.Config) *embedded.Server {
	t.Helper()
	srv, err := embedded.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func connect(t *testing.T, endpoints ...string) *kvstore.Client {
	t.Helper()
	c, err := kvstore.New(context.Background(), kvstore.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("connect to %v: %v", endpoints, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func socketPath(t *testing.T) string {
	dir, err := os.MkdirTemp("", "pal-emb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "etcd.sock")
}

func TestStart_RejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	files := etcdtest.NewTLSFiles(t)
	cases := []struct {
		name string
		cfg  embedded.Config
		want string
	}{
		{"no data dir", embedded.Config{}, "DataDir"},
		{"unknown scheme", embedded.Config{DataDir: dir, ClientURLs: []string{"tcp://127.0.0.1:0"}}, "scheme"},
		{"no port", embedded.Config{DataDir: dir, ClientURLs: []string{"http://127.0.0.1"}}, "port"},
		{"https without TLS", embedded.Config{DataDir: dir, ClientURLs: []string{"https://127.0.0.1:0"}}, "needs TLS"},
		{"TLS on a plaintext URL", embedded.Config{DataDir: dir, ClientURLs: []string{"http://127.0.0.1:0"},
			TLS: &embedded.TLSServerConfig{CertFile: files.ServerCert, KeyFile: files.ServerKey}}, "plaintext"},
		{"CA file without certificates", embedded.Config{DataDir: dir, ClientURLs: []string{"https://127.0.0.1:0"},
			TLS: &embedded.TLSServerConfig{CertFile: files.ServerCert, KeyFile: files.ServerKey, TrustedCAFile: files.ServerKey}}, "no PEM certificate"},
		{"TLS without key", embedded.Config{DataDir: dir, ClientURLs: []string{"https://127.0.0.1:0"},
			TLS: &embedded.TLSServerConfig{CertFile: "c"}}, "KeyFile"},
		{"unix only without advertise URL", embedded.Config{DataDir: dir, ClientURLs: []string{"unix:///tmp/x.sock"}}, "AdvertiseClientURLs"},
		{"unix peer URL", embedded.Config{DataDir: dir, PeerURL: "unix:///tmp/p.sock"}, "peer URL"},
		{"bad log level", embedded.Config{DataDir: dir, LogLevel: "loud"}, "log level"},
		{"missing certificate file", embedded.Config{DataDir: dir, ClientURLs: []string{"https://127.0.0.1:0"},
			TLS: &embedded.TLSServerConfig{CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem"}}, "/nonexistent/"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := embedded.Start(context.Background(), tc.cfg)
			if err == nil {
				srv.Close()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestServer_RestartKeepsDataAndAddresses(t *testing.T) {
	sock := socketPath(t)
	srv := start(t, embedded.Config{
		DataDir:    filepath.Join(t.TempDir(), "etcd"),
		ClientURLs: []string{"http://127.0.0.1:0", "unix://" + sock},
	})
	eps := srv.Endpoints()
	if len(eps) != 2 || strings.HasSuffix(eps[0], ":0") || eps[1] != "unix://"+sock {
		t.Fatalf("endpoints %v: want a resolved port and the socket", eps)
	}
	c := connect(t, eps[1])
	if err := c.Put(context.Background(), "k", []byte("kept"), kvstore.NoLease); err != nil {
		t.Fatal(err)
	}
	c.Close()
	cfg := srv.Config()
	srv.Close()
	select {
	case <-srv.Done():
	default:
		t.Fatal("Done not closed after Close")
	}

	again := start(t, cfg)
	if !slices.Equal(again.Endpoints(), eps) {
		t.Fatalf("endpoints after restart %v, before %v", again.Endpoints(), eps)
	}
	kv, found, err := connect(t, eps[0]).Get(context.Background(), "k")
	if err != nil || !found || string(kv.Value) != "kept" {
		t.Fatalf("after restart: %+v %v %v", kv, found, err)
	}
}

func TestStart_UnixSocketOnlyWithAdvertisedURL(t *testing.T) {
	sock := socketPath(t)
	srv := start(t, embedded.Config{
		DataDir:             t.TempDir(),
		ClientURLs:          []string{"unix://" + sock},
		AdvertiseClientURLs: []string{"http://127.0.0.1:2379"},
	})
	st, err := connect(t, srv.Endpoints()...).Status(context.Background())
	if err != nil || !st.Healthy {
		t.Fatalf("status over the socket: %+v, %v", st, err)
	}
}

func TestStart_ConcurrentServersGetDistinctPorts(t *testing.T) {
	a := start(t, embedded.Config{DataDir: t.TempDir(), UnsafeNoFsync: true})
	b := start(t, embedded.Config{DataDir: t.TempDir(), UnsafeNoFsync: true})
	if a.Endpoints()[0] == b.Endpoints()[0] {
		t.Fatalf("two servers on %s", a.Endpoints()[0])
	}
	for _, srv := range []*embedded.Server{a, b} {
		if _, _, err := connect(t, srv.Endpoints()...).List(context.Background(), ""); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStart_CancelledContextStopsStartup(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	srv, err := embedded.Start(ctx, embedded.Config{DataDir: t.TempDir()})
	if err == nil {
		srv.Close()
		t.Fatal("started with a cancelled context")
	}
}
