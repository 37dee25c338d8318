package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"os"

	"github.com/palisade-mesh/palisade/certs"
)

// GenerateKey makes a new cluster signing key (ECDSA P-256).
func GenerateKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	return key, nil
}

// WriteKey stores key as PKCS#8 PEM with mode 0600; without force it refuses to replace a
// different existing file.
func WriteKey(path string, key *ecdsa.PrivateKey, force bool) error {
	data, err := certs.EncodeKeyPEM(key)
	if err != nil {
		return fmt.Errorf("write signing key %s: %w", path, err)
	}
	if err := certs.WriteFiles([]certs.File{{Path: path, Data: data, Mode: 0o600}}, force); err != nil {
		return fmt.Errorf("write signing key: %w", err)
	}
	return nil
}

// LoadKey reads a signing key written by WriteKey.
func LoadKey(path string) (*ecdsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load signing key: %w", err)
	}
	key, err := certs.ParseKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("load signing key %s: %w", path, err)
	}
	return key, nil
}

// KeyID names a public key in the token header ("kid"), so a verifier that knows the previous
// key during a rotation picks the right one: the first 16 bytes of the SHA-256 of its DER form,
// base64url.
func KeyID(pub *ecdsa.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		// Only non-P-256 or broken keys fail to marshal, and those never get this far.
		return ""
	}
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}
