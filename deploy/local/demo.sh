#!/usr/bin/env bash
# The Star Wars demo on a two-node playground cluster (run by `make demo`, as root).
# Everything runs in network namespaces on this machine and is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."

B=${PALISADE:-bin/palisade}
D=${PALISADE_DEMO_DIR:-/run/palisade-demo}
KV=(--kvstore-endpoints "unix://$D/etcd.sock")

cleanup() { "$B" dev down --dir "$D" >/dev/null 2>&1 || true; }
trap cleanup EXIT
[ -e "$D/state.json" ] && cleanup

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
dev() { "$B" dev "$@" --dir "$D"; }

step "Start a cluster of two nodes (etcd and one agent per node, each in its own namespace)"
dev up --nodes 2

step "Run the workloads: a deathstar on each node, a tiefighter and an xwing"
dev endpoint add deathstar-1 --node node1 --labels org=empire,class=deathstar,app.kubernetes.io/name=deathstar --workload deathstar
dev endpoint add deathstar-2 --node node2 --labels org=empire,class=deathstar,app.kubernetes.io/name=deathstar --workload deathstar
dev endpoint add tiefighter --node node2 --labels org=empire,class=tiefighter,app.kubernetes.io/name=tiefighter
dev endpoint add xwing --node node1 --labels org=alliance,class=xwing,app.kubernetes.io/name=xwing
dev status
for ds in deathstar-1 deathstar-2; do
  for _ in $(seq 50); do
    dev request --from tiefighter --to "$ds" / --timeout 1s | grep -qv "timed out\|error" && break
    sleep 0.2
  done
done

landings() {
  printf '%-12s %-12s %s\n' SHIP DEATHSTAR "POST /v1/request-landing"
  for ship in tiefighter xwing; do
    for ds in deathstar-1 deathstar-2; do
      printf '%-12s %-12s %s\n' "$ship" "$ds" \
        "$(dev request --from "$ship" --to "$ds" -X POST /v1/request-landing --timeout 2s | sed 's/.*: //')"
    done
  done
}

step "No policy yet: every ship lands"
landings

step "Import examples/starwars/l3-l4.yaml: only org=empire may reach the deathstar on port 80"
cat examples/starwars/l3-l4.yaml
"$B" policy import -f examples/starwars/l3-l4.yaml "${KV[@]}"
"$B" monitor --type drop --socket "$D/node1.sock" > "$D/drops.txt" 2>&1 &
monitor=$!
sleep 1

step "With the policy: the tiefighter lands, the xwing is dropped in the kernel"
landings
kill "$monitor" 2>/dev/null || true
wait "$monitor" 2>/dev/null || true

step "What node1's datapath reported (palisade monitor --type drop)"
head -4 "$D/drops.txt"

step "Endpoints of node1 (palisade endpoint list)"
"$B" endpoint list --socket "$D/node1.sock"

step "Replace it with examples/starwars/l7.yaml: the tiefighter may only POST /v1/request-landing"
grep -A3 'http:' examples/starwars/l7.yaml | head -4
"$B" policy delete -f examples/starwars/l3-l4.yaml "${KV[@]}"
"$B" policy import -f examples/starwars/l7.yaml "${KV[@]}"
"$B" monitor --type l7 --socket "$D/node1.sock" > "$D/l7.txt" 2>&1 &
monitor=$!
for _ in $(seq 50); do
  dev request --from tiefighter --to deathstar-1 -X PUT /v1/exhaust-port --timeout 1s | grep -q "403" && break
  sleep 0.2
done

step "Through the L7 proxy: requests are judged one by one"
for ds in deathstar-1 deathstar-2; do
  printf '%-12s %-12s %-28s %s\n' tiefighter "$ds" "POST /v1/request-landing" \
    "$(dev request --from tiefighter --to "$ds" -X POST /v1/request-landing --timeout 2s | sed 's/.*: //')"
  printf '%-12s %-12s %-28s %s\n' tiefighter "$ds" "PUT /v1/exhaust-port" \
    "$(dev request --from tiefighter --to "$ds" -X PUT /v1/exhaust-port --timeout 2s | tr -d '\r' | sed 's/.*: //')"
done
printf '%-12s %-12s %-28s %s\n' xwing deathstar-1 "POST /v1/request-landing" \
  "$(dev request --from xwing --to deathstar-1 -X POST /v1/request-landing --timeout 2s | sed 's/.*: //')"
sleep 0.5
kill "$monitor" 2>/dev/null || true
wait "$monitor" 2>/dev/null || true

step "The proxy's access log on node1 (palisade monitor --type l7)"
grep -v "^$" "$D/l7.txt" | tail -4

step "Done: removing the playground"
