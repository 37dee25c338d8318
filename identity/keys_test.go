package identity

import (
	"testing"
)

func TestKeys_RoundTrip(t *testing.T) {
	id := ID(5<<16 | 1234)
	if got, err := parseMasterKey(masterKey(id)); err != nil || got != id {
		t.Fatalf("parseMasterKey(%q) = %d, %v", masterKey(id), got, err)
	}
	gotID, node, err := parseRefKey(refKey(id, "node-a"))
	if err != nil || gotID != id || node != "node-a" {
		t.Fatalf("parseRefKey = %d %q %v", gotID, node, err)
	}
	lbls := mustLabels(t, "k8s:app=web", "k8s:io.kubernetes.pod.namespace=prod")
	back, err := decodeMaster(encodeMaster(lbls))
	if err != nil || !back.Equal(lbls) {
		t.Fatalf("decodeMaster(encodeMaster) = %v, %v", back, err)
	}
	if v, err := decodeValue(encodeValue(id)); err != nil || v != id {
		t.Fatalf("decodeValue = %d, %v", v, err)
	}
}

func TestKeys_Malformed(t *testing.T) {
	for _, key := range []string{"identities/id/", "identities/id/x", "identities/id/-1", "identities/id/99999999999", "nodes/a"} {
		if _, err := parseMasterKey(key); err == nil {
			t.Errorf("parseMasterKey(%q) accepted", key)
		}
	}
	for _, key := range []string{"identities/refs/1", "identities/refs/1/", "identities/refs/x/node", "identities/id/1/n"} {
		if _, _, err := parseRefKey(key); err == nil {
			t.Errorf("parseRefKey(%q) accepted", key)
		}
	}
	for _, v := range []string{``, `{}`, `{"labels":""}`, `{"labels":"k8s:a=b;bogus:x=y"}`, `{"labels":7}`, `"k8s:a=b"`} {
		if _, err := decodeMaster([]byte(v)); err == nil {
			t.Errorf("decodeMaster(%q) accepted", v)
		}
	}
	for _, v := range []string{``, `x`, `-3`, `1.5`, `4294967296`} {
		if _, err := decodeValue([]byte(v)); err == nil {
			t.Errorf("decodeValue(%q) accepted", v)
		}
	}
}

// FuzzDecodeMaster: master keys come from etcd, which anyone with write access can edit. Whatever
// decodes must be a valid, canonical label set that encodes back to the same labels.
func FuzzDecodeMaster(f *testing.F) {
	f.Add([]byte(`{"labels":"k8s:app=web;k8s:io.kubernetes.pod.namespace=default"}`))
	f.Add([]byte(`{"labels":"reserved:host"}`))
	f.Add([]byte(`{"labels":"cidr:2001:db8::/32"}`))
	f.Add([]byte(`{"labels":"k8s:a=b;k8s:a=c"}`))
	f.Add([]byte(`{"labels":";;"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		lbls, err := decodeMaster(b)
		if err != nil {
			return
		}
		if len(lbls) == 0 {
			t.Fatal("decoded an empty label set")
		}
		for _, l := range lbls {
			if err := l.Validate(); err != nil {
				t.Fatalf("decoded invalid label %s: %v", l, err)
			}
		}
		again, err := decodeMaster(encodeMaster(lbls))
		if err != nil || !again.Equal(lbls) {
			t.Fatalf("re-encoding %s gave %s, %v", lbls, again, err)
		}
	})
}

// FuzzDecodeClusterConfig: the cluster config is read from etcd; whatever decodes must validate.
func FuzzDecodeClusterConfig(f *testing.F) {
	f.Add([]byte(`{"name":"c1","id":1,"maxConnectedClusters":255}`))
	f.Add([]byte(`{"name":"c1","id":400,"maxConnectedClusters":511,"capabilities":["x"]}`))
	f.Add([]byte(`{"name":"C1","id":0}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := decodeClusterConfig(b)
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("decoded config %+v does not validate: %v", cfg, err)
		}
	})
}
