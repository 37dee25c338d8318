package token

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// BenchmarkVerifier_Check measures the full per-call check against its floor: the bare ECDSA P-256
// signature verification every ES256 token needs (the baseline), and golang-jwt parsing without
// Palisade's own checks. The ratio Check/ecdsa-verify is the overhead of everything else.
func BenchmarkVerifier_Check(b *testing.B) {
	fx := newFixture(b)
	tok, _, err := fx.issuer.Issue("cluster2", time.Hour, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("check", func(b *testing.B) {
		for b.Loop() {
			if _, err := fx.verifier.Check(tok, "cluster2", ScopeRead); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("jwt-parse-only", func(b *testing.B) {
		p := jwt.NewParser(jwt.WithValidMethods([]string{"ES256"}), jwt.WithTimeFunc(func() time.Time { return testNow }))
		for b.Loop() {
			if _, err := p.ParseWithClaims(tok, &Claims{}, func(*jwt.Token) (any, error) { return &fx.key.PublicKey, nil }); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ecdsa-verify-baseline", func(b *testing.B) {
		parts := strings.Split(tok, ".")
		sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
		digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		for b.Loop() {
			if !ecdsa.Verify(&fx.key.PublicKey, digest[:], r, s) {
				b.Fatal("signature does not verify")
			}
		}
	})
}
