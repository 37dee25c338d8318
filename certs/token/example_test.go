package token_test

import (
	"crypto/ecdsa"
	"errors"
	"fmt"
	"time"

	"github.com/palisade-mesh/palisade/certs/token"
)

// The mesh API server of cluster1 issues a token for cluster2 and checks it on a call whose client
// certificate names cluster2, then on one from cluster3 presenting the same token.
func ExampleVerifier_Check() {
	key, err := token.GenerateKey()
	if err != nil {
		panic(err)
	}
	issuer, err := token.NewIssuer("cluster1", key)
	if err != nil {
		panic(err)
	}
	tok, _, err := issuer.Issue("cluster2", time.Hour, []string{token.ScopeRead})
	if err != nil {
		panic(err)
	}
	v, err := token.NewVerifier(token.VerifierOptions{Cluster: "cluster1", Keys: []*ecdsa.PublicKey{&key.PublicKey}})
	if err != nil {
		panic(err)
	}

	claims, err := v.Check("Bearer "+tok, "cluster2", token.ScopeRead)
	fmt.Println(claims.Subject, claims.Scopes, err)

	_, err = v.Check("Bearer "+tok, "cluster3", token.ScopeRead)
	fmt.Println(errors.Is(err, token.ErrSubjectMismatch))
	// Output:
	// cluster2 [mesh:read] <nil>
	// true
}
