package conformance

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
)

// Server is an etcd under test that can be stopped and brought back on the same data and
// addresses (etcdtest.Embedded, etcdtest.External).
type Server interface {
	Endpoints() []string
	Stop()
	Restart()
}

// Target starts a fresh server (with TLS when an option says so). Tests that stop their server get
// their own; the others share one, each under its own key prefix.
type Target func(t *testing.T, opts ...etcdtest.ServerOption) Server

// Run runs the whole suite against servers made by start.
func Run(t *testing.T, start Target) {
	shared := start(t)
	t.Run("KV", func(t *testing.T) { runKV(t, shared) })
	t.Run("Watch", func(t *testing.T) { runWatch(t, shared) })
	t.Run("Leases", func(t *testing.T) { runLeases(t, shared) })
	t.Run("Connect", func(t *testing.T) { runConnect(t, shared, start) })
	t.Run("Faults", func(t *testing.T) { runFaults(t, shared, start) })
}

// newClient connects to srv under a prefix unique to the test, so that tests sharing a server do
// not see each other's keys.
func newClient(t *testing.T, srv etcdtest.Endpointer, opts ...etcdtest.ClientOption) *kvstore.Client {
	t.Helper()
	return etcdtest.NewClient(t, srv, append([]etcdtest.ClientOption{etcdtest.WithPrefix(uniquePrefix(t))}, opts...)...)
}

func uniquePrefix(t *testing.T) string {
	return "conformance/" + strings.ReplaceAll(t.Name(), "/", "_") + "/"
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func withConfigs(fs []func(*kvstore.Config)) []etcdtest.ClientOption {
	out := make([]etcdtest.ClientOption, len(fs))
	for i, f := range fs {
		out[i] = etcdtest.WithConfig(f)
	}
	return out
}
