package kvstore_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/kvstore/embedded"
)

// exampleServer starts an embedded etcd in a temp dir for the examples; stop removes it.
func exampleServer() (endpoints []string, stop func()) {
	dir, err := os.MkdirTemp("", "kvstore-example-")
	if err != nil {
		panic(err)
	}
	srv, err := embedded.Start(context.Background(), embedded.Config{DataDir: dir, UnsafeNoFsync: true})
	if err != nil {
		panic(err)
	}
	return srv.Endpoints(), func() {
		srv.Close()
		os.RemoveAll(dir)
	}
}

func exampleClient(endpoints []string) *kvstore.Client {
	c, err := kvstore.New(context.Background(), kvstore.Config{
		Endpoints: endpoints,
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		panic(err)
	}
	return c
}

// Two agents race to allocate the same identity: one transaction creates the ID and its value key
// only if neither exists, so exactly one wins and the other reads the winner's ID.
func ExampleClient_Txn() {
	endpoints, stop := exampleServer()
	defer stop()
	c := exampleClient(endpoints)
	defer c.Close()
	ctx := context.Background()

	allocate := func(id string) (string, error) {
		res, err := c.Txn(ctx,
			[]kvstore.Cmp{kvstore.KeyMissing("identities/id/" + id), kvstore.KeyMissing("identities/value/h1")},
			[]kvstore.Op{
				kvstore.OpPut("identities/id/"+id, []byte("k8s:app=web"), kvstore.NoLease),
				kvstore.OpPut("identities/value/h1", []byte(id), kvstore.NoLease),
			},
			[]kvstore.Op{kvstore.OpGet("identities/value/h1")})
		if err != nil {
			return "", err
		}
		if res.Succeeded {
			return id, nil
		}
		return string(res.Gets[0].Value), nil
	}
	first, _ := allocate("256")
	second, _ := allocate("257")
	fmt.Println(first, second)
	// Output: 256 256
}

// Watch delivers the current keys, a synced marker, then every change.
func ExampleClient_Watch() {
	endpoints, stop := exampleServer()
	defer stop()
	c := exampleClient(endpoints)
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	c.Put(ctx, "nodes/a", []byte("10.0.0.1"), kvstore.NoLease)
	events := c.Watch(ctx, "nodes/")
	print := func() {
		ev := <-events
		fmt.Println(strings.TrimSpace(fmt.Sprint(ev.Type, " ", ev.Key, " ", string(ev.Value))))
	}
	print()
	print()
	c.Put(ctx, "nodes/b", []byte("10.0.0.2"), kvstore.NoLease)
	c.Delete(ctx, "nodes/a")
	print()
	print()
	// Output:
	// upsert nodes/a 10.0.0.1
	// synced
	// upsert nodes/b 10.0.0.2
	// delete nodes/a
}

// A node attaches its keys to a session: they live as long as the node keeps the session alive,
// and go when it closes the session (or crashes and the leases expire).
func ExampleClient_NewSession() {
	endpoints, stop := exampleServer()
	defer stop()
	c := exampleClient(endpoints)
	defer c.Close()
	ctx := context.Background()

	s, err := c.NewSession(ctx, 10*time.Second)
	if err != nil {
		panic(err)
	}
	lease, _ := s.Acquire(ctx)
	c.Put(ctx, "nodes/node-1", []byte(`{"name":"node-1"}`), lease)
	_, found, _ := c.Get(ctx, "nodes/node-1")
	fmt.Println("while the session lives:", found)

	s.Close(ctx)
	_, found, _ = c.Get(ctx, "nodes/node-1")
	fmt.Println("after it closed:", found)
	// Output:
	// while the session lives: true
	// after it closed: false
}
