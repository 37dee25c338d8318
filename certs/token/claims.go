package token

import (
	"fmt"
	"regexp"
	"slices"

	"github.com/golang-jwt/jwt/v5"
)

// Audience is the audience of every mesh token: the mesh API.
const Audience = "palisade-mesh-api"

// ScopeRead lets a remote cluster watch identities, ipcache entries and nodes, and resolve
// selectors. There is no write scope: a remote cluster can read, never write.
const ScopeRead = "mesh:read"

// Claims are a mesh token's payload: the registered claims (iss = serving cluster, sub = reading
// cluster, aud = Audience, exp, nbf, iat, jti) and the scopes granted.
type Claims struct {
	jwt.RegisteredClaims
	Scopes []string `json:"scopes,omitempty"`
}

// HasScope reports whether the token grants scope.
func (c *Claims) HasScope(scope string) bool { return slices.Contains(c.Scopes, scope) }

var scopeRE = regexp.MustCompile(`^[a-z]+:[a-z-]+$`)

// ValidateScope checks the form of a scope name: "area:verb" in lower case.
func ValidateScope(s string) error {
	if !scopeRE.MatchString(s) {
		return fmt.Errorf("scope %q is invalid: want area:verb in lower case, like %s", s, ScopeRead)
	}
	return nil
}
