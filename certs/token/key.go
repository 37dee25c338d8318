package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
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

// LoadVerificationKey reads the public key a Verifier checks signatures with, from a signing key
// file (its public half) or a PEM "PUBLIC KEY" file, so a server can keep the previous key of a
// rotation without its private half.
func LoadVerificationKey(path string) (*ecdsa.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load verification key: %w", err)
	}
	if block, _ := pem.Decode(data); block != nil && block.Type == "PUBLIC KEY" {
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("load verification key %s: %w", path, err)
		}
		ec, ok := pub.(*ecdsa.PublicKey)
		if !ok || ec.Curve != elliptic.P256() {
			return nil, fmt.Errorf("load verification key %s: key is %T, want ECDSA P-256", path, pub)
		}
		return ec, nil
	}
	key, err := certs.ParseKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("load verification key %s: %w", path, err)
	}
	return &key.PublicKey, nil
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
