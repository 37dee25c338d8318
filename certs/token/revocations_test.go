package token

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestRevocations_ReloadedOnChangeAndKeptWhenBroken(t *testing.T) {
	f := newFixture(t)
	tok, claims, err := f.issuer.Issue("cluster2", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.verifier.Check(tok, "cluster2", ScopeRead); err != nil {
		t.Fatalf("before revocation: %v", err)
	}
	added, err := Revoke(f.revPath, claims.ID, "leaked in a ticket", time.Now())
	if err != nil || !added {
		t.Fatalf("Revoke: %v %v", added, err)
	}
	if added, err := Revoke(f.revPath, claims.ID, "", time.Now()); err != nil || added {
		t.Fatalf("second Revoke of the same ID: added=%v err=%v, want no change", added, err)
	}
	if err := f.revs.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.verifier.Check(tok, "cluster2", ScopeRead); err == nil {
		t.Fatal("revoked token accepted")
	}
	data, _ := os.ReadFile(f.revPath)
	if !strings.Contains(string(data), claims.ID+" # revoked ") || !strings.Contains(string(data), "leaked in a ticket") {
		t.Fatalf("revocation file:\n%s", data)
	}

	// A broken edit keeps the list in force.
	if err := os.WriteFile(f.revPath, append(data, "not a valid id!\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.revs.Reload(); err == nil || !strings.Contains(err.Error(), "is not a token ID") {
		t.Fatalf("Reload of a broken list: %v", err)
	}
	if !f.revs.Revoked(claims.ID) {
		t.Fatal("broken edit un-revoked the token")
	}
	// So does deleting the file.
	if err := os.Remove(f.revPath); err != nil {
		t.Fatal(err)
	}
	if err := f.revs.Reload(); err == nil {
		t.Fatal("Reload with the list deleted reported no error")
	}
	if f.revs.Len() != 1 {
		t.Fatalf("%d IDs in force after the file vanished, want 1", f.revs.Len())
	}
}

func TestParseRevocations(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int
		wantErr bool
	}{
		{name: "empty", in: "", want: 0},
		{name: "comments and blanks", in: "# header\n\nabc # revoked\n  def  \n", want: 2},
		{name: "duplicates", in: "abc\nabc\n", want: 1},
		{name: "space inside", in: "ab c\n", wantErr: true},
		{name: "slash", in: "a/b\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids, err := ParseRevocations([]byte(tt.in))
			if (err != nil) != tt.wantErr || len(ids) != tt.want {
				t.Fatalf("ParseRevocations = %v, %v; want %d IDs, error %v", ids, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestRevoke_RejectsBadIDAndChangesNothing(t *testing.T) {
	f := newFixture(t)
	if _, err := Revoke(f.revPath, "bad id", "", time.Now()); err == nil {
		t.Fatal("Revoke accepted an ID with a space")
	}
	if _, err := os.Stat(f.revPath); !os.IsNotExist(err) {
		t.Fatalf("refused Revoke created the file: %v", err)
	}
}
