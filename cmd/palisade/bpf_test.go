package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/palisade-mesh/palisade/bpf"
	"github.com/palisade-mesh/palisade/internal/testenv"
)

func runBPFCommand(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"bpf"}, args...))
	err := root.Execute()
	return out.String(), err
}

func TestBPFCommand_InspectsPinnedDatapath(t *testing.T) {
	testenv.RequireRoot(t)
	dir := filepath.Join("/sys/fs/bpf", fmt.Sprintf("palisade-test-cli-%d", os.Getpid()))
	dp, err := bpf.Open(bpf.Options{PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := dp.Remove(); err != nil {
			t.Errorf("remove datapath: %v", err)
		}
	})
	if err := dp.UpsertIPCache(mustParsePrefix(t, "10.8.0.0/16"), 4242); err != nil {
		t.Fatal(err)
	}
	if err := dp.ReplacePolicy(5, []bpf.PolicyEntry{{Identity: 4242, Protocol: bpf.ProtoTCP, Port: 80, ProxyPort: 15001}}); err != nil {
		t.Fatal(err)
	}

	out, err := runBPFCommand(t, "--pin-dir", dir, "ipcache", "-o", "json")
	if err != nil {
		t.Fatalf("ipcache: %v\n%s", err, out)
	}
	var rows []struct {
		Prefix   string
		Identity uint32
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 1 || rows[0].Prefix != "10.8.0.0/16" || rows[0].Identity != 4242 {
		t.Fatalf("ipcache output %q (%v)", out, err)
	}

	out, err = runBPFCommand(t, "--pin-dir", dir, "policy", "5")
	if err != nil || !strings.Contains(out, "4242") || !strings.Contains(out, "15001") {
		t.Fatalf("policy output %q, %v", out, err)
	}
	if _, err := runBPFCommand(t, "--pin-dir", dir, "policy", "6"); err == nil {
		t.Error("policy of an endpoint without one succeeded")
	}
	if _, err := runBPFCommand(t, "--pin-dir", dir, "policy", "x"); err == nil {
		t.Error("non-numeric endpoint accepted")
	}
	if out, err := runBPFCommand(t, "--pin-dir", dir, "ct", "flush"); err == nil {
		t.Errorf("flush without a selector succeeded: %s", out)
	}
	if out, err := runBPFCommand(t, "--pin-dir", dir, "ct", "gc"); err != nil || !strings.Contains(out, "removed 0") {
		t.Errorf("ct gc: %q, %v", out, err)
	}
	if out, err := runBPFCommand(t, "--pin-dir", dir, "events"); err != nil || !strings.Contains(out, "EMITTED") {
		t.Errorf("events: %q, %v", out, err)
	}
	if _, err := runBPFCommand(t, "--pin-dir", filepath.Join(dir, "nothing-here"), "endpoints"); err == nil {
		t.Error("endpoints of a missing datapath succeeded")
	}
}

func mustParsePrefix(t *testing.T, s string) netip.Prefix {
	t.Helper()
	p, err := netip.ParsePrefix(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
