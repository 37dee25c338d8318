package policy

import "testing"

const np = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: np\n  namespace: prod\n"

// Kubernetes NetworkPolicy's classic cases, from its documentation and recipes.
func TestNetworkPolicy_ClassicCases(t *testing.T) {
	cases := []struct {
		name   string
		policy string
		flows  []flowCase
	}{
		{
			name:   "deny all ingress",
			policy: np + "spec:\n  podSelector: {}\n  policyTypes: [Ingress]\n",
			flows: []flowCase{
				{from: "web", to: "api", port: 80, want: Drop},
				{from: "world", to: "db", port: 80, want: Drop},
				{from: "api", to: "batch", port: 80, want: Allow}, // other namespace
				{from: "api", to: "world", port: 80, want: Allow}, // egress untouched
			},
		},
		{
			name:   "allow all ingress",
			policy: np + "spec:\n  podSelector: {}\n  ingress: [{}]\n",
			flows:  []flowCase{{from: "batch", to: "api", port: 80, want: Allow}, {from: "world", to: "api", port: 9999, proto: ProtoUDP, want: Allow}},
		},
		{
			name:   "deny all egress",
			policy: np + "spec:\n  podSelector: {}\n  policyTypes: [Egress]\n",
			flows:  []flowCase{{from: "web", to: "api", port: 80, want: Drop}, {from: "web", to: "world", port: 443, want: Drop}, {from: "batch", to: "api", port: 80, want: Allow}},
		},
		{
			name:   "allow all egress",
			policy: np + "spec:\n  podSelector: {}\n  egress: [{}]\n  policyTypes: [Egress]\n",
			flows:  []flowCase{{from: "web", to: "world", port: 443, want: Allow}},
		},
		{
			name: "podSelector peer: same namespace only",
			policy: np + `spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {tier: back}}}, {podSelector: {matchLabels: {app: web}}}]
`,
			flows: []flowCase{{from: "web", to: "api", port: 80, want: Allow}, {from: "batch", to: "api", port: 80, want: Drop}, {from: "db", to: "api", port: 80, want: Drop}},
		},
		{
			name: "namespaceSelector AND podSelector in one peer",
			policy: np + `spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {env: development}}
      podSelector: {matchLabels: {tier: back}}
`,
			flows: []flowCase{{from: "batch", to: "db", port: 5432, want: Allow}, {from: "api", to: "db", port: 5432, want: Drop}},
		},
		{
			name: "namespaceSelector OR podSelector as two peers",
			policy: np + `spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {env: development}}
    - podSelector: {matchLabels: {tier: back}}
`,
			flows: []flowCase{{from: "batch", to: "db", port: 5432, want: Allow}, {from: "api", to: "db", port: 5432, want: Allow}, {from: "web", to: "db", port: 5432, want: Drop}},
		},
		{
			name: "namespaceSelector {} means every namespace, not the world",
			policy: np + `spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{namespaceSelector: {}}]
`,
			flows: []flowCase{{from: "batch", to: "db", port: 1, want: Allow}, {from: "web", to: "db", port: 1, want: Allow}, {from: "world", to: "db", port: 1, want: Drop}},
		},
		{
			name: "ipBlock with except",
			policy: np + `spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{ipBlock: {cidr: 172.17.0.0/16, except: [172.17.1.0/24]}}]
`,
			flows: []flowCase{{from: "172.17.2.3", to: "web", port: 80, want: Allow}, {from: "172.17.1.5", to: "web", port: 80, want: Drop}, {from: "10.0.0.1", to: "web", port: 80, want: Drop}},
		},
		{
			name: "ports and endPort, TCP by default",
			policy: np + `spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 6379}, {protocol: UDP, port: 32000, endPort: 32768}]
`,
			flows: []flowCase{
				{from: "web", to: "api", port: 6379, want: Allow},
				{from: "web", to: "api", port: 6379, proto: ProtoUDP, want: Drop},
				{from: "web", to: "api", port: 32500, proto: ProtoUDP, want: Allow},
				{from: "web", to: "api", port: 32769, proto: ProtoUDP, want: Drop},
			},
		},
		{
			name: "ports without from: every source on those ports",
			policy: np + `spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - ports: [{port: 443}]
`,
			flows: []flowCase{{from: "world", to: "web", port: 443, want: Allow}, {from: "world", to: "web", port: 80, want: Drop}},
		},
		{
			name: "egress to DNS only",
			policy: np + `spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {}}]
    ports: [{port: 53, protocol: UDP}]
`,
			flows: []flowCase{{from: "web", to: "batch", port: 53, proto: ProtoUDP, want: Allow}, {from: "web", to: "batch", port: 80, want: Drop}, {from: "web", to: "world", port: 53, proto: ProtoUDP, want: Drop}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := features(t, Options{})
			m.apply(decodeString(t, c.policy)...)
			m.check(t, c.flows)
		})
	}
}
