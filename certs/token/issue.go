package token

import (
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/palisade-mesh/palisade/certs"
)

// Issuer mints tokens for readers of this cluster's mesh API.
type Issuer struct {
	cluster string
	key     *ecdsa.PrivateKey
	kid     string
	now     func() time.Time
}

// NewIssuer returns an Issuer for cluster (this cluster, the token issuer) signing with key.
func NewIssuer(cluster string, key *ecdsa.PrivateKey) (*Issuer, error) {
	if err := certs.ValidateClusterName(cluster); err != nil {
		return nil, fmt.Errorf("token issuer: %w", err)
	}
	if key == nil {
		return nil, errors.New("token issuer: no signing key")
	}
	return &Issuer{cluster: cluster, key: key, kid: KeyID(&key.PublicKey), now: time.Now}, nil
}

// Issue mints a token letting the cluster named reader use scopes for ttl. No scopes means
// ScopeRead. It returns the signed token and its claims (the ID is what `token revoke` takes).
func (i *Issuer) Issue(reader string, ttl time.Duration, scopes []string) (string, *Claims, error) {
	if err := certs.ValidateClusterName(reader); err != nil {
		return "", nil, fmt.Errorf("issue token: reader: %w", err)
	}
	if ttl <= 0 {
		return "", nil, fmt.Errorf("issue token for %s: ttl %s must be positive", reader, ttl)
	}
	if len(scopes) == 0 {
		scopes = []string{ScopeRead}
	}
	for _, s := range scopes {
		if err := ValidateScope(s); err != nil {
			return "", nil, fmt.Errorf("issue token for %s: %w", reader, err)
		}
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", nil, fmt.Errorf("issue token for %s: token ID: %w", reader, err)
	}
	now := i.now().Truncate(time.Second)
	claims := &Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    i.cluster,
			Subject:   reader,
			Audience:  jwt.ClaimStrings{Audience},
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        base64.RawURLEncoding.EncodeToString(raw[:]),
		},
		Scopes: append([]string(nil), scopes...),
	}
	t := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	t.Header["kid"] = i.kid
	signed, err := t.SignedString(i.key)
	if err != nil {
		return "", nil, fmt.Errorf("issue token for %s: sign: %w", reader, err)
	}
	return signed, claims, nil
}
