#!/usr/bin/env bash
# The Halyard lab (main job): a router (BIRD 2, AS 65000) and a node running halyard-agent, each
# in its own network namespace, joined by a veth link; and a LAN bridge joining the node and a
# client, on which the node answers ARP for the LoadBalancer IPs. The agent allocates LoadBalancer IPs for
# the example manifests and advertises them to the router over BGP; the CLI shows both sides.
# The node also runs the XDP load balancer on the LAN: the client's TCP connections to a LAN
# LoadBalancer IP are spread with Maglev over three backends, which answer the client directly
# (DSR). Then the lab edits the manifests live (the router follows) and restarts the agent to show
# that no IP moves and no connection drops. Needs root (network namespaces).
# Installs the Debian packages it needs when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_packages "${BUILD_PACKAGES[@]}" bird2 iputils-arping ethtool tcpdump etcd-server etcd-client
[ "$(id -u)" -eq 0 ] || { echo "the lab creates network namespaces: run it as root" >&2; exit 1; }
ensure_rust

echo ">> building halyard-agent and halyard (release)"
cargo build --release --locked -p halyard-agent -p halyard-cli
cargo build --release --locked -p halyard-tests --bin lab-tcp --bin veth-xdp-pass
cargo build --release --locked -p halyard-clustermesh --bin clustermesh-apiserver
bin="${CARGO_TARGET_DIR:-target}/release"

work=$(mktemp -d /tmp/halyard-lab.XXXXXX)
rtr="hy-lab-$$-rtr"
node="hy-lab-$$-node"
lan="hy-lab-$$-lan"
cli="hy-lab-$$-cli"
agent_pid=""
bird_pid=""
backend_pids=""
backends=("hy-lab-$$-be1" "hy-lab-$$-be2" "hy-lab-$$-be3" "hy-lab-$$-ebe1")
backend_names=(backend-1 backend-2 backend-3 east-backend-1)
backend_ips=(10.91.0.21 10.91.0.22 10.91.0.23 10.91.0.31)
east="hy-lab-$$-east"
l2nodes=("hy-lab-$$-l2e" "hy-lab-$$-l2n1" "hy-lab-$$-l2n2" "hy-lab-$$-l2n3")
l2_pids=("" "" "")
cleanup() {
    for pid in $agent_pid $bird_pid $backend_pids "${l2_pids[@]}"; do
        [ -n "$pid" ] || continue
        if kill -0 "$pid" 2>/dev/null; then kill "$pid"; wait "$pid" 2>/dev/null || true; fi
    done
    for ns in "$rtr" "$node" "$lan" "$cli" "${backends[@]}" "$east" "${l2nodes[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    umount -l "$work/bpffs" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

cp -r examples/manifests "$work/manifests"
cp examples/lab-bgp.yaml examples/lab-lb.yaml "$work/manifests/"
# A bpffs of the lab's own for the datapath's pinned maps and links (visible inside `ip netns exec`).
mkdir -p "$work/bpffs"
mount -t bpf bpf "$work/bpffs"

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
# veth delivers the frames an XDP program sends back out (XDP_TX) only to a peer that runs XDP
# itself; a real NIC needs nothing of the kind.
ip netns exec "$lan" "$bin/veth-xdp-pass" p-node "$work/bpffs/p-node-pass"
# veth leaves TCP checksums to "hardware"; through XDP that promise is lost, so the client
# computes them in software, as every real wire has them.
ip netns exec "$cli" ethtool -K eth0 tx off >/dev/null
# Three backends on the LAN (10.91.0.21-23): each holds the service IP on lo (DSR: it answers as
# the VIP, and neither answers ARP for it nor uses it as an ARP source), serves TCP on :80, and runs the agent for DSR
# decapsulation only.
# The fourth (10.91.0.31) belongs to a second cluster, "east" (see below).
i=0
for be in "${backends[@]}"; do
    i=$((i + 1))
    ip netns add "$be"
    ip -n "$be" link add eth0 type veth peer name "p-be$i" netns "$lan"
    ip -n "$lan" link set "p-be$i" master br0
    ip -n "$lan" link set "p-be$i" up
    ip -n "$be" addr add "${backend_ips[$((i - 1))]}/24" dev eth0
    ip -n "$be" addr add 10.91.0.200/32 dev lo
    ip -n "$be" link set lo up
    ip -n "$be" link set eth0 up
    ip netns exec "$be" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
    ip netns exec "$be" "$bin/lab-tcp" serve 0.0.0.0:80 "${backend_names[$((i - 1))]}" >"$work/be$i.log" 2>&1 &
    backend_pids="$backend_pids $!"
    mkdir -p "$work/be$i"
    ip netns exec "$be" "$bin/halyard-agent" --manifest-dir "$work/be$i" --state-dir "$work/be$i/state" \
        --socket "$work/be$i.sock" --metrics-addr off --node-name "${backend_names[$((i - 1))]}" \
        --datapath-decap-interfaces eth0 --bpf-pin-dir "$work/bpffs/be$i" >>"$work/be$i-agent.log" 2>&1 &
    backend_pids="$backend_pids $!"
done
# Cluster "east": its own etcd and clustermesh-apiserver (10.91.0.40), publishing its global
# service lab/echo, whose one backend is 10.91.0.31. The node (cluster "lab") follows east's etcd
# and adds east's backend to its own lab/echo (also global).
ip netns add "$east"
ip -n "$east" link add eth0 type veth peer name p-east netns "$lan"
ip -n "$lan" link set p-east master br0
ip -n "$lan" link set p-east up
ip -n "$east" addr add 10.91.0.40/24 dev eth0
ip -n "$east" link set lo up
ip -n "$east" link set eth0 up
ip netns exec "$east" etcd --name east --data-dir "$work/east-etcd" \
    --listen-client-urls http://10.91.0.40:2379 --advertise-client-urls http://10.91.0.40:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster east=http://127.0.0.1:2380 --log-level error >"$work/east-etcd.log" 2>&1 &
backend_pids="$backend_pids $!"
mkdir -p "$work/east" "$work/mesh"
cat >"$work/east/echo.yaml" <<'YAML'
apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: lab
  annotations: {service.cilium.io/global: "true"}
spec:
  ports: [{name: tcp, port: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-east
  namespace: lab
  labels: {kubernetes.io/service-name: echo}
addressType: IPv4
ports: [{name: tcp, port: 80, protocol: TCP}]
endpoints:
  - addresses: ["10.91.0.31"]
---
apiVersion: v1
kind: Pod
metadata:
  name: echo-east-1
  namespace: lab
  labels: {app: echo}
status: {phase: Running, hostIP: 10.91.0.40, podIP: 10.91.0.31}
YAML
ip netns exec "$east" "$bin/clustermesh-apiserver" --cluster-name east --cluster-id 2 \
    --manifest-dir "$work/east" --etcd-endpoints http://10.91.0.40:2379 >"$work/east-apiserver.log" 2>&1 &
backend_pids="$backend_pids $!"
printf 'endpoints:\n- http://10.91.0.40:2379\n' >"$work/mesh/east"
cat >"$work/bird.conf" <<'BIRD'
log stderr all;
router id 10.90.0.1;
protocol device { }
protocol bgp lab_node {
  local 10.90.0.1 as 65000;
  neighbor 10.90.0.2 as 65001;
  hold time 9;
  connect delay time 1; connect retry time 1; error wait time 1, 5;
  ipv4 { import all; export where proto = "upstream"; };
}
# A network behind the router, sent to the node (which installs it with --bgp-import).
protocol static upstream {
  ipv4;
  route 10.250.0.0/24 blackhole;
}
BIRD
ip netns exec "$rtr" ip addr add 10.250.0.1/32 dev lo
ip netns exec "$rtr" bird -f -c "$work/bird.conf" -s "$work/bird.ctl" >"$work/bird.log" 2>&1 &
bird_pid=$!
birdc() { command birdc -s "$work/bird.ctl" "$@"; }
sock="$work/agent.sock"
metrics_port=$(( 20000 + RANDOM % 20000 ))
halyard() { "$bin/halyard" --socket "$sock" "$@"; }

start_agent() {
    ip netns exec "$node" "$bin/halyard-agent" --manifest-dir "$work/manifests" --state-dir "$work/state" \
        --socket "$sock" --metrics-addr "127.0.0.1:$metrics_port" --node-name lab-node \
        --datapath-interfaces eth1 --bpf-pin-dir "$work/bpffs/node" --node-ipv4 10.91.0.2 \
        --cluster-name lab --cluster-id 1 --clustermesh-config "$work/mesh" \
        --bgp-import --bgp-import-prefixes 10.250.0.0/16 >>"$work/agent.log" 2>&1 &
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

step "BGP import: the route the router sent, in the node's kernel (--bgp-import, protocol 73)"
for _ in $(seq 50); do ip netns exec "$node" ip route show proto 73 | grep -q 10.250.0.0 && break; sleep 0.1; done
halyard bgp routes received
ip netns exec "$node" ip route show proto 73
ip netns exec "$node" ping -c 1 -W 2 10.250.0.1 | grep -E 'bytes from|packet loss'

step "L2: halyard l2 announcements (policy \"lan\" in announce.yaml: every ethN interface)"
for _ in $(seq 50); do halyard l2 announcements | grep -q eth1 && break; sleep 0.1; done
halyard l2 announcements

step "L2: the client resolves an LB IP with arping (on the bridge LAN)"
echo "node eth1 MAC: $(ip -n "$node" -br link show eth1 | awk '{print $3}')"
ip netns exec "$cli" arping -c 2 -I eth0 172.20.1.15

step "ClusterMesh: halyard clustermesh status (the node follows cluster east's etcd)"
for _ in $(seq 100); do halyard clustermesh status | grep -q '1/1 remote clusters ready' && break; sleep 0.1; done
halyard clustermesh status
echo "east's pod as published in east's etcd (its identity from cluster 2's range, 2 << 16):"
ip netns exec "$east" env ETCDCTL_API=3 etcdctl --endpoints http://10.91.0.40:2379 get --prefix cilium/state/identities/v1/id/
ip netns exec "$east" env ETCDCTL_API=3 etcdctl --endpoints http://10.91.0.40:2379 get cilium/state/ip/v1/default/10.91.0.31 --print-value-only

step "XDP load balancer: halyard bpf lb list (lab/echo: three local backends and east's one, with Maglev shares)"
for _ in $(seq 100); do halyard bpf lb list 2>/dev/null | grep -q 10.91.0.31 && break; sleep 0.1; done
halyard bpf lb list | grep -E 'FRONTEND|10\.91\.0\.200' -A3

step "the client opens 40 TCP connections to 10.91.0.200:80 (ARP from the node, Maglev, Geneve DSR)"
ip netns exec "$cli" "$bin/lab-tcp" probe 10.91.0.200:80 1 >/dev/null || true
ip netns exec "$cli" timeout 4 tcpdump -i eth0 -n -e -c 6 'tcp and src host 10.91.0.200' >"$work/dsr.txt" 2>/dev/null &
tcpdump_pid=$!
sleep 0.5
ip netns exec "$cli" "$bin/lab-tcp" probe 10.91.0.200:80 40 | sort | uniq -c | tee "$work/probe.txt"
wait "$tcpdump_pid" 2>/dev/null || true
if [ "$(grep -c backend- "$work/probe.txt")" -lt 4 ] || grep -q error "$work/probe.txt"; then
    echo "the load balancer did not spread the connections over the four backends of both clusters" >&2
    halyard bpf counters >&2
    exit 1
fi

step "DSR: the replies come straight from the backends (source MACs seen by the client)"
for i in 1 2 3 4; do printf '%-15s MAC: %s\n' "${backend_names[$((i - 1))]}" "$(ip -n "${backends[$((i - 1))]}" -br link show eth0 | awk '{print $3}')"; done
printf '%-15s MAC: %s (never a reply source)\n' node "$(ip -n "$node" -br link show eth1 | awk '{print $3}')"
awk '{print "  reply from", $2, "->", $4}' "$work/dsr.txt" | sort | uniq -c

step "halyard bpf ct list (conntrack: each flow stays on its backend) and counters"
halyard bpf ct list | head -6
halyard bpf counters | grep -vE ' 0 +0$'
halyard bpf maglev lab/echo --flow 10.91.0.10:40000 | tail -2

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
added=$(halyard service list -n web | awk '$2 == "added-live"' | grep -oE '172\.[0-9]+\.[0-9]+\.[0-9]+' | head -1)
for _ in $(seq 50); do birdc show route | grep -q "^$added/32" && break; sleep 0.1; done
echo "router: $(birdc show route | grep "^$added/32")"

step "a broken edit is reported and the last good version stays in force"
sed -i 's#cidr: 172.20.0.0/28#cidr: 172.20.0.0/33#' "$work/manifests/pools.yaml"
for _ in $(seq 50); do halyard status | grep -q '1 errors' && break; sleep 0.1; done
halyard status | sed -n '/Problems/,$p'
halyard ipam pools

step "restart: every service keeps its IP, and an open connection through the LB survives"
ip netns exec "$cli" "$bin/lab-tcp" hold 10.91.0.200:80 4 >"$work/hold.txt" 2>&1 &
hold_pid=$!
sleep 0.5
before=$(halyard service list -o json)
kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true
start_agent
after=$(halyard service list -o json)
if [ "$before" = "$after" ]; then echo "identical assignments after restart"; else
    echo "assignments changed across restart:"; diff <(echo "$before") <(echo "$after") || true; exit 1; fi
halyard service list
for _ in $(seq 100); do halyard bgp peers | grep -q established && break; sleep 0.1; done
halyard bgp peers
wait "$hold_pid" || { cat "$work/hold.txt"; echo "the connection broke across the restart" >&2; exit 1; }
echo "connection held across the restart: $(tr '\n' ' ' <"$work/hold.txt")"

step "L2 election: three more nodes on the LAN elect one owner for 10.91.0.250 (LAN heartbeats, etcd fencing)"
# Their own etcd (10.91.0.60) and three agents (10.91.0.61-63) in namespaces on the LAN bridge.
i=0
for ns in "${l2nodes[@]}"; do
    ip netns add "$ns"
    ip -n "$ns" link add eth0 type veth peer name "p-l2$i" netns "$lan"
    ip -n "$lan" link set "p-l2$i" master br0
    ip -n "$lan" link set "p-l2$i" up
    ip -n "$ns" addr add "10.91.0.6$i/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    i=$((i + 1))
done
ip netns exec "${l2nodes[0]}" etcd --name l2 --data-dir "$work/l2-etcd" \
    --listen-client-urls http://10.91.0.60:2379 --advertise-client-urls http://10.91.0.60:2379 \
    --listen-peer-urls http://127.0.0.1:2390 --initial-advertise-peer-urls http://127.0.0.1:2390 \
    --initial-cluster l2=http://127.0.0.1:2390 --log-level error >"$work/l2-etcd.log" 2>&1 &
backend_pids="$backend_pids $!"
l2_agent() { # index 1-3
    local n=$1
    mkdir -p "$work/l2n$n"
    cp examples/lab-l2-election.yaml "$work/l2n$n/"
    ip netns exec "${l2nodes[$n]}" "$bin/halyard-agent" --manifest-dir "$work/l2n$n" \
        --state-dir "$work/l2n$n/state" --socket "$work/l2n$n.sock" --metrics-addr off \
        --node-name "l2-node-$n" --l2-election etcd --l2-etcd-endpoints http://10.91.0.60:2379 \
        --l2-heartbeat-group 10.91.0.255:7946 >>"$work/l2n$n.log" 2>&1 &
    l2_pids[$((n - 1))]=$!
}
for n in 1 2 3; do l2_agent "$n"; done
l2_owner() { # prints the index (1-3) of the node that owns 10.91.0.250, if exactly one does
    local owners=""
    for n in 1 2 3; do
        [ -n "${l2_pids[$((n - 1))]}" ] || continue
        out=$("$bin/halyard" --socket "$work/l2n$n.sock" l2 announcements -o json 2>/dev/null || true)
        case "$out" in *"\"owner\": \"l2-node-$n\""*) owners="$owners $n" ;; esac
    done
    set -- $owners
    [ $# -eq 1 ] && echo "$1"
}
owner=""
for _ in $(seq 200); do owner=$(l2_owner || true); [ -n "$owner" ] && break; sleep 0.1; done
[ -n "$owner" ] || { tail -20 "$work"/l2n*.log; echo "no single L2 owner" >&2; exit 1; }
"$bin/halyard" --socket "$work/l2n$owner.sock" l2 announcements
echo "owner: l2-node-$owner, MAC $(ip -n "${l2nodes[$owner]}" -br link show eth0 | awk '{print $3}')"
ip netns exec "$cli" arping -c 2 -I eth0 10.91.0.250
# A ping makes the client's kernel resolve the address (nobody answers the ping itself: no
# service runs behind it here); the neighbour entry is what matters.
ip netns exec "$cli" ping -c 1 -W 1 10.91.0.250 >/dev/null 2>&1 || true
echo "client neighbour entry: $(ip -n "$cli" neigh show 10.91.0.250)"

step "L2 failover: the owner (l2-node-$owner) dies; the client's ARP moves to the next node"
ip -n "$lan" link set "p-l2$owner" down
kill -9 "${l2_pids[$((owner - 1))]}"; wait "${l2_pids[$((owner - 1))]}" 2>/dev/null || true
l2_pids[$((owner - 1))]=""
new=""
for _ in $(seq 200); do new=$(l2_owner || true); [ -n "$new" ] && [ "$new" != "$owner" ] && break; sleep 0.05; done
[ -n "$new" ] && [ "$new" != "$owner" ] || { tail -20 "$work"/l2n*.log; echo "no failover" >&2; exit 1; }
echo "new owner: l2-node-$new, MAC $(ip -n "${l2nodes[$new]}" -br link show eth0 | awk '{print $3}')"
"$bin/halyard" --socket "$work/l2n$new.sock" l2 announcements
ip netns exec "$cli" arping -c 2 -I eth0 10.91.0.250
echo "client neighbour entry (moved by the new owner's gratuitous ARP): $(ip -n "$cli" neigh show 10.91.0.250)"

step "done (agent log: $(wc -l <"$work/agent.log") lines)"
