package token

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzVerifier_Check feeds arbitrary tokens to the verifier: it must never panic, and whatever it
// accepts must carry a valid ES256 signature by the cluster's key over exactly its header and
// payload, checked here independently of golang-jwt.
func FuzzVerifier_Check(f *testing.F) {
	fx := newFixture(f)
	good, _, err := fx.issuer.Issue("cluster2", time.Hour, nil)
	if err != nil {
		f.Fatal(err)
	}
	kid := KeyID(&fx.key.PublicKey)
	f.Add(good)
	f.Add("Bearer " + good)
	f.Add(sign(f, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, kid, claimsFor(testNow)))
	f.Add(sign(f, jwt.SigningMethodHS256, []byte("secret"), kid, claimsFor(testNow)))
	f.Add(tamper(f, good, func(c map[string]any) { c["sub"] = "cluster3" }))
	f.Add(good[:len(good)-2])
	f.Add("..")
	f.Add("eyJhbGciOiJFUzI1NiJ9.e30.")
	f.Add("")

	f.Fuzz(func(t *testing.T, tok string) {
		claims, err := fx.verifier.Check(tok, "cluster2", ScopeRead)
		if err != nil {
			return
		}
		if claims == nil {
			t.Fatal("accepted without claims")
		}
		if !signedBy(&fx.key.PublicKey, tok) {
			t.Fatalf("accepted a token not signed by the cluster key: %q", tok)
		}
	})
}

func signedBy(pub *ecdsa.PublicKey, tok string) bool {
	tok = strings.TrimSpace(tok)
	if s, rest, ok := strings.Cut(tok, " "); ok && strings.EqualFold(s, "Bearer") {
		tok = strings.TrimSpace(rest)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return false
	}
	hdr, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return false
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(hdr, &h) != nil || h.Alg != "ES256" {
		return false
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return false
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	return ecdsa.Verify(pub, digest[:], r, s)
}
