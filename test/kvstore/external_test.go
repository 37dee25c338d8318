package kvstore

import (
	"testing"

	"github.com/palisade-mesh/palisade/kvstore/conformance"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
)

// TestConformance_ExternalEtcd34 runs the kvstore suite against the installed etcd binary (Debian's
// etcd-server 3.4) started as a separate process.
func TestConformance_ExternalEtcd34(t *testing.T) {
	conformance.Run(t, func(t *testing.T, opts ...etcdtest.ServerOption) conformance.Server {
		return etcdtest.StartExternal(t, opts...)
	})
}
