package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/palisade-mesh/palisade/certs"
)

func TestLoadVerificationKey_FromSigningKeyOrPublicKey(t *testing.T) {
	dir := t.TempDir()
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	priv := filepath.Join(dir, "signing.key")
	if err := WriteKey(priv, key, false); err != nil {
		t.Fatal(err)
	}
	if err := WriteKey(priv, key, false); err != nil {
		t.Fatalf("rewriting the same key: %v", err)
	}
	other, _ := GenerateKey()
	if err := WriteKey(priv, other, false); !errors.Is(err, certs.ErrExists) {
		t.Fatalf("overwriting without force: %v, want ErrExists", err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(dir, "signing.pub")
	if err := os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{priv, pub} {
		got, err := LoadVerificationKey(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if !got.Equal(&key.PublicKey) {
			t.Fatalf("%s: wrong key", p)
		}
	}

	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der384, _ := x509.MarshalPKIXPublicKey(&p384.PublicKey)
	bad := filepath.Join(dir, "p384.pub")
	if err := os.WriteFile(bad, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der384}), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadVerificationKey(bad); err == nil || !strings.Contains(err.Error(), "P-256") {
		t.Fatalf("P-384 key: %v, want a refusal naming P-256", err)
	}
	if _, err := LoadKey(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("LoadKey of a missing file succeeded")
	}
}
