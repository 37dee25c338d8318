package token

import (
	"crypto/ecdsa"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/palisade-mesh/palisade/certs"
)

// Reasons Check refuses a call; match them with errors.Is. ErrInvalidToken also wraps the
// golang-jwt error naming the failed check (jwt.ErrTokenExpired, jwt.ErrTokenInvalidIssuer, ...).
// A mesh API server answers ErrMissingScope with PermissionDenied and the others with
// Unauthenticated.
var (
	ErrNoToken         = errors.New("no mesh access token")
	ErrInvalidToken    = errors.New("invalid mesh access token")
	ErrSubjectMismatch = errors.New("mesh access token belongs to another cluster")
	ErrMissingScope    = errors.New("mesh access token lacks the required scope")
	ErrRevoked         = errors.New("mesh access token revoked")
)

// DefaultLeeway is the default VerifierOptions.Leeway.
const DefaultLeeway = 30 * time.Second

// VerifierOptions configure NewVerifier.
type VerifierOptions struct {
	// Cluster is this cluster, the only issuer whose tokens are accepted; required.
	Cluster string
	// Keys are the public halves of this cluster's signing keys: the current one and, during a
	// rotation, the previous one until the tokens it signed have expired; at least one.
	Keys []*ecdsa.PublicKey
	// Revocations is the revocation list; nil means no token is revoked.
	Revocations *Revocations
	// Leeway tolerates clock skew between clusters when checking exp, nbf and iat. Default
	// DefaultLeeway; keep it small, it extends every token's life.
	Leeway time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Verifier checks the token on every call to the mesh API. It is safe for concurrent use.
type Verifier struct {
	cluster     string
	keys        map[string]*ecdsa.PublicKey
	revocations *Revocations
	parser      *jwt.Parser
}

// NewVerifier returns a Verifier for tokens issued by opts.Cluster.
func NewVerifier(opts VerifierOptions) (*Verifier, error) {
	if err := certs.ValidateClusterName(opts.Cluster); err != nil {
		return nil, fmt.Errorf("token verifier: %w", err)
	}
	if len(opts.Keys) == 0 {
		return nil, errors.New("token verifier: no signing key")
	}
	if opts.Leeway == 0 {
		opts.Leeway = DefaultLeeway
	}
	if opts.Leeway < 0 {
		return nil, fmt.Errorf("token verifier: leeway %s is negative", opts.Leeway)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	keys := make(map[string]*ecdsa.PublicKey, len(opts.Keys))
	for _, k := range opts.Keys {
		kid := KeyID(k)
		if kid == "" {
			return nil, errors.New("token verifier: a key is not a valid ECDSA P-256 public key")
		}
		keys[kid] = k
	}
	return &Verifier{
		cluster:     opts.Cluster,
		keys:        keys,
		revocations: opts.Revocations,
		parser: jwt.NewParser(
			// ES256 only: "none", HMAC (the algorithm-confusion attack with the public key as a
			// shared secret) and every other algorithm are refused before any key is looked up.
			jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg()}),
			jwt.WithIssuer(opts.Cluster),
			jwt.WithAudience(Audience),
			jwt.WithLeeway(opts.Leeway),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithTimeFunc(opts.Now),
			// Canonical base64 only, so one signature has one encoding.
			jwt.WithStrictDecoding(),
		),
	}, nil
}

// Check verifies the token a call carries (bearer: the token, with or without a "Bearer "
// prefix, as in the authorization metadata of a gRPC call) for a caller whose client certificate
// names peerCluster, and requires requiredScope. On success it returns the token's claims.
//
// It checks, in order: the ES256 signature with one of this cluster's keys (by kid), issuer =
// this cluster, audience = the mesh API, expiry (required) and not-before and issued-at with the
// leeway, a token ID and subject present, subject = peerCluster, the scope, and the revocation
// list.
func (v *Verifier) Check(bearer, peerCluster, requiredScope string) (*Claims, error) {
	raw := strings.TrimSpace(bearer)
	if scheme, rest, ok := strings.Cut(raw, " "); ok && strings.EqualFold(scheme, "Bearer") {
		raw = strings.TrimSpace(rest)
	}
	if raw == "" {
		return nil, ErrNoToken
	}
	if peerCluster == "" {
		return nil, fmt.Errorf("%w: the caller's certificate names no cluster", ErrSubjectMismatch)
	}
	claims := &Claims{}
	if _, err := v.parser.ParseWithClaims(raw, claims, v.key); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if claims.ID == "" {
		return nil, fmt.Errorf("%w: token has no ID (jti)", ErrInvalidToken)
	}
	if claims.Subject != peerCluster {
		return nil, fmt.Errorf("%w: token %s was issued to cluster %q, but the caller's certificate names cluster %q",
			ErrSubjectMismatch, claims.ID, claims.Subject, peerCluster)
	}
	if requiredScope != "" && !claims.HasScope(requiredScope) {
		return nil, fmt.Errorf("%w: token %s grants %v, the call needs %q", ErrMissingScope, claims.ID, claims.Scopes, requiredScope)
	}
	if v.revocations != nil && v.revocations.Revoked(claims.ID) {
		return nil, fmt.Errorf("%w: token %s (issued to %s)", ErrRevoked, claims.ID, claims.Subject)
	}
	return claims, nil
}

// key picks the verification key by the token's kid. The parser has already refused any
// algorithm but ES256; the type check repeats that where it matters, next to the key.
func (v *Verifier) key(t *jwt.Token) (any, error) {
	if _, ok := t.Method.(*jwt.SigningMethodECDSA); !ok {
		return nil, fmt.Errorf("signing method %v is not ECDSA", t.Header["alg"])
	}
	kid, _ := t.Header["kid"].(string)
	k, ok := v.keys[kid]
	if !ok {
		return nil, fmt.Errorf("token signed with key %q, which is not a signing key of cluster %s", kid, v.cluster)
	}
	return k, nil
}
