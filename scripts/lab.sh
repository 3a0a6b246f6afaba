#!/usr/bin/env bash
# The Halyard lab (main job). Today: one agent in standalone mode over the example manifest
# directory. It allocates LoadBalancer IPs, and the CLI shows them. Then the lab edits the
# manifests live and restarts the agent to show that no IP moves.
# Later capabilities grow this into a network-namespace topology (router, nodes, clients).
# Installs the Debian packages it needs when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_packages "${BUILD_PACKAGES[@]}"
ensure_rust

echo ">> building halyard-agent and halyard (release)"
cargo build --release --locked -p halyard-agent -p halyard-cli
bin="${CARGO_TARGET_DIR:-target}/release"

work=$(mktemp -d /tmp/halyard-lab.XXXXXX)
agent_pid=""
cleanup() {
    if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
        kill "$agent_pid"
        wait "$agent_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

cp -r examples/manifests "$work/manifests"
sock="$work/agent.sock"
metrics_port=$(( 20000 + RANDOM % 20000 ))
halyard() { "$bin/halyard" --socket "$sock" "$@"; }

start_agent() {
    "$bin/halyard-agent" --manifest-dir "$work/manifests" --state-dir "$work/state" --socket "$sock" \
        --metrics-addr "127.0.0.1:$metrics_port" --node-name lab-node >>"$work/agent.log" 2>&1 &
    agent_pid=$!
    for _ in $(seq 100); do
        halyard status >/dev/null 2>&1 && return 0
        kill -0 "$agent_pid" 2>/dev/null || { cat "$work/agent.log"; echo "agent exited" >&2; exit 1; }
        sleep 0.1
    done
    cat "$work/agent.log"; echo "agent did not come up" >&2; exit 1
}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "starting halyard-agent over $(ls "$work/manifests" | tr '\n' ' ')"
start_agent
halyard status

step "halyard service list"
halyard service list

step "halyard ipam pools"
halyard ipam pools

step "halyard node list"
halyard node list

step "metrics (curl 127.0.0.1:$metrics_port/metrics)"
curl -fsS "127.0.0.1:$metrics_port/metrics" | grep -E '^halyard_lbipam_(ips_used|ips_available|services)'

step "live edit: a new service file appears"
cat >"$work/manifests/new.yaml" <<'YAML'
apiVersion: v1
kind: Service
metadata:
  name: added-live
  namespace: web
spec:
  type: LoadBalancer
  ports: [{port: 8443}]
YAML
for _ in $(seq 50); do halyard service list -n web | grep -q 'added-live .*172\.' && break; sleep 0.1; done
halyard service list -n web

step "a broken edit is reported and the last good version stays in force"
sed -i 's#cidr: 172.20.0.0/28#cidr: 172.20.0.0/33#' "$work/manifests/pools.yaml"
for _ in $(seq 50); do halyard status | grep -q '1 errors' && break; sleep 0.1; done
halyard status | sed -n '/Problems/,$p'
halyard ipam pools

step "restart: every service keeps its IP"
before=$(halyard service list -o json)
kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true
start_agent
after=$(halyard service list -o json)
if [ "$before" = "$after" ]; then echo "identical assignments after restart"; else
    echo "assignments changed across restart:"; diff <(echo "$before") <(echo "$after") || true; exit 1; fi
halyard service list

step "done (agent log: $(wc -l <"$work/agent.log") lines)"
