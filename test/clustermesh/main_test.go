package clustermesh_test

import (
	"os"
	"testing"

	"github.com/palisade-mesh/palisade/test/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.Cleanup()
	os.Exit(code)
}
