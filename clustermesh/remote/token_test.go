package remote

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/certs/token"
	"github.com/palisade-mesh/palisade/clustermesh"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func issueToken(t *testing.T, issuer, reader string, ttl time.Duration) (string, *token.Claims) {
	t.Helper()
	key, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	iss, err := token.NewIssuer(issuer, key)
	if err != nil {
		t.Fatal(err)
	}
	signed, claims, err := iss.Issue(reader, ttl, nil)
	if err != nil {
		t.Fatal(err)
	}
	return signed, claims
}

func TestTokenFile_ReloadsChangesAndKeepsTheLastGoodToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cluster2.token")
	first, claims := issueToken(t, "cluster2", "cluster1", time.Hour)
	if err := os.WriteFile(path, []byte(first+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tf, err := openTokenFile(path, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	md, err := tf.GetRequestMetadata(context.Background())
	if err != nil || md[clustermesh.AuthorizationKey] != "Bearer "+first {
		t.Fatalf("metadata %v, %v", md, err)
	}
	if _, exp, _ := tf.current(); !exp.Equal(claims.ExpiresAt.UTC()) {
		t.Fatalf("expiry %s, want %s", exp, claims.ExpiresAt.UTC())
	}

	second, claims2 := issueToken(t, "cluster2", "cluster1", 2*time.Hour)
	if err := os.WriteFile(path, []byte(second), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the renewed token", func() bool { tok, _, _ := tf.current(); return tok == second })
	if _, exp, _ := tf.current(); !exp.Equal(claims2.ExpiresAt.UTC()) {
		t.Fatalf("expiry after reload %s, want %s", exp, claims2.ExpiresAt.UTC())
	}

	if err := os.WriteFile(path, []byte("  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the empty file reported", func() bool { _, _, err := tf.current(); return err != nil })
	if tok, _, _ := tf.current(); tok != second {
		t.Fatal("an emptied token file replaced the token in use")
	}
}

func TestOpenTokenFile_MissingOrEmptyIsAnError(t *testing.T) {
	dir := t.TempDir()
	if _, err := openTokenFile(filepath.Join(dir, "missing"), quietLogger()); err == nil {
		t.Fatal("missing token file accepted")
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := openTokenFile(empty, quietLogger()); err == nil {
		t.Fatal("empty token file accepted")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
