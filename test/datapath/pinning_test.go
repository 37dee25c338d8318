package datapath

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/palisade-mesh/palisade/bpf"
)

// childEnv carries the job of a child process that loads the datapath, configures it and exits.
const childEnv = "PALISADE_DATAPATH_TEST_CHILD"

type childJob struct {
	PinDir    string
	Endpoints []bpf.EndpointConfig
	Identity  map[uint32]uint32 // endpoint ID -> identity
	Policies  map[uint32][]bpf.PolicyEntry
}

func TestMain(m *testing.M) {
	if raw := os.Getenv(childEnv); raw != "" {
		if err := runChild(raw); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runChild is the first "agent": it leaves enforcement running and exits without cleaning up.
func runChild(raw string) error {
	var job childJob
	if err := json.Unmarshal([]byte(raw), &job); err != nil {
		return err
	}
	dp, err := bpf.Open(bpf.Options{PinDir: job.PinDir})
	if err != nil {
		return err
	}
	defer dp.Close()
	for _, ep := range job.Endpoints {
		if err := dp.AttachEndpoint(ep); err != nil {
			return err
		}
		if err := dp.UpsertIPCache(netip.PrefixFrom(ep.IPv4, 32), job.Identity[ep.ID]); err != nil {
			return err
		}
		if err := dp.ReplacePolicy(ep.ID, job.Policies[ep.ID]); err != nil {
			return err
		}
	}
	ids, err := dp.ProgramIDs()
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(ids)
}

func TestPinning_StateSurvivesItsProcessAndIsAdopted(t *testing.T) {
	c := newCluster(t)
	n1tn := c.topo.MustAddNode(t, "n1")
	n1 := &node{Node: n1tn}
	mk := func(name string, id, identity uint32) *endpoint {
		te := n1.MustAddEndpoint(t, name)
		return &endpoint{Endpoint: te, id: id, identity: identity, node: n1}
	}
	a, b, x := mk("a", 1, idClient), mk("b", 2, idServer), mk("x", 3, idOther)
	dir := pinDir(c.topo.Suffix(), "n1")
	job := childJob{PinDir: dir, Identity: map[uint32]uint32{}, Policies: map[uint32][]bpf.PolicyEntry{
		a.id: {allowAllEgress},
		b.id: {allowTCP(idClient, 8080)},
		x.id: {allowAllEgress},
	}}
	for _, ep := range []*endpoint{a, b, x} {
		job.Endpoints = append(job.Endpoints, bpf.EndpointConfig{ID: ep.id, IfName: ep.HostIf, NetnsPath: ep.NS.Path, IPv4: ep.IP})
		job.Identity[ep.id] = ep.identity
	}
	raw, _ := json.Marshal(job)

	// Safety net: whatever happens below, nothing of the child stays pinned.
	t.Cleanup(func() {
		if _, err := os.Stat(dir); err == nil {
			if dp, err := bpf.Open(bpf.Options{PinDir: dir}); err == nil {
				_ = dp.Remove()
			}
		}
	})
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"="+string(raw))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := n1.NS.Run(cmd)
	if err != nil {
		t.Fatalf("child: %v\n%s%s", err, out, stderr.String())
	}
	var childProgs map[string]uint32
	if err := json.Unmarshal(out, &childProgs); err != nil || len(childProgs) != 3 {
		t.Fatalf("child output %q: %v", out, err)
	}

	// The child is gone; its programs still enforce its policy.
	echoServer(t, b, 8080, "pinned")
	echoServer(t, b, 8081, "pinned")
	mustGreet(t, a, addrPort(b, 8080), "pinned")
	mustBeBlocked(t, a, addrPort(b, 8081))
	for name, id := range childProgs {
		p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
		if err != nil {
			t.Fatalf("program %s of the exited child is gone: %v", name, err)
		}
		p.Close()
	}

	// x's interface disappears while no agent runs: the adopting process drops it.
	if err := n1.RemoveEndpoint(x.Endpoint); err != nil {
		t.Fatal(err)
	}

	dp, err := bpf.Open(bpf.Options{PinDir: dir})
	if err != nil {
		t.Fatalf("adopt pinned state: %v", err)
	}
	ownProgs, err := dp.ProgramIDs()
	if err != nil {
		t.Fatal(err)
	}
	removed := false
	t.Cleanup(func() {
		if !removed {
			_ = dp.Remove()
		}
	})
	eps, err := dp.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint32]bpf.EndpointState{}
	for _, e := range eps {
		got[e.ID] = e
	}
	if len(got) != 2 || got[a.id].IPv4 != a.IP || got[b.id].IPv4 != b.IP || got[b.id].PolicyEntries != 1 || !got[b.id].ProxySteering {
		t.Fatalf("adopted endpoints %+v, want a and b (x's interface is gone)", eps)
	}
	// Adoption moved the links to the new programs: the child's are released.
	assertNoLeftovers(t, "/nonexistent", childProgs)
	mustGreet(t, a, addrPort(b, 8080), "pinned")

	// The adopter reconciles policy on the running datapath.
	if err := dp.ReplacePolicy(b.id, []bpf.PolicyEntry{allowTCP(idClient, 8081)}); err != nil {
		t.Fatal(err)
	}
	mustGreet(t, a, addrPort(b, 8081), "pinned")
	mustBeBlocked(t, a, addrPort(b, 8080))

	// Attaching again is idempotent: still one program per hook.
	cfg := bpf.EndpointConfig{ID: b.id, IfName: b.HostIf, NetnsPath: b.NS.Path, IPv4: b.IP}
	if err := n1.NS.Do(func() error { return dp.AttachEndpoint(cfg) }); err != nil {
		t.Fatal(err)
	}
	if n := tcxPrograms(t, n1, b.HostIfIndex); n != 2 {
		t.Fatalf("%d TCX programs on %s after a second attach, want 2", n, b.HostIf)
	}

	// Detach leaves nothing on the interface or the namespace.
	if err := dp.DetachEndpoint(b.id); err != nil {
		t.Fatal(err)
	}
	if n := tcxPrograms(t, n1, b.HostIfIndex); n != 0 {
		t.Fatalf("%d TCX programs on %s after detach", n, b.HostIf)
	}
	if n := skLookupPrograms(t, b); n != 0 {
		t.Fatalf("%d sk_lookup programs in %s after detach", n, b.NS.Name)
	}
	if err := dp.DetachEndpoint(b.id); err != nil {
		t.Fatalf("second detach: %v", err)
	}
	removed = true
	if err := dp.Remove(); err != nil {
		t.Fatal(err)
	}
	if n := tcxPrograms(t, n1, a.HostIfIndex); n != 0 {
		t.Fatalf("%d TCX programs on %s after Remove", n, a.HostIf)
	}
	assertNoLeftovers(t, dir, ownProgs)
}

func skLookupPrograms(t *testing.T, ep *endpoint) int {
	t.Helper()
	f, err := os.Open(ep.NS.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: ebpf.AttachSkLookup})
	if err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
		t.Fatalf("query sk_lookup programs: %v", err)
	}
	if res == nil {
		return 0
	}
	return len(res.Programs)
}
