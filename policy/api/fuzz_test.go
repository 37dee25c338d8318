package api

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecode checks that no input panics the decoder and that whatever it accepts is valid: it
// survives the stored round trip unchanged and every selector, port, CIDR and regex in it compiles.
func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "examples", "*", "*.*"))
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil && filepath.Ext(name) != ".md" {
			f.Add(b)
		}
	}
	f.Add([]byte(cnpHeader + "spec:\n  endpointSelector: {matchExpressions: [{key: a, operator: NotIn, values: [b]}]}\n  egress:\n  - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]\n    toPorts: [{ports: [{port: \"80\", endPort: 90, protocol: ANY}]}]\n"))
	f.Add([]byte("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x}\nspec:\n  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}}], ports: [{port: 80, endPort: 81}]}]\n"))
	f.Add([]byte(`[{"endpointSelector":{},"ingress":[{"toPorts":[{"ports":[{"port":"9000"}],"rules":{"l7proto":"r2d2","l7":[{"cmd":"READ"}]}}]}]}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, _, err := Decode(data, DecodeOptions{Name: "fuzz"})
		if err != nil {
			return
		}
		for _, p := range ps {
			stored, err := p.CanonicalJSON()
			if err != nil {
				t.Fatalf("accepted policy does not encode: %v", err)
			}
			back, err := ParseStored(stored)
			if err != nil {
				t.Fatalf("accepted policy does not parse back: %v\n%s", err, stored)
			}
			again, _ := back.CanonicalJSON()
			if !bytes.Equal(stored, again) {
				t.Fatalf("stored form not stable:\n%s\n%s", stored, again)
			}
			for _, sr := range p.Rules() {
				checkRuleCompiles(t, &sr.Rule)
			}
		}
	})
}

func checkRuleCompiles(t *testing.T, r *Rule) {
	t.Helper()
	sels := []*EndpointSelector{r.EndpointSelector}
	var ports []PortRule
	var cidrs []string
	for _, in := range append(append([]IngressRule{}, r.Ingress...), r.IngressDeny...) {
		for i := range in.FromEndpoints {
			sels = append(sels, &in.FromEndpoints[i])
		}
		for i := range in.FromRequires {
			sels = append(sels, &in.FromRequires[i])
		}
		ports = append(ports, in.ToPorts...)
		cidrs = append(cidrs, in.FromCIDR...)
		for _, c := range in.FromCIDRSet {
			cidrs = append(append(cidrs, c.CIDR), c.Except...)
		}
	}
	for _, eg := range append(append([]EgressRule{}, r.Egress...), r.EgressDeny...) {
		for i := range eg.ToEndpoints {
			sels = append(sels, &eg.ToEndpoints[i])
		}
		for i := range eg.ToRequires {
			sels = append(sels, &eg.ToRequires[i])
		}
		ports = append(ports, eg.ToPorts...)
		cidrs = append(cidrs, eg.ToCIDR...)
		for _, c := range eg.ToCIDRSet {
			cidrs = append(append(cidrs, c.CIDR), c.Except...)
		}
	}
	for _, s := range sels {
		if _, err := s.Requirements(); err != nil {
			t.Fatalf("accepted selector does not compile: %v", err)
		}
	}
	for _, c := range cidrs {
		if _, err := ParseCIDR(c); err != nil {
			t.Fatalf("accepted CIDR does not parse: %v", err)
		}
	}
	for _, pr := range ports {
		for _, pp := range pr.Ports {
			if _, err := pp.Parse(); err != nil {
				t.Fatalf("accepted port does not parse: %v", err)
			}
		}
		if pr.Rules == nil {
			continue
		}
		for _, h := range pr.Rules.HTTP {
			for _, e := range []string{h.Method, h.Path, h.Host} {
				if _, err := AnchoredRegexp(e); err != nil {
					t.Fatalf("accepted regex does not compile: %v", err)
				}
			}
		}
	}
}
