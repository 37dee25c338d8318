package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/palisade-mesh/palisade/agent"
	"github.com/palisade-mesh/palisade/policy/api"
)

// Figure 1's policy is one CiliumClusterwideNetworkPolicy selecting every member: members may
// reach each other (egress), and be reached by members on one port, which each import flips
// between memberPortA and memberPortB. Every import thus changes every member's datapath policy.
const importPolicyName = "bench-import"

const importPolicyYAML = `apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: ` + importPolicyName + `
spec:
  endpointSelector:
    matchLabels:
      bench: agent
  ingress:
  - fromEndpoints:
    - matchLabels:
        bench: agent
    toPorts:
    - ports:
      - port: "%d"
        protocol: TCP
  egress:
  - toEndpoints:
    - matchLabels:
        bench: agent
`

// Figure 2's server admits clients of its namespace on serverPort.
const (
	createNamespace = "bench"
	serverRole      = "fig2-server"
	clientRole      = "fig2-client"
)

var createPolicyYAML = fmt.Sprintf(`apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: bench-create
  namespace: %s
spec:
  endpointSelector:
    matchLabels:
      role: %s
  ingress:
  - fromEndpoints:
    - matchLabels:
        role: %s
    toPorts:
    - ports:
      - port: "%d"
        protocol: TCP
`, createNamespace, serverRole, clientRole, serverPort)

// importPolicyKey is where the CLI stores figure 1's policy (agent.PolicyKey), for the harness's
// own watch that timestamps each import's commit.
var importPolicyKey = agent.PolicyKey(api.Key{Kind: api.KindCiliumClusterwideNetworkPolicy, Name: importPolicyName})

// policyFiles are the policy files the harness imports with the CLI.
type policyFiles struct {
	portA, portB string // figure 1, admitting members on memberPortA or memberPortB
	create       string // figure 2
}

func writePolicyFiles(dir string) (policyFiles, error) {
	f := policyFiles{
		portA:  filepath.Join(dir, "import-a.yaml"),
		portB:  filepath.Join(dir, "import-b.yaml"),
		create: filepath.Join(dir, "create.yaml"),
	}
	for path, doc := range map[string]string{
		f.portA:  fmt.Sprintf(importPolicyYAML, memberPortA),
		f.portB:  fmt.Sprintf(importPolicyYAML, memberPortB),
		f.create: createPolicyYAML,
	} {
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			return f, fmt.Errorf("write policy file: %w", err)
		}
	}
	return f, nil
}
