package apiserver

import (
	"crypto/ecdsa"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/certs"
	"github.com/palisade-mesh/palisade/certs/token"
)

// cutWithin is how soon an open stream must end after its token or certificate stops being good:
// the revocation list is re-read within a second and streams recheck their token twice a second.
const cutWithin = 3 * time.Second

// wantCut reads w until it ends and fails the test unless it ended within cutWithin with
// Unauthenticated saying msg. It returns how long that took.
func wantCut(t *testing.T, w *watchStream, msg string) time.Duration {
	t.Helper()
	start := time.Now()
	err := w.recvErr(cutWithin)
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), msg) {
		t.Fatalf("stream ended with %v, want Unauthenticated saying %q within %s", err, msg, cutWithin)
	}
	return time.Since(start)
}

func TestWatch_EndsWhenTokenIsRevokedWhileOtherTokensStay(t *testing.T) {
	t.Parallel()
	kv := startEtcd(t)
	seed(t, kv)
	p := newPKI(t)
	srv := startServer(t, kv, p, nil)
	src := p.source(t, p.ca, "cluster2", certs.RoleAgent)
	revokedTok, revokedClaims, err := p.issuer.Issue("cluster2", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}

	doomed := openWatch(t, dial(t, srv, src, revokedTok), &apiv1.MeshWatchRequest{})
	kept := openWatch(t, dial(t, srv, src, p.token(t, "cluster2")), &apiv1.MeshWatchRequest{})
	for _, w := range []*watchStream{doomed, kept} {
		w.recvUntil("initial sync", waitFor, func(m *mirror) bool { return m.synced })
	}
	before := counterValue(srv.metrics.authFailures.WithLabelValues("revoked"))

	if _, err := token.Revoke(p.revPath, revokedClaims.ID, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	took := wantCut(t, doomed, "mesh access token revoked: token "+revokedClaims.ID)
	t.Logf("stream cut %s after its token was revoked", took)
	if got := counterValue(srv.metrics.authFailures.WithLabelValues("revoked")) - before; got != 1 {
		t.Errorf("auth failures \"revoked\" grew by %v, want 1", got)
	}

	putIdentity(t, kv, 1003, labels(t, "k8s:org=empire"))
	kept.recvUntil("change after the revoked stream was cut", waitFor, has("identity/1003"))
}

// testClock is a clock a test moves forward.
type testClock struct{ ahead atomic.Int64 }

func (c *testClock) now() time.Time          { return time.Now().Add(time.Duration(c.ahead.Load())) }
func (c *testClock) advance(d time.Duration) { c.ahead.Add(int64(d)) }

func TestWatch_EndsWhenTokenExpiresPastTheLeeway(t *testing.T) {
	t.Parallel()
	kv := startEtcd(t)
	seed(t, kv)
	p := newPKI(t)
	const ttl, leeway = time.Minute, 5 * time.Second
	var clock testClock
	verifier, err := token.NewVerifier(token.VerifierOptions{Cluster: servedCluster, Keys: []*ecdsa.PublicKey{&p.key.PublicKey},
		Revocations: p.revs, Leeway: leeway, Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, kv, p, func(o *Options) { o.Verifier = verifier })
	tok, claims, err := p.issuer.Issue("cluster2", ttl, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := openWatch(t, dial(t, srv, p.source(t, p.ca, "cluster2", certs.RoleAgent), tok), &apiv1.MeshWatchRequest{})
	w.recvUntil("initial sync", waitFor, func(m *mirror) bool { return m.synced })

	// Expired, but within the leeway: the stream stays through a few rechecks.
	clock.advance(ttl + 2*time.Second)
	time.Sleep(3 * tokenRecheck)
	putIdentity(t, kv, 1003, labels(t, "k8s:org=empire"))
	w.recvUntil("change while the token is within the leeway", waitFor, has("identity/1003"))

	clock.advance(2 * leeway)
	took := wantCut(t, w, "mesh access token expired: token "+claims.ID)
	t.Logf("stream cut %s after its token expired", took)
}

func TestWatch_EndsWhenClientCertificateExpires(t *testing.T) {
	t.Parallel()
	kv := startEtcd(t)
	seed(t, kv)
	p := newPKI(t)
	srv := startServer(t, kv, p, nil)
	// Valid for a few more seconds: long enough to connect, not to outlive the test. Certificate
	// times have a resolution of one second.
	const left = 4 * time.Second
	notBefore := time.Now().Add(-time.Minute)
	src := p.sourceWith(t, p.ca, certs.IssueOptions{Cluster: "cluster2", Role: certs.RoleAgent, NotBefore: notBefore, Validity: time.Minute + left})
	w := openWatch(t, dial(t, srv, src, p.token(t, "cluster2")), &apiv1.MeshWatchRequest{})
	w.recvUntil("initial sync", waitFor, func(m *mirror) bool { return m.synced })

	start := time.Now()
	err := w.recvErr(left + cutWithin)
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), "mesh client certificate expired") {
		t.Fatalf("stream ended with %v, want Unauthenticated saying the client certificate expired", err)
	}
	if expiry := notBefore.Add(time.Minute + left).Truncate(time.Second); time.Now().Before(expiry) {
		t.Fatalf("stream cut at %s, before the certificate expired at %s", time.Now(), expiry)
	}
	t.Logf("stream cut %s after it synced", time.Since(start))
	if got := counterValue(srv.metrics.authFailures.WithLabelValues("certificate_expired")); got != 1 {
		t.Errorf("auth failures \"certificate_expired\" = %v, want 1", got)
	}
}
