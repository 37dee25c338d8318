package policy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/policy/api"
)

// The truth tables below are the expected outcomes in the README of each scenario in examples/.

func starwars(t *testing.T) *mesh {
	m := newMesh(t, Options{})
	m.endpoint("deathstar", "default", "", "org=empire", "class=deathstar", "app.kubernetes.io/name=deathstar")
	m.endpoint("tiefighter", "default", "", "org=empire", "class=tiefighter", "app.kubernetes.io/name=tiefighter")
	m.endpoint("xwing", "default", "", "org=alliance", "class=xwing", "app.kubernetes.io/name=xwing")
	m.endpoint("maintenance-droid", "default", "", "org=empire", "class=maintenance-droid")
	return m
}

func TestScenario_StarWars(t *testing.T) {
	m := starwars(t)
	steps := []flowCase{
		{from: "xwing", to: "deathstar", port: 80, http: "POST /v1/request-landing"},
		{from: "tiefighter", to: "deathstar", port: 80, http: "POST /v1/request-landing"},
		{from: "tiefighter", to: "deathstar", port: 80, http: "PUT /v1/exhaust-port"},
		{from: "maintenance-droid", to: "deathstar", port: 80, http: "PUT /v1/exhaust-port"},
	}
	expect := func(verdicts ...Verdict) []flowCase {
		out := make([]flowCase, len(steps))
		for i := range steps {
			out[i] = steps[i]
			out[i].want = verdicts[i]
		}
		return out
	}
	t.Run("no policy", func(t *testing.T) { m.check(t, expect(Allow, Allow, Allow, Allow)) })
	m.load("starwars/l3-l4.yaml")
	t.Run("l3-l4", func(t *testing.T) {
		m.check(t, expect(Drop, Allow, Allow, Allow))
		// Other ports of the deathstar are closed to everyone.
		m.check(t, []flowCase{{from: "tiefighter", to: "deathstar", port: 443, want: Drop}})
	})
	m.load("starwars/l7.yaml") // same name: replaces l3-l4
	t.Run("l7", func(t *testing.T) { m.check(t, expect(Drop, Allow, DenyL7, Allow)) })
	if len(m.e.Policies()) != 1 {
		t.Fatalf("l7.yaml should replace l3-l4.yaml: %d policies", len(m.e.Policies()))
	}
}

func TestScenario_StarWarsTraceNamesRules(t *testing.T) {
	m := starwars(t)
	m.load("starwars/l7.yaml")
	tr, err := m.e.Decide(Flow{Src: m.id("tiefighter"), Dst: m.id("deathstar"), Proto: ProtoTCP, Port: 80, HTTP: &HTTPRequest{Method: "POST", Path: "/v1/request-landing"}})
	if err != nil {
		t.Fatal(err)
	}
	out := tr.String()
	for _, want := range []string{
		"allowed with L7 rules by CiliumNetworkPolicy default/allow-empire-in-namespace spec.ingress[0] fromEndpoints[0] toPorts[0].ports[0]",
		"request accepted by CiliumNetworkPolicy default/allow-empire-in-namespace spec.ingress[0] fromEndpoints[0] toPorts[0].ports[0], rules.http[0]",
		"Final verdict: ALLOW",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("trace lacks %q:\n%s", want, out)
		}
	}
	tr, _ = m.e.Decide(Flow{Src: m.id("xwing"), Dst: m.id("deathstar"), Proto: ProtoTCP, Port: 80})
	if out := tr.String(); !strings.Contains(out, "no rule allows it (ingress default-deny)") || !strings.Contains(out, "Final verdict: DROP") {
		t.Errorf("xwing trace:\n%s", out)
	}
}

func TestScenario_StarWarsAcrossClusters(t *testing.T) {
	m := newMesh(t, Options{ClusterName: "cluster1"})
	m.endpoint("deathstar", "default", "cluster1", "org=empire", "class=deathstar")
	m.endpoint("tiefighter", "default", "cluster2", "org=empire", "class=tiefighter")
	m.endpoint("xwing", "default", "cluster2", "org=alliance", "class=xwing")
	m.endpoint("tiefighter3", "default", "cluster3", "org=empire", "class=tiefighter")
	m.load("multicluster/cross-cluster-l7.yaml")
	m.check(t, []flowCase{
		{from: "tiefighter", to: "deathstar", port: 80, http: "POST /v1/request-landing", want: Allow},
		{from: "tiefighter", to: "deathstar", port: 80, http: "PUT /v1/exhaust-port", want: DenyL7},
		{from: "xwing", to: "deathstar", port: 80, http: "POST /v1/request-landing", want: Drop},
		{from: "tiefighter3", to: "deathstar", port: 80, http: "POST /v1/request-landing", want: Drop},
	})

	// A new tiefighter in cluster2 can land without recomputing the deathstar: its identity arrives,
	// and the delta holds exactly its entry.
	if _, err := m.e.AddEndpoint(m.id("deathstar")); err != nil {
		t.Fatal(err)
	}
	lbls, _ := identity.EndpointLabels(map[string]string{"org": "empire", "class": "tiefighter", "version": "2"}, "default", nil, "cluster2")
	newID := identity.ID(2<<16 | 999)
	deltas := m.e.UpdateIdentities(map[identity.ID]identity.Labels{newID: lbls}, nil)
	if len(deltas) != 1 || deltas[0].Identity != m.id("deathstar") || len(deltas[0].Upserts) != 1 || len(deltas[0].Deletes) != 0 {
		t.Fatalf("deltas = %+v", deltas)
	}
	for k, v := range deltas[0].Upserts {
		if k != (Key{Identity: newID, Direction: Ingress, Proto: ProtoTCP, Port: 80, EndPort: 80}) || !v.Redirect || v.L7 == nil || v.L7.Parser != ParserHTTP {
			t.Fatalf("delta entry %v -> %v", k, v)
		}
	}
}

func testApp(t *testing.T) *mesh {
	m := newMesh(t, Options{})
	m.endpoint("client", "test-app", "", "app=client")
	m.endpoint("app", "test-app", "", "app=app")
	m.endpoint("database", "test-app", "", "app=database")
	m.endpoint("kube-dns", "kube-system", "", "k8s-app=kube-dns")
	return m
}

func TestScenario_TestAppFixed(t *testing.T) {
	m := testApp(t)
	m.load("test-app/l3-l4-fixed.yaml")
	m.check(t, []flowCase{
		{from: "client", to: "app", port: 80, want: Allow},
		{from: "client", to: "app", port: 8080, want: Drop},
		{from: "client", to: "database", port: 5432, want: Allow},
		{from: "app", to: "database", port: 5432, want: Allow},
		{from: "app", to: "client", port: 80, want: Drop},
		{from: "database", to: "app", port: 80, want: Drop},
		{from: "client", to: "kube-dns", port: 53, proto: ProtoUDP, want: Allow},
		{from: "app", to: "kube-dns", port: 53, proto: ProtoUDP, want: Allow},
		{from: "database", to: "kube-dns", port: 53, proto: ProtoUDP, want: Allow},
		{from: "database", to: "kube-dns", port: 53, want: Allow},
		{from: "database", to: "kube-dns", port: 54, proto: ProtoUDP, want: Drop},
	})
}

func TestScenario_TestAppL7(t *testing.T) {
	m := testApp(t)
	m.load("test-app/l3-l4-fixed.yaml")
	m.load("test-app/l7-http.yaml")
	// Both in place: the plain L4 allow admits every request, and the trace says which rule did.
	all := []flowCase{
		{from: "client", to: "app", port: 80, http: "GET /status/200", want: Allow},
		{from: "client", to: "app", port: 80, http: "GET /anything-else", want: Allow},
	}
	m.check(t, all)
	tr, _ := m.e.Decide(Flow{Src: m.id("client"), Dst: m.id("app"), Proto: ProtoTCP, Port: 80, HTTP: &HTTPRequest{Method: "GET", Path: "/anything-else"}})
	if out := tr.String(); !strings.Contains(out, "allowed by CiliumNetworkPolicy test-app/allow-client-to-app spec.ingress[0]") {
		t.Errorf("trace should name the L4 rule:\n%s", out)
	}

	m.remove(api.Key{Kind: api.KindCiliumNetworkPolicy, Namespace: "test-app", Name: "allow-client-to-app"})
	m.check(t, []flowCase{
		{from: "client", to: "app", port: 80, http: "GET /status/200", want: Allow},
		{from: "client", to: "app", port: 80, http: "GET /get", want: Allow},
		{from: "client", to: "app", port: 80, http: "POST /post", want: Allow},
		{from: "client", to: "app", port: 80, http: "GET /anything-else", want: DenyL7},
		{from: "client", to: "app", port: 80, http: "GET /status/404", want: DenyL7},
		{from: "client", to: "app", port: 80, http: "POST /get", want: DenyL7},
		{from: "database", to: "app", port: 80, http: "GET /get", want: Drop},
	})
}

func TestScenario_TestAppEgressExternal(t *testing.T) {
	m := testApp(t)
	m.load("test-app/egress-external.yaml")
	// The DNS proxy learns example.com's address: a CIDR identity for it, selected by toFQDNs.
	exampleCom := netip.MustParsePrefix("93.184.215.14/32")
	id, err := m.alloc.AllocateCIDR(exampleCom)
	if err != nil {
		t.Fatal(err)
	}
	m.e.UpdateIdentities(map[identity.ID]identity.Labels{id: CIDRLabels(exampleCom)}, nil)
	if got := m.e.FQDNSelectors(); len(got) != 1 || got[0].MatchName != "example.com" {
		t.Fatalf("FQDNSelectors = %v", got)
	}
	m.e.SetFQDNSelections(api.FQDNSelector{MatchName: "example.com"}, []identity.ID{id})
	m.check(t, []flowCase{
		{from: "app", to: "93.184.215.14", port: 80, http: "GET /", want: Allow},
		{from: "app", to: "93.184.215.14", port: 80, http: "GET /admin", want: DenyL7},
		{from: "app", to: "93.184.215.14", port: 443, want: Allow},
		{from: "app", to: "93.184.215.14", port: 8080, want: Drop},
		{from: "app", to: "203.0.113.7", port: 8080, want: Allow},
		{from: "app", to: "203.0.113.7", port: 80, want: Drop},
		{from: "app", to: "198.51.100.1", port: 8080, want: Drop},
		{from: "app", to: "database", port: 5432, want: Drop},
		{from: "client", to: "198.51.100.1", port: 443, want: Allow}, // client has no egress policy here
	})
}

// r2d2Match is the r2d2 parser's rule semantics: cmd exact (case-insensitive), file a regex.
func r2d2Match(rule, req map[string]string) bool {
	for k, v := range rule {
		switch k {
		case "file":
			re, err := api.AnchoredRegexp(v)
			if err != nil || !re.MatchString(req[k]) {
				return false
			}
		default:
			if !strings.EqualFold(req[k], v) {
				return false
			}
		}
	}
	return true
}

func TestScenario_R2D2(t *testing.T) {
	m := newMesh(t, Options{L7Matchers: map[string]L7Matcher{"r2d2": r2d2Match}})
	m.endpoint("server", "default", "", "id=r2d2-server")
	m.endpoint("client", "default", "", "id=r2d2-client")
	m.endpoint("other", "other-ns", "", "id=other")
	req := func(from, cmd, file string, want Verdict) flowCase {
		return flowCase{from: from, to: "server", port: 9000, l7proto: "r2d2", l7: map[string]string{"cmd": cmd, "file": file}, want: want}
	}
	m.load("r2d2/allow-all.json")
	t.Run("allow-all", func(t *testing.T) {
		m.check(t, []flowCase{req("client", "READ", "/etc/passwd", Allow), req("other", "HALT", "", Allow), {from: "client", to: "server", port: 9001, want: Drop}})
	})
	m.remove(api.Key{Kind: api.KindCiliumClusterwideNetworkPolicy, Name: "allow-all"})
	m.load("r2d2/read-only.json")
	t.Run("read-only", func(t *testing.T) {
		m.check(t, []flowCase{
			req("client", "READ", "/public/index.html", Allow),
			req("client", "read", "/public/a", Allow),
			req("client", "READ", "/private/key", DenyL7),
			req("client", "WRITE", "/public/a", DenyL7),
			req("client", "HALT", "", DenyL7),
			req("client", "RESET", "", DenyL7),
			req("other", "READ", "/public/a", Drop),
		})
	})
}
