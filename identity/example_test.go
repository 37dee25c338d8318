package identity_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/kvstore/embedded"
)

// Two allocations of the same labels on a node: the first creates the identity in etcd, the second
// is served from what the node holds. Runs against a real embedded etcd.
func ExampleAllocator() {
	dir, err := os.MkdirTemp("", "palisade-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	srv, err := embedded.Start(ctx, embedded.Config{DataDir: dir, UnsafeNoFsync: true})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	kv, err := kvstore.New(ctx, kvstore.Config{Endpoints: srv.Endpoints()[:1]})
	if err != nil {
		log.Fatal(err)
	}
	defer kv.Close()

	alloc, err := identity.NewAllocator(ctx, kv, identity.AllocatorConfig{
		Node:    "node-1",
		Cluster: identity.ClusterConfig{Name: "cluster1", ID: 1},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer alloc.Close()

	web, err := identity.EndpointLabels(map[string]string{"app": "web"}, "default", nil, "cluster1")
	if err != nil {
		log.Fatal(err)
	}
	id, isNew, err := alloc.Allocate(ctx, web)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(isNew, identity.DefaultLayout.KindOf(id), identity.DefaultLayout.ClusterOf(id))
	again, isNew, err := alloc.Allocate(ctx, web)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(again == id, isNew)
	labels, _ := alloc.Lookup(id)
	fmt.Println(labels)
	// Output:
	// true cluster 1
	// true false
	// k8s:app=web;k8s:io.cilium.k8s.policy.cluster=cluster1;k8s:io.kubernetes.pod.namespace=default
}
