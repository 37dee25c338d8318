package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
)

func runPalisade(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

func TestIdentityCommand_ListAndGet(t *testing.T) {
	srv := etcdtest.Start(t)
	kv := etcdtest.NewClient(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	alloc, err := identity.NewAllocator(ctx, kv, identity.AllocatorConfig{
		Node: "node-1", Cluster: identity.ClusterConfig{Name: "cluster1", ID: 5},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer alloc.Close()
	web, _ := identity.ParseLabels("k8s:app=web", "k8s:io.kubernetes.pod.namespace=default")
	id, _, err := alloc.Allocate(ctx, web)
	if err != nil {
		t.Fatal(err)
	}
	ep := "--kvstore-endpoints=" + srv.Endpoints()[0]

	out, err := runPalisade(t, "identity", "list", ep, "-o", "json")
	if err != nil {
		t.Fatalf("list: %v\n%s", err, out)
	}
	var views []identityView
	if err := json.Unmarshal([]byte(out), &views); err != nil {
		t.Fatalf("list -o json: %v\n%s", err, out)
	}
	if len(views) != len(identity.ReservedIDs())+1 {
		t.Fatalf("got %d identities, want the reserved ones and %d:\n%s", len(views), id, out)
	}
	last := views[len(views)-1]
	want := identityView{ID: uint32(id), Kind: "cluster", Cluster: 5,
		Labels: []string{"k8s:app=web", "k8s:io.kubernetes.pod.namespace=default"}, Nodes: []string{"node-1"}}
	if fmt.Sprint(last) != fmt.Sprint(want) {
		t.Fatalf("listed %+v, want %+v", last, want)
	}
	if views[0].ID != 1 || views[0].Kind != "reserved" || views[0].Labels[0] != "reserved:host" {
		t.Fatalf("first listed %+v, want reserved host", views[0])
	}

	out, err = runPalisade(t, "identity", "list", ep, "--no-reserved")
	if err != nil {
		t.Fatalf("list table: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ID") ||
		!strings.Contains(lines[1], fmt.Sprint(id)) || !strings.Contains(lines[1], "k8s:app=web,") {
		t.Fatalf("table:\n%s", out)
	}

	for _, args := range [][]string{
		{"identity", "get", fmt.Sprint(id), ep, "-o", "yaml"},
		{"identity", "get", ep, "-o", "yaml", "--labels", "k8s:io.kubernetes.pod.namespace=default,k8s:app=web"},
	} {
		out, err = runPalisade(t, args...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		var got identityView
		if err := yaml.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%v: got %+v, want %+v", args, got, want)
		}
	}

	// Reserved identities need no etcd at all.
	out, err = runPalisade(t, "identity", "get", "world", "--kvstore-endpoints=http://127.0.0.1:1")
	if err != nil || !strings.Contains(out, "reserved:world") {
		t.Fatalf("get world: %v\n%s", err, out)
	}
}

func TestIdentityCommand_Errors(t *testing.T) {
	srv := etcdtest.Start(t)
	ep := "--kvstore-endpoints=" + srv.Endpoints()[0]
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"identity", "get", "70000", ep}, "identity 70000 not found"},
		{[]string{"identity", "get", ep, "--labels", "k8s:app=nope"}, "no identity for labels k8s:app=nope"},
		{[]string{"identity", "get", "bogus", ep}, `identity "bogus": not a number or reserved name`},
		{[]string{"identity", "get", ep}, "either an identity"},
		{[]string{"identity", "get", "1", "--labels", "k8s:a=b", ep}, "either an identity"},
		{[]string{"identity", "get", ep, "--labels", "bad source:x"}, "unknown source"},
		{[]string{"identity", "list", ep, "-o", "xml"}, "unknown output format"},
	}
	for _, c := range cases {
		out, err := runPalisade(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err = %v (output %q), want %q", c.args, err, out, c.want)
		}
	}
}
