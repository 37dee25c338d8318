// Package remotetest runs real remote clusters for tests of their clients: a mesh CA with
// certificates on disk, and per cluster its own etcd key space (on a shared embedded etcd), token
// signing key and mesh API server (clustermesh/apiserver) on 127.0.0.1. Tests write the cluster's
// state as its agents and identity allocator would, and get the remote cluster configuration (agent
// certificate, CA bundle, token) a reading cluster needs.
package remotetest

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/certs"
	"github.com/palisade-mesh/palisade/certs/meshtls"
	"github.com/palisade-mesh/palisade/certs/token"
	"github.com/palisade-mesh/palisade/clustermesh"
	"github.com/palisade-mesh/palisade/clustermesh/apiserver"
	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/kvstore/embedded"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
)

// TrustDomain of the test mesh.
const TrustDomain = "mesh.test"

// Quiet discards logs.
func Quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Mesh is a mesh CA and the etcd every cluster of the test keeps its state in (each under its own
// prefix).
type Mesh struct {
	CA   *certs.CA
	Dir  string
	etcd *embedded.Server
}

// NewMesh creates the CA and starts etcd; both go away when the test ends.
func NewMesh(t testing.TB) *Mesh {
	t.Helper()
	ca, err := certs.NewCA(certs.CAOptions{TrustDomain: TrustDomain, NotBefore: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return &Mesh{CA: ca, Dir: t.TempDir(), etcd: etcdtest.Start(t)}
}

// Cluster is one remote cluster: its etcd key space, signing key and mesh API server.
type Cluster struct {
	Name string
	ID   uint32
	KV   *kvstore.Client

	t        testing.TB
	mesh     *Mesh
	key      *ecdsa.PrivateKey
	issuer   *token.Issuer
	verifier *token.Verifier
	tls      *meshtls.Source
	addr     string
	srv      *apiserver.Server
	done     chan error
}

// StartCluster starts cluster name (ID id) with its mesh API server; it stops at the end of the test.
func (m *Mesh) StartCluster(t testing.TB, name string, id uint32) *Cluster {
	t.Helper()
	c := m.NewCluster(t, name, id)
	c.Start()
	return c
}

// NewCluster makes cluster name (ID id) without starting its mesh API server, so a test can write
// its state first; Start starts it.
func (m *Mesh) NewCluster(t testing.TB, name string, id uint32) *Cluster {
	t.Helper()
	c := &Cluster{Name: name, ID: id, t: t, mesh: m, addr: "127.0.0.1:0"}
	c.KV = etcdtest.NewClient(t, m.etcd, etcdtest.WithPrefix(fmt.Sprintf("%s-%d/", name, time.Now().UnixNano())))
	var err error
	if c.key, err = token.GenerateKey(); err != nil {
		t.Fatal(err)
	}
	if c.issuer, err = token.NewIssuer(name, c.key); err != nil {
		t.Fatal(err)
	}
	if c.verifier, err = token.NewVerifier(token.VerifierOptions{Cluster: name, Keys: []*ecdsa.PublicKey{&c.key.PublicKey}}); err != nil {
		t.Fatal(err)
	}
	paths := m.issue(t, m.CA, filepath.Join(m.Dir, name+"-server"), name, certs.RoleServer)
	if c.tls, err = meshtls.NewSource(meshtls.SourceOptions{CertFile: paths.Cert, KeyFile: paths.Key, CAFile: paths.CA, Logger: Quiet()}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

func (m *Mesh) issue(t testing.TB, ca *certs.CA, dir, cluster string, role certs.Role) certs.LeafPaths {
	t.Helper()
	is, err := ca.Issue(certs.IssueOptions{Cluster: cluster, Role: role})
	if err != nil {
		t.Fatal(err)
	}
	paths, err := is.Write(dir, ca.CertPEM(), true)
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

// Addr is the mesh API server's address (the same across restarts).
func (c *Cluster) Addr() string { return c.addr }

// Start starts the mesh API server (again, on the same address after Stop).
func (c *Cluster) Start() {
	c.t.Helper()
	if c.srv != nil {
		c.t.Fatalf("mesh API server of %s already running", c.Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var (
		srv *apiserver.Server
		err error
	)
	// The port of a stopped server is free again at once; retry briefly in case the kernel disagrees.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		srv, err = apiserver.New(ctx, c.KV, apiserver.Options{
			ClusterName:   c.Name,
			ClusterID:     c.ID,
			Version:       "test",
			ListenAddress: c.addr,
			TLS:           c.tls,
			Verifier:      c.verifier,
			Logger:        Quiet(),
			DisableGC:     true,
		})
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		c.t.Fatalf("start mesh API server of %s: %v", c.Name, err)
	}
	c.srv, c.addr, c.done = srv, srv.Addr().String(), make(chan error, 1)
	go func(done chan<- error) { done <- srv.Run(context.Background()) }(c.done)
}

// Stop stops the mesh API server; its streams end.
func (c *Cluster) Stop() {
	if c.srv == nil {
		return
	}
	if err := c.srv.Close(); err != nil {
		c.t.Errorf("stop mesh API server of %s: %v", c.Name, err)
	}
	if err := <-c.done; err != nil {
		c.t.Errorf("mesh API server of %s: %v", c.Name, err)
	}
	c.srv = nil
}

// Token issues a token of this cluster letting reader read it for ttl.
func (c *Cluster) Token(reader string, ttl time.Duration) string {
	c.t.Helper()
	tok, _, err := c.issuer.Issue(reader, ttl, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	return tok
}

// RemoteConfig gives the cluster reader what it needs to read this cluster: an agent certificate
// of reader, the CA bundle and a token of this cluster, written under dir/<name>-files/.
func (c *Cluster) RemoteConfig(reader, dir string) clustermesh.RemoteConfig {
	c.t.Helper()
	files := filepath.Join(dir, c.Name+"-files")
	paths := c.mesh.issue(c.t, c.mesh.CA, files, reader, certs.RoleAgent)
	tokenFile := filepath.Join(files, c.Name+".token")
	if err := os.WriteFile(tokenFile, []byte(c.Token(reader, time.Hour)+"\n"), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return clustermesh.RemoteConfig{Name: c.Name, Address: c.addr, CAFile: paths.CA, CertFile: paths.Cert, KeyFile: paths.Key, TokenFile: tokenFile}
}

// IdentityID is the cluster-scoped identity n of this cluster.
func (c *Cluster) IdentityID(n uint32) identity.ID {
	id, err := identity.DefaultLayout.ClusterScoped(c.ID, n)
	if err != nil {
		c.t.Fatal(err)
	}
	return id
}

// Labels returns the labels of an endpoint of this cluster: ss plus the cluster label.
func (c *Cluster) Labels(ss ...string) identity.Labels {
	c.t.Helper()
	lbls, err := identity.ParseLabels(append(ss, "k8s:"+identity.LabelCluster+"="+c.Name)...)
	if err != nil {
		c.t.Fatal(err)
	}
	return lbls
}

// PutIdentity writes identity n (cluster-scoped) with the labels ss plus the cluster label, as the
// identity allocator does, and returns its ID.
func (c *Cluster) PutIdentity(n uint32, ss ...string) identity.ID {
	c.t.Helper()
	id := c.IdentityID(n)
	c.put(fmt.Sprintf("%s%d", identity.MasterPrefix, id), map[string]string{"labels": c.Labels(ss...).String()})
	return id
}

// DeleteIdentity removes identity n.
func (c *Cluster) DeleteIdentity(n uint32) {
	c.del(fmt.Sprintf("%s%d", identity.MasterPrefix, c.IdentityID(n)))
}

// PutEndpoint writes the ipcache entry of an endpoint at prefix with identity id on node.
func (c *Cluster) PutEndpoint(prefix string, id identity.ID, node string) {
	c.t.Helper()
	c.put(ipcacheKey(prefix), map[string]any{"identity": uint32(id), "hostIP": "192.168.0.1", "node": node, "endpointID": 1})
}

// PutEndpoints writes many ipcache entries (prefix -> identity) on node, a hundred per etcd
// transaction.
func (c *Cluster) PutEndpoints(entries map[string]identity.ID, node string) {
	c.t.Helper()
	ops := make([]kvstore.Op, 0, 100)
	flush := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := c.KV.Txn(ctx, nil, ops, nil); err != nil {
			c.t.Fatal(err)
		}
		ops = ops[:0]
	}
	for prefix, id := range entries {
		raw, err := json.Marshal(map[string]any{"identity": uint32(id), "hostIP": "192.168.0.1", "node": node, "endpointID": 1})
		if err != nil {
			c.t.Fatal(err)
		}
		if ops = append(ops, kvstore.OpPut(ipcacheKey(prefix), raw, kvstore.NoLease)); len(ops) == cap(ops) {
			flush()
		}
	}
	if len(ops) > 0 {
		flush()
	}
}

// DeleteEndpoint removes the ipcache entry of prefix.
func (c *Cluster) DeleteEndpoint(prefix string) { c.del(ipcacheKey(prefix)) }

// PutNode registers a node with one address and one pod CIDR.
func (c *Cluster) PutNode(name, ip, podCIDR string) {
	c.t.Helper()
	c.put("nodes/"+name, map[string]any{"name": name, "cluster": c.Name, "ips": []string{ip}, "podCIDRs": []string{podCIDR}, "version": "test"})
}

// DeleteNode removes a node.
func (c *Cluster) DeleteNode(name string) { c.del("nodes/" + name) }

func ipcacheKey(prefix string) string {
	p := netip.MustParsePrefix(prefix)
	return fmt.Sprintf("ipcache/%s/%d", p.Addr(), p.Bits())
}

func (c *Cluster) put(key string, v any) {
	c.t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.KV.Put(ctx, key, raw, kvstore.NoLease); err != nil {
		c.t.Fatal(err)
	}
}

func (c *Cluster) del(key string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.KV.Delete(ctx, key); err != nil {
		c.t.Fatal(err)
	}
}
