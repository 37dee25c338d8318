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

// Target starts a fresh server for one group of tests. Groups that stop their server or compact it
// get their own, so that they do not disturb tests running in parallel.
type Target func(t *testing.T) Server

// Run runs the whole suite against servers made by start.
func Run(t *testing.T, start Target) {
	shared := start(t)
	t.Run("KV", func(t *testing.T) { runKV(t, shared) })
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
