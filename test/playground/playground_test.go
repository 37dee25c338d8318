package playground_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/internal/playground"
	"github.com/palisade-mesh/palisade/internal/testenv"
	"github.com/palisade-mesh/palisade/test/topology"
)

// TestPlayground_StarWarsUpAndDown drives the playground as a user does, through the palisade
// binary, and checks that `dev down` leaves nothing behind.
func TestPlayground_StarWarsUpAndDown(t *testing.T) {
	testenv.RequireRoot(t)
	bin := filepath.Join(t.TempDir(), "palisade")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/palisade-mesh/palisade/cmd/palisade").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	dir, err := os.MkdirTemp("/tmp", "pal-pg-")
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, append(args, "--dir", dir)...).CombinedOutput()
		if err != nil {
			t.Fatalf("palisade %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("dev", "up", "--nodes", "2")
	st, err := playground.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := os.Stat(dir); err == nil {
			_ = st.Down()
		}
	})
	run("dev", "endpoint", "add", "deathstar", "--node", "node1", "--labels", "org=empire,class=deathstar", "--workload", "deathstar")
	run("dev", "endpoint", "add", "tiefighter", "--node", "node2", "--labels", "org=empire,class=tiefighter")
	run("dev", "endpoint", "add", "xwing", "--node", "node2", "--labels", "org=alliance,class=xwing")

	st, err = playground.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	land := func(from string) playground.Response {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := st.Request(ctx, from, "deathstar", "POST", "/v1/request-landing", time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// The deathstar's server starts asynchronously.
	deadline := time.Now().Add(10 * time.Second)
	for r := land("xwing"); r.Status != 200; r = land("xwing") {
		if time.Now().After(deadline) {
			t.Fatalf("before policy the xwing does not land: %s", r.Verdict())
		}
		time.Sleep(200 * time.Millisecond)
	}
	out, err := exec.Command(bin, "policy", "import", "-f", "../../examples/starwars/l3-l4.yaml", "--kvstore-endpoints", st.KvstoreEndpoint()).CombinedOutput()
	if err != nil {
		t.Fatalf("policy import: %v\n%s", err, out)
	}
	deadline = time.Now().Add(10 * time.Second)
	for r := land("xwing"); !r.Dropped; r = land("xwing") {
		if time.Now().After(deadline) {
			t.Fatalf("after l3-l4 the xwing still gets %s", r.Verdict())
		}
	}
	if r := land("tiefighter"); r.Status != 200 || r.Body != "Ship landed\n" {
		t.Fatalf("after l3-l4 the tiefighter gets %s", r.Verdict())
	}

	run("dev", "down")
	if left := topology.NamespacesWithPrefix(st.NSPrefix); len(left) > 0 {
		t.Errorf("namespaces left after dev down: %v", left)
	}
	for _, n := range st.Nodes() {
		if _, err := os.Stat(n.PinDir); err == nil {
			t.Errorf("pinned state left after dev down: %s", n.PinDir)
		}
		if n.Agent.Running() {
			t.Errorf("agent of %s still running", n.Name)
		}
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("%s left after dev down", dir)
	}
}
