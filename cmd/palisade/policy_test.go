package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// runPolicy runs `palisade policy ARGS` from the repository's examples/ folder.
func runPolicy(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "examples"))
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(append([]string{"policy"}, args...))
	err = root.Execute()
	return out.String(), err
}

func TestPolicyValidate(t *testing.T) {
	cases := []struct {
		name      string
		args      []string
		stdin     string
		wantOut   []string
		wantErr   string
		wantNoOut string
	}{
		{
			name:    "valid files",
			args:    []string{"validate", "-f", "starwars/l7.yaml", "-f", "r2d2/read-only.json"},
			wantOut: []string{"starwars/l7.yaml: CiliumNetworkPolicy default/allow-empire-in-namespace: valid (1 rule)", "r2d2/read-only.json: CiliumClusterwideNetworkPolicy read-only: valid (1 rule)"},
		},
		{
			name:      "tutorial file rejected with warnings",
			args:      []string{"validate", "-f", "test-app/l3-l4.yaml"},
			wantOut:   []string{`test-app/l3-l4.yaml: warning: test-app/allow-all-egress-from-client: spec.egress[0]: selects no peers; to allow all egress use toEntities: [all]`, `"8.8.8.8" is an IP address`},
			wantErr:   `test-app/l3-l4.yaml: test-app/allow-dns-from-all-pods: spec.egress[0].toEntities[0]: unknown entity "kube-dns"`,
			wantNoOut: "valid",
		},
		{
			name:      "one bad file fails the set",
			args:      []string{"validate", "-f", "starwars/l7.yaml", "-f", "test-app/l3-l4.yaml"},
			wantErr:   "unknown entity",
			wantNoOut: "valid",
		},
		{
			name:    "standard input needs a name for bare rules",
			args:    []string{"validate", "-f", "-"},
			stdin:   `[{"endpointSelector": {}}]`,
			wantErr: "-: document 1: a bare list of rules needs a name",
		},
		{
			name:    "standard input with a name",
			args:    []string{"validate", "-f", "-", "--name", "mine"},
			stdin:   `[{"endpointSelector": {}}]`,
			wantOut: []string{"-: CiliumClusterwideNetworkPolicy mine: valid (1 rule)"},
		},
		{
			name:    "missing file",
			args:    []string{"validate", "-f", "nope.yaml"},
			wantErr: "read policy file: open nope.yaml",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := runPolicy(t, c.stdin, c.args...)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error = %v, want %q", err, c.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			for _, w := range c.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if c.wantNoOut != "" && strings.Contains(out, c.wantNoOut) {
				t.Errorf("output has %q:\n%s", c.wantNoOut, out)
			}
		})
	}
}

func TestPolicyTrace(t *testing.T) {
	starwars := []string{"trace", "-f", "starwars/l7.yaml", "--dst-labels", "org=empire,class=deathstar", "--port", "80"}
	cases := []struct {
		name    string
		args    []string
		want    []string
		wantErr string
	}{
		{"tiefighter lands", append(starwars, "--src-labels", "org=empire,class=tiefighter", "--http-method", "POST", "--http-path", "/v1/request-landing"),
			[]string{"request accepted by CiliumNetworkPolicy default/allow-empire-in-namespace spec.ingress[0]", "Final verdict: ALLOW"}, ""},
		{"exhaust port denied by the proxy", append(starwars, "--src-labels", "org=empire,class=tiefighter", "--http-method", "PUT", "--http-path", "/v1/exhaust-port"),
			[]string{"Final verdict: DENY-L7"}, ""},
		{"xwing dropped", append(starwars, "--src-labels", "org=alliance,class=xwing"),
			[]string{"no rule allows it (ingress default-deny)", "Final verdict: DROP"}, ""},
		{"across clusters", []string{"trace", "-f", "multicluster/cross-cluster-l7.yaml", "--cluster", "cluster1", "--src-cluster", "cluster2",
			"--src-labels", "org=empire,class=tiefighter", "--dst-labels", "org=empire,class=deathstar", "--port", "80", "--http-method", "POST", "--http-path", "/v1/request-landing"},
			[]string{"is not a local endpoint: no egress policy applies here", "Final verdict: ALLOW"}, ""},
		{"third cluster not named", []string{"trace", "-f", "multicluster/cross-cluster-l7.yaml", "--cluster", "cluster1", "--src-cluster", "cluster3",
			"--src-labels", "org=empire,class=tiefighter", "--dst-labels", "org=empire,class=deathstar", "--port", "80"},
			[]string{"Final verdict: DROP"}, ""},
		{"CIDR egress", []string{"trace", "-f", "test-app/egress-external.yaml", "--src-namespace", "test-app", "--src-labels", "app=app", "--dst-ip", "203.0.113.7", "--port", "8080"},
			[]string{"cidr:203.0.113.0/24", "allowed by CiliumNetworkPolicy test-app/allow-app-to-external-cidr spec.egress[0] toCIDR[0]", "Final verdict: ALLOW"}, ""},
		{"other address dropped", []string{"trace", "-f", "test-app/egress-external.yaml", "--src-namespace", "test-app", "--src-labels", "app=app", "--dst-ip", "198.51.100.1", "--port", "8080"},
			[]string{"Final verdict: DROP"}, ""},
		{"DNS over UDP", []string{"trace", "-f", "test-app/l3-l4-fixed.yaml", "--src-namespace", "test-app", "--src-labels", "app=database", "--dst-namespace", "kube-system", "--dst-labels", "k8s-app=kube-dns", "--port", "53", "--protocol", "UDP"},
			[]string{"Final verdict: ALLOW"}, ""},
		{"r2d2 generic request", []string{"trace", "-f", "r2d2/allow-all.json", "--src-labels", "id=r2d2-client", "--dst-labels", "id=r2d2-server", "--port", "9000", "--l7-proto", "r2d2", "--l7", "cmd=HALT"},
			[]string{"rules.l7[0]", "Final verdict: ALLOW"}, ""},
		{"world entity source", []string{"trace", "-f", "starwars/l3-l4.yaml", "--src-entity", "world", "--dst-labels", "org=empire,class=deathstar", "--port", "80"},
			[]string{"[reserved:world]", "Final verdict: DROP"}, ""},
		{"both labels and entity", append(starwars, "--src-labels", "a=b", "--src-entity", "world"), nil, "give exactly one of --src-labels, --src-entity, --src-ip"},
		{"bad protocol", append(starwars, "--src-labels", "a=b", "--protocol", "ICMP"), nil, `--protocol "ICMP"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := runPolicy(t, "", c.args...)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestPolicyTrace_JSON(t *testing.T) {
	out, err := runPolicy(t, "", "trace", "-f", "starwars/l3-l4.yaml", "--src-labels", "org=alliance", "--dst-labels", "org=empire,class=deathstar", "--port", "80", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var tr struct {
		Verdict string `json:"verdict"`
		Ingress struct {
			Direction string `json:"direction"`
			Enforced  bool   `json:"enforced"`
		} `json:"ingress"`
	}
	if err := json.Unmarshal([]byte(out), &tr); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if tr.Verdict != "drop" || tr.Ingress.Direction != "ingress" || !tr.Ingress.Enforced {
		t.Fatalf("trace = %+v", tr)
	}
}

func TestPolicyFiles_BareRulesNameFromFile(t *testing.T) {
	f := &policyFileFlags{}
	for in, want := range map[string]string{"examples/r2d2/read-only.json": "read-only", "/x/My Rules.JSON": "my-rules", "-": ""} {
		if got := f.bareRulesName(in); got != want {
			t.Errorf("bareRulesName(%q) = %q, want %q", in, got, want)
		}
	}
}
