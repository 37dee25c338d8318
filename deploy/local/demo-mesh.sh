#!/usr/bin/env bash
# The Star Wars scenario across three clusters connected in a cluster mesh (run by `make demo`
# after demo.sh, as root). Each cluster has its own etcd and mesh API server; a policy in cluster1
# admits cluster2's tiefighters by label and cluster. Everything runs in network namespaces on this
# machine and is removed at the end, also on an error or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/../.."

B=${PALISADE:-bin/palisade}
D=${PALISADE_MESH_DEMO_DIR:-/run/palisade-demo-mesh}
POLICY=examples/multicluster/cross-cluster-l7.yaml

# On failure the daemons' logs are kept (the playground's directory goes with `dev down`).
cleanup() {
  local rc=$?
  if [ "$rc" != 0 ] && [ -d "$D" ]; then
    local logs
    logs=$(mktemp -d /tmp/palisade-demo-mesh-logs.XXXXXX)
    cp "$D"/*.log "$logs"/ 2>/dev/null || true
    echo "the daemons' logs are in $logs" >&2
  fi
  "$B" dev down --dir "$D" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
[ -e "$D/state.json" ] && cleanup

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
dev() { "$B" dev "$@" --dir "$D"; }
# verdict FROM TO METHOD PATH [TIMEOUT]: what the request got, as "200 Ship landed", "403 Access
# denied" or "dropped (connection timed out)". Sent from inside FROM's network namespace.
verdict() {
  dev request --from "$1" --to "$2" -X "$3" "$4" --timeout "${5:-1s}" | tr -d '\r' | sed 's/^[^>]*-> [^:]*: //'
}
ms_now() { date +%s%3N; }

step "Start three clusters of two nodes: per cluster an etcd and a mesh API server, one agent per node"
dev up --clusters 3 --nodes 2

step "Run the workloads: a deathstar on both nodes of cluster1, a tiefighter and an xwing in cluster2, a tiefighter in cluster3"
dev endpoint add deathstar-1 --node c1n1 --labels org=empire,class=deathstar --workload deathstar
dev endpoint add deathstar-2 --node c1n2 --labels org=empire,class=deathstar --workload deathstar
dev endpoint add tiefighter --node c2n1 --labels org=empire,class=tiefighter
dev endpoint add xwing --node c2n2 --labels org=alliance,class=xwing
dev endpoint add tiefighter --node c3n1 --labels org=empire,class=tiefighter
dev status
echo "(the identity's upper bits are the cluster ID: cluster2's tiefighter and cluster3's differ)"
# The deathstars' servers start in the background: wait until both answer.
for ds in deathstar-1 deathstar-2; do
  dev request --from cluster2/tiefighter --to "$ds" /v1/ --until-status 200 --timeout 1s --within 10s >/dev/null
done

# The rows of examples/multicluster/README.md, against each deathstar.
ROWS=(
  "cluster2/tiefighter POST /v1/request-landing|200 Ship landed"
  "cluster2/tiefighter PUT /v1/exhaust-port|403 Access denied"
  "cluster2/xwing POST /v1/request-landing|dropped"
  "cluster3/tiefighter POST /v1/request-landing|dropped"
)
FAILED=0
table() {
  local expect=$1
  printf '%-20s %-26s %-12s %-32s %s\n' FROM REQUEST TO VERDICT "$([ "$expect" = yes ] && echo EXPECTED)"
  for ds in deathstar-1 deathstar-2; do
    for row in "${ROWS[@]}"; do
      read -r from method path <<<"${row%%|*}"
      got=$(verdict "$from" "cluster1/$ds" "$method" "$path")
      mark=""
      if [ "$expect" = yes ]; then
        want=${row#*|}
        case "$got" in "$want"*) mark="$want" ;; *) mark="$want  <-- MISMATCH"; FAILED=1 ;; esac
      fi
      printf '%-20s %-26s %-12s %-32s %s\n' "$from" "$method $path" "$ds" "$got" "$mark"
    done
  done
}

step "No policy yet: every ship reaches the deathstars across clusters (the exhaust port answers 503)"
table no

step "Import $POLICY into cluster1: only tiefighters of cluster2, only POST /v1/request-landing"
grep -A20 '^spec:' "$POLICY"
"$B" policy import -f "$POLICY" --kvstore-endpoints "$(dev kvstore --cluster cluster1)"
for _ in $(seq 30); do
  verdict cluster2/xwing cluster1/deathstar-1 POST /v1/request-landing 300ms | grep -q dropped && break
done

step "With the policy: the table of examples/multicluster/README.md"
table yes

step "A new tiefighter starts in cluster2 (with a label no ship had before, so a new identity too)"
t0=$(ms_now)
dev endpoint add tiefighter-2 --node c2n2 --labels org=empire,class=tiefighter,squadron=black
echo "created in $(($(ms_now) - t0)) ms; from now on it tries to land every 100 ms:"
if ! dev request --from cluster2/tiefighter-2 --to cluster1/deathstar-1 -X POST /v1/request-landing \
    --until-status 200 --timeout 100ms --within 10s; then
  echo "cluster2/tiefighter-2 did not land within 10 s  <-- MISMATCH"
  FAILED=1
fi
echo "(timed from when the endpoint was ready in cluster2; nothing restarted: cluster1's agents learned"
echo " the new identity and address from cluster2's mesh API server)"

step "How cluster1 sees the mesh (palisade clustermesh status on c1n1)"
"$B" clustermesh status --socket "$(dev socket --node c1n1)"

step "Done: removing the three clusters"
if [ "$FAILED" != 0 ]; then
  echo "some verdicts differ from examples/multicluster/README.md" >&2
  exit 1
fi
