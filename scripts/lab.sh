#!/usr/bin/env bash
# The Halyard lab (main job): a router (BIRD 2, AS 65000) and a node running halyard-agent, each
# in its own network namespace, joined by a veth link; and a LAN bridge joining the node and a
# client, on which the node answers ARP for the LoadBalancer IPs. The agent allocates LoadBalancer IPs for
# the example manifests and advertises them to the router over BGP; the CLI shows both sides.
# Then the lab edits the manifests live (the router follows) and restarts the agent to show that
# no IP moves. Needs root (network namespaces).
# Installs the Debian packages it needs when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_packages "${BUILD_PACKAGES[@]}" bird2 iputils-arping
[ "$(id -u)" -eq 0 ] || { echo "the lab creates network namespaces: run it as root" >&2; exit 1; }
ensure_rust

echo ">> building halyard-agent and halyard (release)"
cargo build --release --locked -p halyard-agent -p halyard-cli
bin="${CARGO_TARGET_DIR:-target}/release"

work=$(mktemp -d /tmp/halyard-lab.XXXXXX)
rtr="hy-lab-$$-rtr"
node="hy-lab-$$-node"
lan="hy-lab-$$-lan"
cli="hy-lab-$$-cli"
agent_pid=""
bird_pid=""
cleanup() {
    for pid in $agent_pid $bird_pid; do
        if kill -0 "$pid" 2>/dev/null; then kill "$pid"; wait "$pid" 2>/dev/null || true; fi
    done
    for ns in "$rtr" "$node" "$lan" "$cli"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

cp -r examples/manifests "$work/manifests"
cp examples/lab-bgp.yaml "$work/manifests/"

# The topology: router (10.90.0.1) <-veth-> node (10.90.0.2).
ip netns add "$rtr"
ip netns add "$node"
ip -n "$rtr" link add eth0 type veth peer name eth0 netns "$node"
ip -n "$rtr" addr add 10.90.0.1/24 dev eth0
ip -n "$node" addr add 10.90.0.2/24 dev eth0
for ns in "$rtr" "$node"; do ip -n "$ns" link set lo up; ip -n "$ns" link set eth0 up; done
# The LAN: a bridge in its own namespace; the node's eth1 (10.91.0.2) and the client (10.91.0.10).
ip netns add "$lan"
ip netns add "$cli"
ip -n "$lan" link add br0 type bridge
ip -n "$lan" link set br0 up
ip -n "$node" link add eth1 type veth peer name p-node netns "$lan"
ip -n "$cli" link add eth0 type veth peer name p-cli netns "$lan"
for p in p-node p-cli; do ip -n "$lan" link set "$p" master br0; ip -n "$lan" link set "$p" up; done
ip -n "$node" addr add 10.91.0.2/24 dev eth1
ip -n "$cli" addr add 10.91.0.10/24 dev eth0
ip -n "$node" link set eth1 up
ip -n "$cli" link set lo up
ip -n "$cli" link set eth0 up
cat >"$work/bird.conf" <<'BIRD'
log stderr all;
router id 10.90.0.1;
protocol device { }
protocol bgp lab_node {
  local 10.90.0.1 as 65000;
  neighbor 10.90.0.2 as 65001;
  hold time 9;
  connect delay time 1; connect retry time 1; error wait time 1, 5;
  ipv4 { import all; export none; };
}
BIRD
ip netns exec "$rtr" bird -f -c "$work/bird.conf" -s "$work/bird.ctl" >"$work/bird.log" 2>&1 &
bird_pid=$!
birdc() { command birdc -s "$work/bird.ctl" "$@"; }
sock="$work/agent.sock"
metrics_port=$(( 20000 + RANDOM % 20000 ))
halyard() { "$bin/halyard" --socket "$sock" "$@"; }

start_agent() {
    ip netns exec "$node" "$bin/halyard-agent" --manifest-dir "$work/manifests" --state-dir "$work/state" \
        --socket "$sock" --metrics-addr "127.0.0.1:$metrics_port" --node-name lab-node >>"$work/agent.log" 2>&1 &
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
ip netns exec "$node" curl -fsS "127.0.0.1:$metrics_port/metrics" | grep -E '^halyard_lbipam_(ips_used|ips_available|services)'

step "BGP: halyard bgp peers (the node's side)"
for _ in $(seq 100); do halyard bgp peers | grep -q established && break; sleep 0.1; done
halyard bgp peers

step "BGP: the router learned the LB IPs (birdc show route)"
for _ in $(seq 50); do [ "$(birdc show route | grep -c '^172\.')" -ge 5 ] && break; sleep 0.1; done
birdc show route
birdc show route all 172.20.1.15/32 | grep -E 'BGP\.(as_path|community)'

step "L2: halyard l2 announcements (policy \"lan\" in announce.yaml: every ethN interface)"
for _ in $(seq 50); do halyard l2 announcements | grep -q eth1 && break; sleep 0.1; done
halyard l2 announcements

step "L2: the client resolves an LB IP with arping (on the bridge LAN)"
echo "node eth1 MAC: $(ip -n "$node" -br link show eth1 | awk '{print $3}')"
ip netns exec "$cli" arping -c 2 -I eth0 172.20.1.15

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
added=$(halyard service list -n web -o json | python3 -c 'import json,sys; print([s["ips"][0] for s in json.load(sys.stdin) if s["name"]=="added-live"][0])')
for _ in $(seq 50); do birdc show route | grep -q "^$added/32" && break; sleep 0.1; done
echo "router: $(birdc show route | grep "^$added/32")"

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
for _ in $(seq 100); do halyard bgp peers | grep -q established && break; sleep 0.1; done
halyard bgp peers

step "done (agent log: $(wc -l <"$work/agent.log") lines)"
