package bpf

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/palisade-mesh/palisade/internal/testenv"
)

// testPinDir returns a unique pin directory under /sys/fs/bpf for one test.
func testPinDir(t testing.TB) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return filepath.Join(bpffsRoot, fmt.Sprintf("palisade-test-%d-%s", os.Getpid(), hex.EncodeToString(b[:])))
}

// openTest loads a datapath in a fresh pin directory that is removed when the test ends.
func openTest(t testing.TB, opts Options) *Datapath {
	t.Helper()
	testenv.RequireRoot(t)
	if opts.PinDir == "" {
		opts.PinDir = testPinDir(t)
	}
	d, err := Open(opts)
	if err != nil {
		t.Fatalf("open datapath: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Remove(); err != nil {
			t.Errorf("remove datapath: %v", err)
		}
		if _, err := os.Stat(opts.PinDir); !os.IsNotExist(err) {
			t.Errorf("pin directory %s left behind (stat: %v)", opts.PinDir, err)
		}
	})
	return d
}

func TestOpen_RejectsBadOptions(t *testing.T) {
	cases := map[string]Options{
		"policy map too large": {PolicyMapMaxEntries: 1 << 21},
		"negative events rate": {EventsPerSecond: -1},
		"timeout below 1s":     {CTTimeoutTCP: 1},
	}
	for name, opts := range cases {
		t.Run(name, func(t *testing.T) {
			opts.PinDir = t.TempDir()
			if _, err := Open(opts); err == nil {
				t.Fatal("Open accepted bad options")
			}
		})
	}
}

func TestOpen_RefusesPinDirOutsideBPFFS(t *testing.T) {
	testenv.RequireRoot(t)
	if _, err := Open(Options{PinDir: t.TempDir()}); err == nil {
		t.Fatal("Open accepted a pin directory on a non-bpf filesystem")
	}
}

func TestOpen_ReopenAdoptsPinnedMaps(t *testing.T) {
	testenv.RequireRoot(t)
	dir := testPinDir(t)
	d, err := Open(Options{PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.UpsertIPCache(mustPrefix("10.1.0.0/16"), 300); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d2 := openTest(t, Options{PinDir: dir})
	got, err := d2.LookupIPCache(mustAddr("10.1.2.3"))
	if err != nil || got != 300 {
		t.Fatalf("after reopen identity = %d, %v; want 300", got, err)
	}
}

func TestOpenPinned_InspectsWithoutPrograms(t *testing.T) {
	d := openTest(t, Options{})
	if err := d.UpsertIPCache(mustPrefix("10.7.0.0/16"), 400); err != nil {
		t.Fatal(err)
	}
	if err := d.ReplacePolicy(3, []PolicyEntry{{Identity: 400, Protocol: ProtoTCP, Port: 443}}); err != nil {
		t.Fatal(err)
	}
	in, err := OpenPinned(d.PinDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if id, err := in.LookupIPCache(mustAddr("10.7.1.1")); err != nil || id != 400 {
		t.Errorf("inspected ipcache identity = %d, %v; want 400", id, err)
	}
	if p, err := in.Policy(3); err != nil || len(p) != 1 || p[0].Port != 443 {
		t.Errorf("inspected policy = %+v, %v", p, err)
	}
	if err := in.AttachEndpoint(EndpointConfig{ID: 1, IfIndex: 1, IPv4: mustAddr("10.0.0.1")}); err == nil {
		t.Error("inspection datapath attached an endpoint")
	}
	if err := in.Remove(); err == nil {
		t.Error("inspection datapath removed the pins")
	}
}

func TestOpenPinned_NoDatapath(t *testing.T) {
	testenv.RequireRoot(t)
	if _, err := OpenPinned(testPinDir(t), nil); err == nil {
		t.Fatal("OpenPinned succeeded without pinned maps")
	}
}
