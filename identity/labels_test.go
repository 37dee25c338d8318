package identity

import (
	"strings"
	"testing"
)

func TestParseLabel(t *testing.T) {
	cases := []struct {
		in      string
		want    Label
		wantErr string
	}{
		{in: "k8s:app=web", want: Label{SourceK8s, "app", "web"}},
		{in: "app=web", want: Label{SourceUnspec, "app", "web"}},
		{in: "reserved:host", want: Label{SourceReserved, "host", ""}},
		{in: "k8s:io.kubernetes.pod.namespace=default", want: Label{SourceK8s, LabelNamespace, "default"}},
		{in: "k8s:app.kubernetes.io/name=db", want: Label{SourceK8s, "app.kubernetes.io/name", "db"}},
		{in: "cidr:2001:db8::/32", want: Label{SourceCIDR, "2001:db8::/32", ""}},
		{in: "cidr:10.0.0.0/8", want: Label{SourceCIDR, "10.0.0.0/8", ""}},
		{in: "", wantErr: "empty label"},
		{in: "k8s:=web", wantErr: "empty key"},
		{in: "bogus:app=web", wantErr: `unknown source "bogus"`},
		{in: "k8s:app=we;b", wantErr: "not allowed"},
		{in: "k8s:a pp=web", wantErr: "not allowed"},
		{in: "k8s:app=" + strings.Repeat("x", 64), wantErr: "at most 63"},
		{in: "any:app=web", want: Label{SourceAny, "app", "web"}},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, err := ParseLabel(c.in)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("ParseLabel(%q) error = %v, want containing %q", c.in, err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseLabel(%q): %v", c.in, err)
			}
			if got != c.want {
				t.Fatalf("ParseLabel(%q) = %+v, want %+v", c.in, got, c.want)
			}
		})
	}
}

func TestLabels_CanonicalFormIsOrderIndependent(t *testing.T) {
	a, err := ParseLabels("k8s:org=empire", "k8s:class=deathstar", "k8s:io.kubernetes.pod.namespace=default")
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseLabels("k8s:io.kubernetes.pod.namespace=default", "k8s:org=empire", "k8s:class=deathstar", "k8s:org=empire")
	if err != nil {
		t.Fatal(err)
	}
	if a.String() != b.String() || a.Digest() != b.Digest() || !a.Equal(b) {
		t.Fatalf("canonical forms differ: %q vs %q", a, b)
	}
	want := "k8s:class=deathstar;k8s:io.kubernetes.pod.namespace=default;k8s:org=empire"
	if a.String() != want {
		t.Fatalf("String() = %q, want %q", a, want)
	}
	back, err := ParseCanonical(a.String())
	if err != nil || !back.Equal(a) {
		t.Fatalf("ParseCanonical round trip = %v, %v", back, err)
	}
}

func TestLabels_LaterLabelWinsOnSameKey(t *testing.T) {
	ls := NewLabels(Label{SourceK8s, "app", "a"}, Label{SourceK8s, "app", "b"}, Label{SourceUnspec, "app", "c"})
	if got, want := ls.String(), "k8s:app=b;unspec:app=c"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestLabels_BareKeySelectorMatchesAnySource(t *testing.T) {
	ls, _ := ParseLabels("k8s:org=empire", "container:role=db")
	cases := []struct {
		sel  string
		want bool
	}{
		{"org=empire", true},
		{"k8s:org=empire", true},
		{"container:org=empire", false},
		{"org=alliance", false},
		{"role=db", true},
		{"k8s:role=db", false},
	}
	for _, c := range cases {
		sel, err := ParseSelectLabel(c.sel)
		if err != nil {
			t.Fatal(err)
		}
		if got := ls.Has(sel); got != c.want {
			t.Errorf("Has(%q) = %v, want %v", c.sel, got, c.want)
		}
	}
}

func TestEndpointLabels_IncludeNamespaceAndCluster(t *testing.T) {
	ls, err := EndpointLabels(map[string]string{"org": "empire"}, "default", map[string]string{"team": "red"}, "cluster1")
	if err != nil {
		t.Fatal(err)
	}
	want := "k8s:io.cilium.k8s.namespace.labels.team=red;k8s:io.cilium.k8s.policy.cluster=cluster1;k8s:io.kubernetes.pod.namespace=default;k8s:org=empire"
	if ls.String() != want {
		t.Fatalf("got %q\nwant %q", ls, want)
	}
	if _, err := EndpointLabels(nil, "", nil, "c"); err == nil {
		t.Fatal("empty namespace accepted")
	}
	if _, err := EndpointLabels(map[string]string{"bad key": "x"}, "default", nil, "c"); err == nil {
		t.Fatal("invalid pod label accepted")
	}
}

func TestFilter(t *testing.T) {
	all, _ := ParseLabels(
		"k8s:app=web", "k8s:pod-template-hash=abc123", "k8s:statefulset.kubernetes.io/pod-name=web-0",
		"k8s:io.kubernetes.pod.namespace=default", "k8s:io.cilium.k8s.policy.cluster=c1", "k8s:tier=front",
		"k8s:io.cilium.k8s.namespace.labels.team=red", "reserved:host",
	)
	cases := []struct {
		name     string
		patterns []string
		want     string
		wantErr  bool
	}{
		{
			name: "defaults drop noisy keys",
			want: "k8s:app=web;k8s:io.cilium.k8s.namespace.labels.team=red;k8s:io.cilium.k8s.policy.cluster=c1;k8s:io.kubernetes.pod.namespace=default;k8s:tier=front;reserved:host",
		},
		{
			name:     "include list keeps only matches plus always-relevant",
			patterns: []string{"app"},
			want:     "k8s:app=web;k8s:io.cilium.k8s.namespace.labels.team=red;k8s:io.cilium.k8s.policy.cluster=c1;k8s:io.kubernetes.pod.namespace=default;reserved:host",
		},
		{
			name:     "exclude with source",
			patterns: []string{"!k8s:tier"},
			want:     "k8s:app=web;k8s:io.cilium.k8s.namespace.labels.team=red;k8s:io.cilium.k8s.policy.cluster=c1;k8s:io.kubernetes.pod.namespace=default;reserved:host",
		},
		{
			name:     "user include overrides a default exclusion",
			patterns: []string{"pod-template-hash", "app"},
			want:     "k8s:app=web;k8s:io.cilium.k8s.namespace.labels.team=red;k8s:io.cilium.k8s.policy.cluster=c1;k8s:io.kubernetes.pod.namespace=default;k8s:pod-template-hash=abc123;reserved:host",
		},
		{name: "namespace label cannot be excluded", patterns: []string{"!io.kubernetes.pod.namespace", "!app", "!tier"},
			want: "k8s:io.cilium.k8s.namespace.labels.team=red;k8s:io.cilium.k8s.policy.cluster=c1;k8s:io.kubernetes.pod.namespace=default;reserved:host"},
		{name: "bad regex", patterns: []string{"app("}, wantErr: true},
		{name: "empty pattern", patterns: []string{"!"}, wantErr: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := NewFilter(c.patterns)
			if c.wantErr {
				if err == nil {
					t.Fatal("want error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Relevant(all).String(); got != c.want {
				t.Fatalf("got  %q\nwant %q", got, c.want)
			}
		})
	}
}

func FuzzParseLabel(f *testing.F) {
	for _, s := range []string{"k8s:app=web", "cidr:2001:db8::/32", "reserved:host", "a=b=c", ":", "k8s:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLabel(s)
		if err != nil {
			return
		}
		again, err := ParseLabel(l.String())
		if err != nil {
			t.Fatalf("accepted %q but not its canonical form %q: %v", s, l.String(), err)
		}
		if again != l {
			t.Fatalf("round trip of %q: %+v != %+v", s, again, l)
		}
	})
}
