package health

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/hashicorp/memberlist"
)

// MaxKeys bounds a key set: a rotation needs two keys, a few more only waste decryption attempts
// on every packet.
const MaxKeys = 4

// KeySet is the cluster's gossip key material: every packet is encrypted with Primary, and
// received packets are accepted under any key of Keys (AES-GCM, 16, 24 or 32 byte keys).
// Rotation without restarting the cluster: (1) add the new key to Keys everywhere, (2) make it
// Primary, (3) remove the old one. Its JSON form keeps keys in base64.
type KeySet struct {
	Primary []byte   `json:"primary"`
	Keys    [][]byte `json:"keys"`
}

// NewKeySet returns a key set with one fresh 32-byte key.
func NewKeySet() (KeySet, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return KeySet{}, fmt.Errorf("generate gossip key: %w", err)
	}
	return KeySet{Primary: k, Keys: [][]byte{k}}, nil
}

// IsZero reports an empty key set (gossip in the clear).
func (ks KeySet) IsZero() bool { return len(ks.Primary) == 0 && len(ks.Keys) == 0 }

// Validate checks the key sizes, that the primary key is one of the keys and that none repeats.
// Errors name keys by position, never by value.
func (ks KeySet) Validate() error {
	var errs []error
	if len(ks.Keys) == 0 {
		errs = append(errs, errors.New("gossip key set: no keys"))
	}
	if len(ks.Keys) > MaxKeys {
		errs = append(errs, fmt.Errorf("gossip key set: %d keys, at most %d", len(ks.Keys), MaxKeys))
	}
	primaryFound := false
	for i, k := range ks.Keys {
		if err := memberlist.ValidateKey(k); err != nil {
			errs = append(errs, fmt.Errorf("gossip key %d: %d bytes, want 16, 24 or 32", i, len(k)))
		}
		for j := range i {
			if bytes.Equal(ks.Keys[j], k) {
				errs = append(errs, fmt.Errorf("gossip key %d repeats key %d", i, j))
			}
		}
		primaryFound = primaryFound || bytes.Equal(k, ks.Primary)
	}
	if !primaryFound {
		errs = append(errs, errors.New("gossip key set: the primary key is not one of the keys"))
	}
	return errors.Join(errs...)
}

// ParseKeySet reads a key set from its JSON form and validates it.
func ParseKeySet(raw []byte) (KeySet, error) {
	var ks KeySet
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ks); err != nil {
		// json errors may quote the input; the input is secret, so only the kind of error is kept.
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return KeySet{}, fmt.Errorf("gossip key set: malformed JSON at offset %d", syn.Offset)
		}
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return KeySet{}, errors.New("gossip key set: malformed JSON (truncated)")
		}
		return KeySet{}, errors.New("gossip key set: not a {primary, keys} object with base64 keys")
	}
	if err := ks.Validate(); err != nil {
		return KeySet{}, err
	}
	return ks, nil
}

// Marshal returns the JSON form.
func (ks KeySet) Marshal() ([]byte, error) { return json.Marshal(ks) }

// String never shows key material.
func (ks KeySet) String() string { return fmt.Sprintf("KeySet{%d keys}", len(ks.Keys)) }

// apply makes the keyring hold exactly the set, switching the primary key before removing old
// keys so no packet in flight loses its key.
func (ks KeySet) apply(kr *memberlist.Keyring) error {
	for i, k := range ks.Keys {
		if err := kr.AddKey(k); err != nil {
			return fmt.Errorf("install gossip key %d: %w", i, err)
		}
	}
	if err := kr.UseKey(ks.Primary); err != nil {
		return fmt.Errorf("switch gossip primary key: %w", err)
	}
	for _, installed := range kr.GetKeys() {
		keep := false
		for _, k := range ks.Keys {
			keep = keep || bytes.Equal(k, installed)
		}
		if !keep {
			if err := kr.RemoveKey(installed); err != nil {
				return fmt.Errorf("remove old gossip key: %w", err)
			}
		}
	}
	return nil
}

// Fingerprint names a key without revealing it: the first 12 hex digits of its SHA-256.
func Fingerprint(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:6])
}

// WithKey returns the set with key added (not primary): step 1 of a rotation.
func (ks KeySet) WithKey(key []byte) (KeySet, error) {
	for _, k := range ks.Keys {
		if bytes.Equal(k, key) {
			return KeySet{}, fmt.Errorf("gossip key %s is already installed", Fingerprint(key))
		}
	}
	out := KeySet{Primary: ks.Primary, Keys: append(slices.Clone(ks.Keys), key)}
	return out, out.Validate()
}

// Use returns the set with the key of that fingerprint as primary: step 2 of a rotation.
func (ks KeySet) Use(fingerprint string) (KeySet, error) {
	k, err := ks.find(fingerprint)
	if err != nil {
		return KeySet{}, err
	}
	return KeySet{Primary: k, Keys: ks.Keys}, nil
}

// Without returns the set without the key of that fingerprint, which must not be the primary:
// step 3 of a rotation.
func (ks KeySet) Without(fingerprint string) (KeySet, error) {
	k, err := ks.find(fingerprint)
	if err != nil {
		return KeySet{}, err
	}
	if bytes.Equal(k, ks.Primary) {
		return KeySet{}, fmt.Errorf("gossip key %s is the primary key; make another key primary first", fingerprint)
	}
	out := KeySet{Primary: ks.Primary}
	for _, x := range ks.Keys {
		if !bytes.Equal(x, k) {
			out.Keys = append(out.Keys, x)
		}
	}
	return out, nil
}

func (ks KeySet) find(fingerprint string) ([]byte, error) {
	for _, k := range ks.Keys {
		if Fingerprint(k) == fingerprint {
			return k, nil
		}
	}
	return nil, fmt.Errorf("no gossip key with fingerprint %q", fingerprint)
}
