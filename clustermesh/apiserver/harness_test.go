package apiserver

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/certs"
	"github.com/palisade-mesh/palisade/certs/meshtls"
	"github.com/palisade-mesh/palisade/certs/token"
	"github.com/palisade-mesh/palisade/clustermesh"
	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
)

const (
	testTrustDomain = "mesh.test"
	servedCluster   = "cluster1"
	servedID        = 1
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testPKI is a mesh CA with certificates written to files, and cluster1's token signing key with
// its verifier and revocation list: everything a real deployment has.
type testPKI struct {
	ca       *certs.CA
	dir      string
	key      *ecdsa.PrivateKey
	issuer   *token.Issuer
	revPath  string
	revs     *token.Revocations
	verifier *token.Verifier
}

func newPKI(t testing.TB) *testPKI {
	t.Helper()
	ca, err := certs.NewCA(certs.CAOptions{TrustDomain: testTrustDomain})
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{ca: ca, dir: t.TempDir()}
	if p.key, err = token.GenerateKey(); err != nil {
		t.Fatal(err)
	}
	if p.issuer, err = token.NewIssuer(servedCluster, p.key); err != nil {
		t.Fatal(err)
	}
	p.revPath = filepath.Join(p.dir, "revoked")
	if p.revs, err = token.OpenRevocations(p.revPath, token.RevocationsOptions{Logger: quiet()}); err != nil {
		t.Fatal(err)
	}
	p.verifier, err = token.NewVerifier(token.VerifierOptions{Cluster: servedCluster, Keys: []*ecdsa.PublicKey{&p.key.PublicKey}, Revocations: p.revs})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// source issues a certificate for cluster in role from ca and opens a Source on its files.
func (p *testPKI) source(t testing.TB, ca *certs.CA, cluster string, role certs.Role) *meshtls.Source {
	t.Helper()
	return p.sourceWith(t, ca, certs.IssueOptions{Cluster: cluster, Role: role})
}

// sourceWith is source for a certificate issued with opts (a validity, say).
func (p *testPKI) sourceWith(t testing.TB, ca *certs.CA, opts certs.IssueOptions) *meshtls.Source {
	t.Helper()
	is, err := ca.Issue(opts)
	if err != nil {
		t.Fatal(err)
	}
	paths, err := is.Write(filepath.Join(p.dir, fmt.Sprintf("%s-%p-%s", opts.Cluster, ca, is.Cert.SerialNumber)), ca.CertPEM(), true)
	if err != nil {
		t.Fatal(err)
	}
	src, err := meshtls.NewSource(meshtls.SourceOptions{CertFile: paths.Cert, KeyFile: paths.Key, CAFile: paths.CA, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func (p *testPKI) token(t testing.TB, reader string) string {
	t.Helper()
	tok, _, err := p.issuer.Issue(reader, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// startServer runs a mesh API server for cluster1 on kv until the test ends.
func startServer(t testing.TB, kv *kvstore.Client, p *testPKI, mutate func(*Options)) *Server {
	t.Helper()
	opts := Options{
		ClusterName:   servedCluster,
		ClusterID:     servedID,
		ListenAddress: "127.0.0.1:0",
		TLS:           p.source(t, p.ca, servedCluster, certs.RoleServer),
		Verifier:      p.verifier,
		Registerer:    prometheus.NewRegistry(),
		Logger:        quiet(),
		DisableGC:     true,
	}
	if mutate != nil {
		mutate(&opts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv, err := New(ctx, kv, opts)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(context.Background()) }()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	return srv
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	if b == "" {
		return nil, nil
	}
	return map[string]string{clustermesh.AuthorizationKey: "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return true }

// dial connects to srv as the holder of src with tok; the connection closes with the test.
func dial(t testing.TB, srv *Server, src *meshtls.Source, tok string) apiv1.MeshClient {
	t.Helper()
	cfg, err := meshtls.ClientConfig(src, meshtls.ClientOptions{ServerCluster: servedCluster})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)), grpc.WithPerRPCCredentials(bearer(tok)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return apiv1.NewMeshClient(conn)
}

// Writers of the cluster state, in the JSON shapes the agent and the identity allocator write.

func labels(t testing.TB, ss ...string) identity.Labels {
	t.Helper()
	lbls, err := identity.ParseLabels(append(ss, "k8s:"+identity.LabelCluster+"="+servedCluster)...)
	if err != nil {
		t.Fatal(err)
	}
	return lbls
}

func putJSON(t testing.TB, kv *kvstore.Client, key string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := kv.Put(ctx, key, b, kvstore.NoLease); err != nil {
		t.Fatal(err)
	}
}

func del(t testing.TB, kv *kvstore.Client, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := kv.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
}

func identityKey(id uint32) string { return fmt.Sprintf("%s%d", identity.MasterPrefix, id) }

func putIdentity(t testing.TB, kv *kvstore.Client, id uint32, lbls identity.Labels) {
	putJSON(t, kv, identityKey(id), map[string]string{"labels": lbls.String()})
}

func ipKey(prefix string) string {
	p := netip.MustParsePrefix(prefix)
	return fmt.Sprintf("%s%s/%d", ipcachePrefix, p.Addr(), p.Bits())
}

func putIPCache(t testing.TB, kv *kvstore.Client, prefix string, id uint32, node string) {
	putJSON(t, kv, ipKey(prefix), map[string]any{"identity": id, "hostIP": "192.168.0.1", "node": node, "endpointID": 7})
}

func putNode(t testing.TB, kv *kvstore.Client, name, ip, cidr string) {
	putJSON(t, kv, nodesPrefix+name, map[string]any{"name": name, "cluster": servedCluster, "ips": []string{ip}, "podCIDRs": []string{cidr}, "version": "test"})
}

// mirror is what a client builds from a Watch stream, keyed "identity/<id>", "ipcache/<prefix>",
// "node/<name>", with the value as a short string; it also counts what it received.
type mirror struct {
	state    map[string]string
	synced   bool
	received int
	// dupes counts upserts that repeated the value the client had, and deletes of keys it did
	// not have: a correct server sends neither.
	dupes []string
}

func newMirror() *mirror { return &mirror{state: map[string]string{}} }

func changeKey(c *apiv1.MeshChange) (key, value string) {
	switch o := c.Object.(type) {
	case *apiv1.MeshChange_Identity:
		return fmt.Sprintf("identity/%d", o.Identity.Id), strings.Join(o.Identity.Labels, ",")
	case *apiv1.MeshChange_Ipcache:
		return "ipcache/" + o.Ipcache.Prefix, fmt.Sprintf("%d@%s", o.Ipcache.Identity, o.Ipcache.Node)
	case *apiv1.MeshChange_Node:
		return "node/" + o.Node.Name, strings.Join(o.Node.Ips, ",") + "|" + strings.Join(o.Node.PodCidrs, ",")
	}
	return "?", ""
}

func (m *mirror) apply(resp *apiv1.MeshWatchResponse) {
	for _, c := range resp.Changes {
		m.received++
		k, v := changeKey(c)
		old, had := m.state[k]
		switch {
		case c.Deleted && !had:
			m.dupes = append(m.dupes, "delete of unknown "+k)
		case c.Deleted:
			delete(m.state, k)
		case had && old == v:
			m.dupes = append(m.dupes, "repeated "+k+"="+v)
		default:
			m.state[k] = v
		}
	}
	if resp.SyncDone {
		m.synced = true
	}
}

func (m *mirror) keys() []string {
	out := make([]string, 0, len(m.state))
	for k := range m.state {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// watch opens a Watch stream whose responses are applied to a mirror by recvUntil.
type watchStream struct {
	t      testing.TB
	stream grpc.ServerStreamingClient[apiv1.MeshWatchResponse]
	m      *mirror
}

func openWatch(t testing.TB, c apiv1.MeshClient, req *apiv1.MeshWatchRequest) *watchStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := c.Watch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return &watchStream{t: t, stream: s, m: newMirror()}
}

// recvUntil reads responses until cond holds on the mirror (checked after each response), or
// fails the test after timeout.
func (w *watchStream) recvUntil(what string, timeout time.Duration, cond func(*mirror) bool) {
	w.t.Helper()
	type result struct {
		resp *apiv1.MeshWatchResponse
		err  error
	}
	start := time.Now()
	for !cond(w.m) {
		if time.Since(start) > timeout {
			w.t.Fatalf("%s: not reached after %s; mirror holds %v", what, timeout, w.m.keys())
		}
		ch := make(chan result, 1)
		go func() {
			r, err := w.stream.Recv()
			ch <- result{r, err}
		}()
		select {
		case r := <-ch:
			if r.err != nil {
				w.t.Fatalf("%s: recv: %v (mirror holds %v)", what, r.err, w.m.keys())
			}
			w.m.apply(r.resp)
		case <-time.After(timeout - time.Since(start)):
			w.t.Fatalf("%s: not reached after %s; mirror holds %v", what, timeout, w.m.keys())
		}
	}
}

// recvErr reads until the stream ends and returns its error.
func (w *watchStream) recvErr(timeout time.Duration) error {
	w.t.Helper()
	done := make(chan error, 1)
	go func() {
		for {
			r, err := w.stream.Recv()
			if err != nil {
				done <- err
				return
			}
			w.m.apply(r)
		}
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		return errors.New("stream did not end")
	}
}

func has(keys ...string) func(*mirror) bool {
	return func(m *mirror) bool {
		for _, k := range keys {
			if _, ok := m.state[k]; !ok {
				return false
			}
		}
		return true
	}
}

func lacks(keys ...string) func(*mirror) bool {
	return func(m *mirror) bool {
		for _, k := range keys {
			if _, ok := m.state[k]; ok {
				return false
			}
		}
		return true
	}
}

func startEtcd(t testing.TB) *kvstore.Client {
	t.Helper()
	srv := etcdtest.Start(t)
	return etcdtest.NewClient(t, srv, etcdtest.WithPrefix(fmt.Sprintf("apiserver-%d/", time.Now().UnixNano())))
}

// counterValue reads a counter or gauge.
func counterValue(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}
