package policy

import (
	"testing"

	"github.com/palisade-mesh/palisade/identity"
)

const cnp = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: p\n  namespace: prod\n"
const ccnp = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: c\n"

// features is a small world: web (prod), api (prod), db (prod, team=data), batch (dev), a pod with
// a container-source label, and a web pod in a remote cluster.
func features(t *testing.T, opts Options) *mesh {
	m := newMesh(t, opts)
	m.endpoint("web", "prod", "", "app=web", "tier=front", "ns:env=production")
	m.endpoint("api", "prod", "", "app=api", "tier=back", "ns:env=production")
	m.endpoint("db", "prod", "", "app=db", "team=data", "ns:env=production")
	m.endpoint("batch", "dev", "", "app=batch", "tier=back", "ns:env=development")
	m.endpoint("web-remote", "prod", "cluster2", "app=web", "tier=front")
	return m
}

func TestFeatures_TruthTable(t *testing.T) {
	cases := []struct {
		name   string
		opts   Options
		policy string
		flows  []flowCase
	}{
		{
			name:   "no policy allows everything",
			policy: "",
			flows:  []flowCase{{from: "web", to: "api", port: 1, want: Allow}, {from: "world", to: "db", port: 5432, want: Allow}},
		},
		{
			name: "ingress rule puts the endpoint in default deny, others untouched",
			policy: cnp + `spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
`,
			flows: []flowCase{
				{from: "web", to: "api", port: 8080, want: Allow},
				{from: "db", to: "api", port: 8080, want: Drop},
				{from: "api", to: "db", port: 5432, want: Allow},
				{from: "api", to: "web", port: 80, want: Allow},
			},
		},
		{
			name: "peer selectors are confined to the policy's namespace",
			policy: cnp + `spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromEndpoints: [{matchLabels: {tier: back}}]
`,
			flows: []flowCase{{from: "batch", to: "api", port: 80, want: Drop}},
		},
		{
			name: "naming the namespace label crosses namespaces",
			policy: cnp + `spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromEndpoints: [{matchLabels: {tier: back, k8s:io.kubernetes.pod.namespace: dev}}]
`,
			flows: []flowCase{{from: "batch", to: "api", port: 80, want: Allow}},
		},
		{
			name: "namespace labels select by namespace",
			policy: cnp + `spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEndpoints: [{matchLabels: {io.cilium.k8s.namespace.labels.env: production}, matchExpressions: [{key: io.kubernetes.pod.namespace, operator: Exists}]}]
`,
			flows: []flowCase{{from: "api", to: "db", port: 5432, want: Allow}, {from: "batch", to: "db", port: 5432, want: Drop}},
		},
		{
			name: "endpoint selector of a namespaced policy does not reach other namespaces",
			policy: cnp + `spec:
  endpointSelector: {matchLabels: {tier: back}}
  ingress: [{}]
`,
			flows: []flowCase{{from: "web", to: "api", port: 80, want: Drop}, {from: "web", to: "batch", port: 80, want: Allow}},
		},
		{
			name: "clusterwide policy selects in every namespace",
			policy: ccnp + `spec:
  endpointSelector: {matchLabels: {tier: back}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
`,
			flows: []flowCase{{from: "web", to: "batch", port: 80, want: Allow}, {from: "db", to: "batch", port: 80, want: Drop}, {from: "web", to: "api", port: 80, want: Allow}},
		},
		{
			name: "peers are local-cluster only unless the cluster is named",
			policy: cnp + `spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
`,
			flows: []flowCase{{from: "web", to: "api", port: 80, want: Allow}, {from: "web-remote", to: "api", port: 80, want: Drop}},
		},
		{
			name: "AllClusters restores remote peers",
			opts: Options{AllClusters: true},
			policy: cnp + `spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
`,
			flows: []flowCase{{from: "web-remote", to: "api", port: 80, want: Allow}},
		},
		{
			name: "naming a cluster selects it",
			policy: cnp + `spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web, io.cilium.k8s.policy.cluster: cluster2}}]
`,
			flows: []flowCase{{from: "web-remote", to: "api", port: 80, want: Allow}, {from: "web", to: "api", port: 80, want: Drop}},
		},
		{
			name: "deny beats allow, across policies",
			policy: cnp + `specs:
- endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEntities: [all]
- endpointSelector: {matchLabels: {app: db}}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: web}}]
    toPorts: [{ports: [{port: "5432", protocol: TCP}]}]
`,
			flows: []flowCase{
				{from: "web", to: "db", port: 5432, want: Drop},
				{from: "web", to: "db", port: 22, want: Allow},
				{from: "api", to: "db", port: 5432, want: Allow},
				{from: "world", to: "db", port: 5432, want: Allow},
			},
		},
		{
			name: "a deny-only policy also means default deny",
			policy: cnp + `spec:
  endpointSelector: {matchLabels: {app: db}}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: web}}]
`,
			flows: []flowCase{{from: "web", to: "db", port: 5432, want: Drop}, {from: "api", to: "db", port: 5432, want: Drop}},
		},
		{
			name: "enableDefaultDeny false only adds allows",
			policy: cnp + `spec:
  endpointSelector: {matchLabels: {app: db}}
  enableDefaultDeny: {ingress: false}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: web}}]
`,
			flows: []flowCase{{from: "web", to: "db", port: 5432, want: Drop}, {from: "api", to: "db", port: 5432, want: Allow}},
		},
		{
			name: "egress default deny and union of allows",
			policy: cnp + `specs:
- endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEndpoints: [{matchLabels: {app: api}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
- endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEndpoints: [{matchLabels: {app: api}}]
    toPorts: [{ports: [{port: "9090", protocol: UDP}]}]
`,
			flows: []flowCase{
				{from: "web", to: "api", port: 8080, want: Allow},
				{from: "web", to: "api", port: 9090, proto: ProtoUDP, want: Allow},
				{from: "web", to: "api", port: 9090, want: Drop},
				{from: "web", to: "db", port: 5432, want: Drop},
			},
		},
		{
			name: "ports: range, ANY protocol, port 0, SCTP",
			policy: cnp + `spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
    toPorts: [{ports: [{port: "8000", endPort: 8099}, {port: "7000", protocol: SCTP}]}]
  - fromEndpoints: [{matchLabels: {app: db}}]
    toPorts: [{ports: [{port: "0", protocol: UDP}]}]
`,
			flows: []flowCase{
				{from: "web", to: "api", port: 8000, want: Allow},
				{from: "web", to: "api", port: 8099, proto: ProtoUDP, want: Allow},
				{from: "web", to: "api", port: 8100, want: Drop},
				{from: "web", to: "api", port: 7000, proto: ProtoSCTP, want: Allow},
				{from: "web", to: "api", port: 7000, want: Drop},
				{from: "db", to: "api", port: 12345, proto: ProtoUDP, want: Allow},
				{from: "db", to: "api", port: 12345, want: Drop},
			},
		},
		{
			name: "ports without peers apply to every peer, world included",
			policy: cnp + `spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - toPorts: [{ports: [{port: "443", protocol: TCP}]}]
`,
			flows: []flowCase{{from: "world", to: "web", port: 443, want: Allow}, {from: "batch", to: "web", port: 443, want: Allow}, {from: "world", to: "web", port: 80, want: Drop}},
		},
		{
			name: "empty ingress rule selects no peer",
			policy: cnp + `spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress: [{}]
`,
			flows: []flowCase{{from: "api", to: "web", port: 80, want: Drop}, {from: "world", to: "web", port: 80, want: Drop}},
		},
		{
			name: "matchExpressions In, NotIn, Exists, DoesNotExist",
			policy: cnp + `specs:
- endpointSelector: {matchExpressions: [{key: app, operator: In, values: [db, api]}]}
  ingress:
  - fromEndpoints: [{matchExpressions: [{key: tier, operator: NotIn, values: [back]}, {key: team, operator: DoesNotExist}]}]
- endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchExpressions: [{key: team, operator: Exists}]}]
`,
			flows: []flowCase{
				{from: "web", to: "db", port: 1, want: Allow},
				{from: "api", to: "db", port: 1, want: Drop},
				{from: "db", to: "api", port: 1, want: Drop},
				{from: "db", to: "web", port: 1, want: Allow},
				{from: "api", to: "web", port: 1, want: Drop},
			},
		},
		{
			name: "source prefix in a selector must match the label's source",
			policy: cnp + `specs:
- endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEndpoints: [{matchLabels: {"container:app": web}}]
- endpointSelector: {matchLabels: {"k8s:app": api}}
  ingress:
  - fromEndpoints: [{matchLabels: {"k8s:app": web}}]
`,
			flows: []flowCase{{from: "web", to: "db", port: 1, want: Drop}, {from: "web", to: "api", port: 1, want: Allow}},
		},
		{
			name: "entities: world, host, remote-node, cluster",
			policy: cnp + `specs:
- endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEntities: [world]
- endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromEntities: [host, remote-node]
- endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEntities: [cluster]
`,
			flows: []flowCase{
				{from: "world", to: "web", port: 80, want: Allow},
				{from: "world-ipv4", to: "web", port: 80, want: Allow},
				{from: "api", to: "web", port: 80, want: Drop},
				{from: "host", to: "api", port: 80, want: Allow},
				{from: "remote-node", to: "api", port: 80, want: Allow},
				{from: "world", to: "api", port: 80, want: Drop},
				{from: "batch", to: "db", port: 80, want: Allow},
				{from: "host", to: "db", port: 80, want: Allow},
				{from: "web-remote", to: "db", port: 80, want: Drop},
				{from: "world", to: "db", port: 80, want: Drop},
			},
		},
		{
			name: "CIDR peers with except",
			policy: cnp + `spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.96.0.0/12]}]
  - toCIDR: [192.0.2.0/24]
    toPorts: [{ports: [{port: "53", protocol: UDP}]}]
`,
			flows: []flowCase{
				{from: "web", to: "10.1.2.3", port: 443, want: Allow},
				{from: "web", to: "10.100.0.1", port: 443, want: Drop},
				{from: "web", to: "192.0.2.9", port: 53, proto: ProtoUDP, want: Allow},
				{from: "web", to: "192.0.2.9", port: 53, want: Drop},
				{from: "web", to: "8.8.8.8", port: 443, want: Drop},
			},
		},
		{
			name: "toEntities world covers CIDR identities; 0.0.0.0/0 covers unknown addresses",
			policy: cnp + `specs:
- endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEntities: [world]
- endpointSelector: {matchLabels: {app: api}}
  egress:
  - toCIDR: [0.0.0.0/0]
- endpointSelector: {matchLabels: {app: db}}
  egress:
  - toCIDR: [10.0.0.0/8]
`,
			flows: []flowCase{
				{from: "web", to: "10.1.2.3", port: 1, want: Allow},
				{from: "web", to: "8.8.8.8", port: 1, want: Allow},
				{from: "api", to: "8.8.8.8", port: 1, want: Allow},
				{from: "api", to: "10.1.2.3", port: 1, want: Allow},
				{from: "api", to: "db", port: 1, want: Drop},
			},
		},
		{
			name: "fromRequires narrows every peer of every rule selecting the endpoint",
			policy: cnp + `specs:
- endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromRequires: [{matchLabels: {tier: back}}]
- endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: api}}, {matchLabels: {app: web}}]
`,
			flows: []flowCase{{from: "api", to: "db", port: 5432, want: Allow}, {from: "web", to: "db", port: 5432, want: Drop}},
		},
		{
			name: "L7 from one peer and plain L4 from another on the same port",
			policy: cnp + `spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http:
        - {method: GET, path: "/v1/.*", headers: ["X-Team: web"]}
        - {method: "GET|HEAD", path: /healthz, host: "api\\.prod(:80)?"}
  - fromEndpoints: [{matchLabels: {app: db}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
`,
			flows: []flowCase{
				{from: "db", to: "api", port: 80, http: "DELETE /anything", want: Allow},
				{from: "web", to: "api", port: 80, http: "GET /v1/items", want: DenyL7}, // header missing
				{from: "web", to: "api", port: 80, http: "GET /healthz", want: DenyL7},  // host missing
				{from: "web", to: "api", port: 80, http: "POST /v1/items", want: DenyL7},
				{from: "web", to: "api", port: 81, want: Drop},
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := features(t, c.opts)
			if c.policy != "" {
				m.apply(decodeString(t, c.policy)...)
			}
			m.check(t, c.flows)
		})
	}
}

func TestFeatures_HTTPHeadersAndHost(t *testing.T) {
	m := features(t, Options{})
	m.apply(decodeString(t, cnp+`spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http:
        - {method: GET, path: "/v1/.*", headers: ["X-Team: web", "X-Trace"]}
        - {host: "api\\.prod(:80)?"}
`)...)
	cases := []struct {
		req  HTTPRequest
		want Verdict
	}{
		{HTTPRequest{Method: "GET", Path: "/v1/x", Headers: map[string]string{"x-team": "web", "X-Trace": "1"}}, Allow},
		{HTTPRequest{Method: "GET", Path: "/v1/x", Headers: map[string]string{"X-Team": "ops", "X-Trace": "1"}}, DenyL7},
		{HTTPRequest{Method: "GET", Path: "/v1/x", Headers: map[string]string{"X-Team": "web"}}, DenyL7},
		{HTTPRequest{Method: "GET", Path: "/v2/x/v1/y", Headers: map[string]string{"X-Team": "web", "X-Trace": ""}}, DenyL7}, // anchored
		{HTTPRequest{Method: "DELETE", Path: "/", Host: "api.prod:80"}, Allow},
		{HTTPRequest{Method: "DELETE", Path: "/", Host: "evil.api.prod"}, DenyL7},
	}
	if _, err := m.e.Decide(Flow{Src: m.id("web"), Dst: identity.ID(1<<16 | 4242), Proto: ProtoTCP, Port: 80}); err == nil {
		t.Error("Decide accepted an unknown identity")
	}
	for _, c := range cases {
		req := c.req
		tr, err := m.e.Decide(Flow{Src: m.id("web"), Dst: m.id("api"), Proto: ProtoTCP, Port: 80, HTTP: &req})
		if err != nil {
			t.Fatal(err)
		}
		if tr.Verdict != c.want {
			t.Errorf("%+v: got %s, want %s\n%s", c.req, tr.Verdict, c.want, tr)
		}
	}
}
