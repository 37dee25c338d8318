package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var testNow = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

type fixture struct {
	key      *ecdsa.PrivateKey
	issuer   *Issuer
	verifier *Verifier
	revPath  string
	revs     *Revocations
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	iss, err := NewIssuer("cluster1", key)
	if err != nil {
		t.Fatal(err)
	}
	iss.now = func() time.Time { return testNow }
	revPath := filepath.Join(t.TempDir(), "revoked")
	revs, err := OpenRevocations(revPath, RevocationsOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(VerifierOptions{Cluster: "cluster1", Keys: []*ecdsa.PublicKey{&key.PublicKey}, Revocations: revs, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{key: key, issuer: iss, verifier: v, revPath: revPath, revs: revs}
}

// claimsFor is what Issue would put in a token for cluster2, for tests to bend.
func claimsFor(now time.Time) *Claims {
	return &Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    "cluster1",
			Subject:   "cluster2",
			Audience:  jwt.ClaimStrings{Audience},
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        "test-token-id",
		},
		Scopes: []string{ScopeRead},
	}
}

func sign(t testing.TB, method jwt.SigningMethod, key any, kid string, c *Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVerifier_Check(t *testing.T) {
	f := newFixture(t)
	other, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	kid := KeyID(&f.key.PublicKey)
	pubDER, err := x509.MarshalPKIXPublicKey(&f.key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	good, goodClaims, err := f.issuer.Issue("cluster2", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	with := func(mut func(c *Claims)) string {
		c := claimsFor(testNow)
		mut(c)
		return sign(t, jwt.SigningMethodES256, f.key, kid, c)
	}
	revoked, revokedClaims, err := f.issuer.Issue("cluster2", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Revoke(f.revPath, revokedClaims.ID, "test", testNow); err != nil {
		t.Fatal(err)
	}
	if err := f.revs.Reload(); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		token   string
		peer    string
		scope   string
		wantErr []error
	}{
		{name: "valid", token: good},
		{name: "valid with Bearer prefix", token: "Bearer " + good},
		{name: "no token", token: "", wantErr: []error{ErrNoToken}},
		{name: "garbage", token: "not.a.token", wantErr: []error{ErrInvalidToken, jwt.ErrTokenMalformed}},
		{name: "alg none", token: sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, kid, claimsFor(testNow)), wantErr: []error{ErrInvalidToken, jwt.ErrTokenSignatureInvalid}},
		{name: "HS256 keyed with the public key PEM", token: sign(t, jwt.SigningMethodHS256, pubPEM, kid, claimsFor(testNow)), wantErr: []error{ErrInvalidToken, jwt.ErrTokenSignatureInvalid}},
		{name: "HS256 keyed with the public key DER", token: sign(t, jwt.SigningMethodHS256, pubDER, kid, claimsFor(testNow)), wantErr: []error{ErrInvalidToken, jwt.ErrTokenSignatureInvalid}},
		{name: "ES384", token: sign(t, jwt.SigningMethodES384, p384, kid, claimsFor(testNow)), wantErr: []error{ErrInvalidToken, jwt.ErrTokenSignatureInvalid}},
		{name: "another key claiming our kid", token: sign(t, jwt.SigningMethodES256, other, kid, claimsFor(testNow)), wantErr: []error{ErrInvalidToken, jwt.ErrTokenSignatureInvalid}},
		{name: "another cluster's key", token: sign(t, jwt.SigningMethodES256, other, KeyID(&other.PublicKey), claimsFor(testNow)), wantErr: []error{ErrInvalidToken, jwt.ErrTokenUnverifiable}},
		{name: "no kid", token: sign(t, jwt.SigningMethodES256, f.key, "", claimsFor(testNow)), wantErr: []error{ErrInvalidToken, jwt.ErrTokenUnverifiable}},
		{name: "wrong issuer", token: with(func(c *Claims) { c.Issuer = "cluster3" }), wantErr: []error{ErrInvalidToken, jwt.ErrTokenInvalidIssuer}},
		{name: "wrong audience", token: with(func(c *Claims) { c.Audience = jwt.ClaimStrings{"kube-apiserver"} }), wantErr: []error{ErrInvalidToken, jwt.ErrTokenInvalidAudience}},
		{name: "no audience", token: with(func(c *Claims) { c.Audience = nil }), wantErr: []error{ErrInvalidToken, jwt.ErrTokenRequiredClaimMissing}},
		{name: "expired beyond leeway", token: with(func(c *Claims) { c.ExpiresAt = jwt.NewNumericDate(testNow.Add(-DefaultLeeway - time.Second)) }), wantErr: []error{ErrInvalidToken, jwt.ErrTokenExpired}},
		{name: "expired within leeway", token: with(func(c *Claims) { c.ExpiresAt = jwt.NewNumericDate(testNow.Add(-DefaultLeeway + time.Second)) })},
		{name: "no expiry", token: with(func(c *Claims) { c.ExpiresAt = nil }), wantErr: []error{ErrInvalidToken, jwt.ErrTokenRequiredClaimMissing}},
		{name: "not yet valid", token: with(func(c *Claims) { c.NotBefore = jwt.NewNumericDate(testNow.Add(time.Hour)) }), wantErr: []error{ErrInvalidToken, jwt.ErrTokenNotValidYet}},
		{name: "issued in the future", token: with(func(c *Claims) { c.IssuedAt = jwt.NewNumericDate(testNow.Add(time.Hour)) }), wantErr: []error{ErrInvalidToken, jwt.ErrTokenUsedBeforeIssued}},
		{name: "no token ID", token: with(func(c *Claims) { c.ID = "" }), wantErr: []error{ErrInvalidToken}},
		{name: "subject is not the certificate's cluster", token: good, peer: "cluster3", wantErr: []error{ErrSubjectMismatch}},
		{name: "no certificate cluster", token: good, peer: "-", wantErr: []error{ErrSubjectMismatch}},
		{name: "missing scope", token: with(func(c *Claims) { c.Scopes = []string{"mesh:other"} }), wantErr: []error{ErrMissingScope}},
		{name: "other scope required", token: good, scope: "mesh:write", wantErr: []error{ErrMissingScope}},
		{name: "revoked", token: revoked, wantErr: []error{ErrRevoked}},
		{name: "tampered payload", token: tamper(t, good, func(c map[string]any) { c["sub"] = "cluster3" }), peer: "cluster3", wantErr: []error{ErrInvalidToken, jwt.ErrTokenSignatureInvalid}},
		{name: "tampered scopes", token: tamper(t, good, func(c map[string]any) { c["scopes"] = []string{"mesh:write"} }), scope: "mesh:write", wantErr: []error{ErrInvalidToken, jwt.ErrTokenSignatureInvalid}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			peer, scope := tt.peer, tt.scope
			switch peer {
			case "":
				peer = "cluster2"
			case "-":
				peer = ""
			}
			if scope == "" {
				scope = ScopeRead
			}
			claims, err := f.verifier.Check(tt.token, peer, scope)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				if claims.Subject != "cluster2" || claims.Issuer != "cluster1" {
					t.Fatalf("claims %+v", claims)
				}
				return
			}
			for _, want := range tt.wantErr {
				if !errors.Is(err, want) {
					t.Fatalf("Check: %v, want %v", err, want)
				}
			}
		})
	}
	if goodClaims.ExpiresAt.Sub(goodClaims.IssuedAt.Time) != time.Hour || len(goodClaims.ID) < 16 {
		t.Fatalf("issued claims %+v", goodClaims)
	}
}

func TestVerifier_AcceptsPreviousKeyDuringRotation(t *testing.T) {
	oldKey, _ := GenerateKey()
	newKey, _ := GenerateKey()
	v, err := NewVerifier(VerifierOptions{Cluster: "cluster1", Keys: []*ecdsa.PublicKey{&newKey.PublicKey, &oldKey.PublicKey}})
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]*ecdsa.PrivateKey{"old": oldKey, "new": newKey} {
		iss, err := NewIssuer("cluster1", key)
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := iss.Issue("cluster2", time.Minute, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Check(tok, "cluster2", ScopeRead); err != nil {
			t.Errorf("token signed with the %s key: %v", name, err)
		}
	}
}

func TestIssuer_IssueRejectsBadRequests(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name   string
		reader string
		ttl    time.Duration
		scopes []string
		want   string
	}{
		{name: "bad reader", reader: "Cluster2", ttl: time.Hour, want: "invalid"},
		{name: "zero ttl", reader: "cluster2", ttl: 0, want: "must be positive"},
		{name: "bad scope", reader: "cluster2", ttl: time.Hour, scopes: []string{"all"}, want: `scope "all" is invalid`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := f.issuer.Issue(tt.reader, tt.ttl, tt.scopes); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Issue: %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

// tamper rewrites a token's payload and keeps its header and signature.
func tamper(t testing.TB, tok string, mut func(map[string]any)) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	mut(c)
	payload, err = json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString(payload)
	return strings.Join(parts, ".")
}
