package apiserver

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/certs"
	"github.com/palisade-mesh/palisade/certs/meshtls"
	"github.com/palisade-mesh/palisade/certs/token"
)

// signed mints a token for reader with cluster1's key, but with the given times, scopes and
// signing method, which the Issuer would never produce.
func (p *testPKI) signed(t *testing.T, method jwt.SigningMethod, key any, reader string, issuedAt time.Time, ttl time.Duration, scopes ...string) string {
	t.Helper()
	if len(scopes) == 0 {
		scopes = []string{token.ScopeRead}
	}
	claims := &token.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    servedCluster,
			Subject:   reader,
			Audience:  jwt.ClaimStrings{token.Audience},
			IssuedAt:  jwt.NewNumericDate(issuedAt),
			NotBefore: jwt.NewNumericDate(issuedAt),
			ExpiresAt: jwt.NewNumericDate(issuedAt.Add(ttl)),
			ID:        base64.RawURLEncoding.EncodeToString([]byte(t.Name()))[:16],
		},
		Scopes: scopes,
	}
	tok := jwt.NewWithClaims(method, claims)
	tok.Header["kid"] = token.KeyID(&p.key.PublicKey)
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAuth_RefusesBadCertificatesAndTokens(t *testing.T) {
	kv := startEtcd(t)
	p := newPKI(t)
	srv := startServer(t, kv, p, nil)

	agent2 := p.source(t, p.ca, "cluster2", certs.RoleAgent)
	agent3 := p.source(t, p.ca, "cluster3", certs.RoleAgent)
	// A certificate from another mesh CA, with a bundle that trusts cluster1's server: only the
	// server's check can refuse it.
	otherCA, err := certs.NewCA(certs.CAOptions{TrustDomain: testTrustDomain})
	if err != nil {
		t.Fatal(err)
	}
	is, err := otherCA.Issue(certs.IssueOptions{Cluster: "cluster2", Role: certs.RoleAgent})
	if err != nil {
		t.Fatal(err)
	}
	paths, err := is.Write(t.TempDir(), p.ca.CertPEM(), false)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := meshtls.NewSource(meshtls.SourceOptions{CertFile: paths.Cert, KeyFile: paths.Key, CAFile: paths.CA, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}

	for2 := p.token(t, "cluster2")
	revoked, revokedClaims, err := p.issuer.Issue("cluster2", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := token.Revoke(p.revPath, revokedClaims.ID, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := p.revs.Reload(); err != nil {
		t.Fatal(err)
	}
	otherKey, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		src      *meshtls.Source
		token    string
		wantCode codes.Code
		wantMsg  string
		reason   string // auth failure metric label; empty when refused before gRPC
	}{
		{name: "cluster2 with its token", src: agent2, token: for2, wantCode: codes.OK},
		// The TLS handshake fails; the client sees the alert or a broken pipe, depending on timing.
		{name: "certificate from another CA", src: foreign, token: for2, wantCode: codes.Unavailable},
		{name: "missing token", src: agent2, wantCode: codes.Unauthenticated, wantMsg: "no mesh access token", reason: "no_token"},
		{name: "expired token", src: agent2, token: p.signed(t, jwt.SigningMethodES256, p.key, "cluster2", time.Now().Add(-3*time.Hour), time.Hour),
			wantCode: codes.Unauthenticated, wantMsg: "token is expired", reason: "invalid_token"},
		{name: "cluster3 presenting cluster2's token", src: agent3, token: for2, wantCode: codes.PermissionDenied,
			wantMsg: `issued to cluster "cluster2", but the caller's certificate names cluster "cluster3"`, reason: "subject_mismatch"},
		{name: "unsigned token (alg none)", src: agent2, token: p.signed(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "cluster2", time.Now(), time.Hour),
			wantCode: codes.Unauthenticated, wantMsg: "invalid mesh access token", reason: "invalid_token"},
		{name: "token signed by another key", src: agent2, token: p.signed(t, jwt.SigningMethodES256, otherKey, "cluster2", time.Now(), time.Hour),
			wantCode: codes.Unauthenticated, wantMsg: "invalid mesh access token", reason: "invalid_token"},
		{name: "revoked token", src: agent2, token: revoked, wantCode: codes.Unauthenticated, wantMsg: "revoked", reason: "revoked"},
		{name: "token without the read scope", src: agent2, token: p.signed(t, jwt.SigningMethodES256, p.key, "cluster2", time.Now(), time.Hour, "mesh:other"),
			wantCode: codes.PermissionDenied, wantMsg: `the call needs "mesh:read"`, reason: "missing_scope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := dial(t, srv, tt.src, tt.token)
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			var before float64
			if tt.reason != "" {
				before = counterValue(srv.metrics.authFailures.WithLabelValues(tt.reason))
			}
			calls := map[string]func() error{
				"Info": func() error { _, err := client.Info(ctx, &apiv1.MeshInfoRequest{}); return err },
				"Watch": func() error {
					s, err := client.Watch(ctx, &apiv1.MeshWatchRequest{})
					if err == nil {
						_, err = s.Recv()
					}
					return err
				},
				"ResolveSelector": func() error {
					_, err := client.ResolveSelector(ctx, &apiv1.ResolveSelectorRequest{Selector: empireSelector()})
					return err
				},
			}
			for name, call := range calls {
				err := call()
				if got := status.Code(err); got != tt.wantCode || !strings.Contains(status.Convert(err).Message(), tt.wantMsg) {
					t.Errorf("%s: %v, want code %v saying %q", name, err, tt.wantCode, tt.wantMsg)
				}
			}
			if tt.reason != "" {
				if got := counterValue(srv.metrics.authFailures.WithLabelValues(tt.reason)) - before; got != float64(len(calls)) {
					t.Errorf("auth failures %q grew by %v, want %d", tt.reason, got, len(calls))
				}
			}
		})
	}
}
