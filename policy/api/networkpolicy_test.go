package api

import (
	"encoding/json"
	"testing"
)

func TestNetworkPolicy_TranslatesToCiliumRule(t *testing.T) {
	in := `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: prod}
spec:
  podSelector: {matchLabels: {role: db}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {project: web}}
      podSelector: {matchLabels: {role: frontend}}
    - podSelector: {matchLabels: {role: client}}
    - ipBlock: {cidr: 172.17.0.0/16, except: [172.17.1.0/24]}
    ports:
    - {protocol: TCP, port: 6379}
    - {port: 32000, endPort: 32768}
  - ports: [{protocol: UDP, port: 53}]
`
	ps, _, err := Decode([]byte(in), DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rules := ps[0].Rules()
	if len(rules) != 1 || rules[0].Path != "spec" {
		t.Fatalf("rules = %+v", rules)
	}
	got, _ := json.Marshal(rules[0].Rule)
	want := `{"endpointSelector":{"matchLabels":{"k8s:role":"db"}},` +
		`"ingress":[{"fromEndpoints":[` +
		`{"matchLabels":{"k8s:io.cilium.k8s.namespace.labels.project":"web","k8s:role":"frontend"},"matchExpressions":[{"key":"k8s:io.kubernetes.pod.namespace","operator":"Exists"}]},` +
		`{"matchLabels":{"k8s:role":"client"}}],` +
		`"fromCIDRSet":[{"cidr":"172.17.0.0/16","except":["172.17.1.0/24"]}],` +
		`"toPorts":[{"ports":[{"port":"6379","protocol":"TCP"},{"port":"32000","endPort":32768,"protocol":"TCP"}]}]},` +
		`{"fromEntities":["all"],"toPorts":[{"ports":[{"port":"53","protocol":"UDP"}]}]}],` +
		`"egress":[{}]}`
	if string(got) != want {
		t.Fatalf("rule:\n got %s\nwant %s", got, want)
	}
	if ps[0].ScopeNamespace() != "prod" {
		t.Fatalf("scope = %q", ps[0].ScopeNamespace())
	}
}

func TestNetworkPolicy_PolicyTypesDefaults(t *testing.T) {
	cases := []struct {
		name                    string
		spec                    string
		wantIngress, wantEgress int // number of sections, -1 when the direction is absent
	}{
		{"ingress implied", "podSelector: {}", 1, -1},
		{"egress rules imply egress", "podSelector: {}\n  egress: [{}]", 1, 1},
		{"egress only", "podSelector: {}\n  policyTypes: [Egress]", -1, 1},
		{"allow all ingress", "podSelector: {}\n  ingress: [{}, {}]", 2, -1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x}\nspec:\n  " + c.spec + "\n"
			ps, _, err := Decode([]byte(in), DecodeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			r := ps[0].Rules()[0].Rule
			count := func(n int, present bool) int {
				if !present {
					return -1
				}
				return n
			}
			if got := count(len(r.Ingress), r.Ingress != nil); got != c.wantIngress {
				t.Errorf("ingress sections = %d, want %d", got, c.wantIngress)
			}
			if got := count(len(r.Egress), r.Egress != nil); got != c.wantEgress {
				t.Errorf("egress sections = %d, want %d", got, c.wantEgress)
			}
		})
	}
}
