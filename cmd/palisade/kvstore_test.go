package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"

	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
)

// syncBuffer is written by a command running in another goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func runKvstoreCommand(ctx context.Context, out *syncBuffer, args ...string) error {
	root := newRootCommand()
	root.SetOut(out)
	root.SetErr(out)
	root.SetArgs(append([]string{"kvstore"}, args...))
	return root.ExecuteContext(ctx)
}

func TestKvstoreServe_ServesUntilCancelledAndStatusReportsIt(t *testing.T) {
	sock := filepath.Join(etcdtest.SocketDir(t), "etcd.sock")
	ep := "unix://" + sock
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var serveOut syncBuffer
	served := make(chan error, 1)
	go func() {
		served <- runKvstoreCommand(ctx, &serveOut, "serve", "--data-dir", t.TempDir(),
			"--listen-client-urls", ep, "--advertise-client-urls", "http://127.0.0.1:2379", "--listen-peer-urls", "http://127.0.0.1:0")
	}()

	var c *kvstore.Client
	deadline := time.Now().Add(30 * time.Second)
	for c == nil {
		select {
		case err := <-served:
			t.Fatalf("serve ended early: %v\n%s", err, serveOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not answering on %s after 30s\n%s", ep, serveOut.String())
		}
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		c, _ = kvstore.New(cctx, kvstore.Config{Endpoints: []string{ep}, DialTimeout: time.Second})
		ccancel()
	}
	if err := c.Put(ctx, "k", []byte("v"), kvstore.NoLease); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if !strings.Contains(serveOut.String(), sock) {
		t.Errorf("serve did not log its endpoint:\n%s", serveOut.String())
	}

	var out syncBuffer
	if err := runKvstoreCommand(ctx, &out, "status", "--kvstore-endpoints", ep, "-o", "json"); err != nil {
		t.Fatalf("status: %v\n%s", err, out.String())
	}
	var st kvstore.Status
	if err := json.Unmarshal([]byte(out.String()), &st); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, out.String())
	}
	if !st.Healthy || len(st.Endpoints) != 1 || !st.Endpoints[0].Reachable || st.Endpoints[0].Version == "" {
		t.Fatalf("status: %+v", st)
	}

	out = syncBuffer{}
	if err := runKvstoreCommand(ctx, &out, "status", "--kvstore-endpoints", ep, "-o", "yaml"); err != nil {
		t.Fatal(err)
	}
	var fromYAML kvstore.Status
	if err := yaml.Unmarshal([]byte(out.String()), &fromYAML); err != nil || fromYAML.Endpoints[0].MemberID != st.Endpoints[0].MemberID {
		t.Fatalf("status -o yaml: %v\n%s", err, out.String())
	}

	out = syncBuffer{}
	if err := runKvstoreCommand(ctx, &out, "status", "--kvstore-endpoints", ep); err != nil {
		t.Fatal(err)
	}
	table := out.String()
	for _, want := range []string{"ENDPOINT", "REACHABLE", ep, st.Endpoints[0].Version, "(this)", "1 members", "healthy"} {
		if !strings.Contains(table, want) {
			t.Errorf("status table lacks %q:\n%s", want, table)
		}
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("serve after cancel: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve still running 15s after cancel")
	}
}

func TestKvstoreStatus_UnreachableFailsFastNamingEndpoint(t *testing.T) {
	var out syncBuffer
	start := time.Now()
	err := runKvstoreCommand(context.Background(), &out, "status", "--kvstore-endpoints", "http://127.0.0.1:1", "--kvstore-dial-timeout", "1s")
	if err == nil || !strings.Contains(err.Error(), "http://127.0.0.1:1") {
		t.Fatalf("status of an unreachable endpoint: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("took %s", took)
	}
}

func TestKvstoreServe_RefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "--data-dir", t.TempDir(), "--listen-client-urls", "ftp://127.0.0.1:0"},
		{"serve", "--data-dir", t.TempDir(), "--listen-client-urls", "https://127.0.0.1:0"},
		{"serve", "--data-dir", t.TempDir(), "--etcd-log-level", "loud"},
		{"status", "-o", "xml"},
	} {
		var out syncBuffer
		if err := runKvstoreCommand(context.Background(), &out, args...); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

func TestKvstoreFlags_Config(t *testing.T) {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	kvf := addKvstoreFlags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if cfg := kvf.config(); len(cfg.Endpoints) != 1 || cfg.Endpoints[0] != kvstore.DefaultEndpoint || cfg.TLS != nil || cfg.Prefix != kvstore.DefaultPrefix {
		t.Fatalf("defaults: %+v", cfg)
	}
	if err := fs.Parse([]string{"--kvstore-endpoints", "https://a:2379,https://b:2379", "--kvstore-ca-file", "ca.pem",
		"--kvstore-cert", "c.pem", "--kvstore-key-file", "k.pem", "--kvstore-prefix", "x/"}); err != nil {
		t.Fatal(err)
	}
	cfg := kvf.config()
	if len(cfg.Endpoints) != 2 || cfg.Prefix != "x/" || cfg.TLS == nil || *cfg.TLS != (kvstore.TLSConfig{CAFile: "ca.pem", CertFile: "c.pem", KeyFile: "k.pem"}) {
		t.Fatalf("parsed: %+v %+v", cfg, cfg.TLS)
	}
}
