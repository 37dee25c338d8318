package kvstore_test

import (
	"testing"

	"github.com/palisade-mesh/palisade/kvstore/conformance"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
)

// TestConformance_Embedded runs the kvstore suite against the embedded etcd server.
func TestConformance_Embedded(t *testing.T) {
	conformance.Run(t, func(t *testing.T, opts ...etcdtest.ServerOption) conformance.Server {
		return etcdtest.StartRestartable(t, opts...)
	})
}
