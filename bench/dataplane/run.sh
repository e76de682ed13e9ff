#!/usr/bin/env bash
# Data-plane programming cost and first-packet latency: svcnet nftables vs kube-proxy's
# nftables layout, and iptables (kube-proxy layout and svcnet's), at 100 / 1,000 / 10,000
# services x 10 endpoints.
#
# Every load goes into a fresh network namespace this script creates and deletes; the
# latency probe adds a client namespace joined to it by a veth pair (no default routes, no
# traffic leaves the two namespaces; the root namespace is never touched). Prints one line
# per layout and size:
#   <layout> n=<services> full=<s> (render <s> + load <s>) change=<ms> first_packet=<median/p90 us>
# "full" of svcnet is its render time (release build of the real renderer) plus the tool's
# load time; kube-proxy's figures are the load only (its generator is not its real code).
# "change" is the median of 5 loads of the one-service change transaction. Tool times are
# taken inside the namespace (`ip netns exec` start-up is not counted: the proxy runs there).
# Usage: bench/dataplane/run.sh [N ...]   (default: 100 1000 10000)
#   KP_NFT_MAX (default 1000): largest N for the kube-proxy nftables layout (201 s at 10,000).
#   IPT_MAX (default 10000), LOAD_TIMEOUT (default 60 s): iptables sizes and the cap of each
#   load (iptables-restore at 10,000 does not finish within it here; a whole run takes ~6 min,
#   so run `100 1000` and `10000` as two /work/q runs).
#   PROBES (default 300): connections per first-packet measurement.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kp=/work/shared/bench/kube_proxy_rules.py
sizes=("$@")
[ $# -gt 0 ] || sizes=(100 1000 10000)
probes=${PROBES:-300}
load_timeout=${LOAD_TIMEOUT:-60}
# The generator shares the release target dir (and its dependency builds) with the project.
target=${CARGO_TARGET_DIR:-/work/targets/release}
gen="$target/release/svcnet-bench-dataplane"
if [ ! -x "$gen" ] || [ -n "${BUILD:-}" ]; then
  (cd "$here/gen" && CARGO_TARGET_DIR=$target cargo build --release --offline -q)
fi
run=$(mktemp -d)
ns=""
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi
  if [ -n "$ns" ]; then ip netns del "$ns" 2>/dev/null || true; ip netns del "$ns-c" 2>/dev/null || true; fi
  rm -rf "$run"
  return 0
}
trap cleanup EXIT

fresh() {
  cleanup_ns
  # The kernel frees a deleted namespace's rules in the background; let it finish first.
  sleep 2
  ns="svcnet-bench-$$-$RANDOM"
  ip netns add "$ns"
  ip netns exec "$ns" ip link set lo up
}
cleanup_ns() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  server=""
  if [ -n "$ns" ]; then ip netns del "$ns" 2>/dev/null || true; ip netns del "$ns-c" 2>/dev/null || true; fi
  ns=""
  return 0
}
# Wall seconds of a command run inside the namespace (bash's EPOCHREALTIME around it, so
# `ip netns exec` start-up is not counted), or ">T" when it hit the cap.
clock='s=$EPOCHREALTIME; timeout "$T" "$@" >/dev/null || exit 1; e=$EPOCHREALTIME; echo "$s $e"'
timed() {
  if ip netns exec "$ns" env T="$load_timeout" bash -c "$clock" - "$@" >"$run/time"; then
    awk '{ printf "%.2f", $2 - $1 }' "$run/time"
  else
    echo ">$load_timeout"
  fi
}
# Median milliseconds (0.1 ms resolution) of 5 runs of a command inside the namespace.
timed5() {
  for _ in 1 2 3 4 5; do
    ip netns exec "$ns" env T="$load_timeout" bash -c "$clock" - "$@" | awk '{ printf "%.1f\n", ($2 - $1) * 1000 }'
  done | sort -n | sed -n 3p
}
# First-packet latency to the last Service (ClusterIP 198.19.0.1+N-1, tcp/80): a client
# namespace behind a veth pair sends new connections through the node namespace's
# PREROUTING rules to a listener on the last Service's backend addresses (local to the node
# namespace). Prints "<median>/<p90> us" or "failed".
first_packet() {
  local n=$1
  local vip
  vip=$(python3 -c "import ipaddress; print(ipaddress.IPv4Address('198.19.0.1') + $n - 1)")
  ip netns add "$ns-c"
  ip link add veth-bc netns "$ns-c" type veth peer name veth-bn netns "$ns"
  ip netns exec "$ns-c" ip link set lo up
  ip netns exec "$ns-c" ip addr add 198.18.254.2/24 dev veth-bc
  ip netns exec "$ns-c" ip link set veth-bc up
  ip netns exec "$ns-c" ip route add 198.19.0.0/16 via 198.18.254.1
  ip netns exec "$ns" ip addr add 198.18.254.1/24 dev veth-bn
  ip netns exec "$ns" ip link set veth-bn up
  # The last Service's 10 backends (same addressing as both generators), on lo.
  local port
  port=$(python3 - "$n" 2>"$run/backends" <<'PY'
import ipaddress, sys
n = int(sys.argv[1])
ports = set()
for j in range(10):
    e = (n - 1) * 10 + j
    print(ipaddress.IPv4Address("198.18.0.1") + e % 65000, file=sys.stderr)
    ports.add(8000 + e // 65000)
print(ports.pop())
PY
  )
  while read -r ip; do ip netns exec "$ns" ip addr add "$ip/32" dev lo; done <"$run/backends"
  ip netns exec "$ns" python3 "$here/first_packet.py" serve "$port" >"$run/serve" &
  server=$!
  for _ in $(seq 100); do grep -q ready "$run/serve" 2>/dev/null && break; sleep 0.05; done
  ip netns exec "$ns-c" python3 "$here/first_packet.py" probe "$vip" 80 "$probes" >"$run/probe"
  kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true
  server=""
  awk '{ split($1, a, "="); split($2, b, "="); split($3, c, "=");
         if (c[2] > 0) printf "%s/%s us (%s failed)", a[2], b[2], c[2]; else printf "%s/%s us", a[2], b[2] }' "$run/probe"
}
render_s() { sed -n 's/^render_s=//p' "$1"; }
sum() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a + b }'; }

for n in "${sizes[@]}"; do
  "$gen" --style nft --variant full -n "$n" >"$run/svcnet.nft" 2>"$run/r-full"
  "$gen" --style nft --variant update -n "$n" >"$run/svcnet-upd.nft" 2>"$run/r-upd"
  fresh
  load=$(timed nft -f "$run/svcnet.nft")
  fp=$(first_packet "$n")
  change=$(timed5 nft -f "$run/svcnet-upd.nft")
  echo "svcnet-nftables n=$n full=$(sum "$(render_s "$run/r-full")" "$load") s" \
    "(render $(render_s "$run/r-full") + load $load) change=${change} ms" \
    "(render $(render_s "$run/r-upd") s) first_packet=$fp"

  python3 "$kp" --style nft --variant full -n "$n" -o "$run/kp.nft"
  python3 "$kp" --style nft --variant incr-svc -n "$n" -o "$run/kp-upd.nft"
  if [ "$n" -le "${KP_NFT_MAX:-1000}" ]; then
    fresh
    load=$(timed nft -f "$run/kp.nft")
    fp=$(first_packet "$n")
    change=$(timed5 nft -f "$run/kp-upd.nft")
    echo "kube-proxy-nftables n=$n full=$load s change=${change} ms first_packet=$fp"
  else
    echo "kube-proxy-nftables n=$n skipped (201 s full load measured before; KP_NFT_MAX=$n to run)"
  fi

  if [ "$n" -gt "${IPT_MAX:-10000}" ]; then
    echo "iptables n=$n skipped (IPT_MAX=$n to run)"
    continue
  fi
  fresh
  python3 "$kp" --style ipt --variant full -n "$n" -o "$run/kp.ipt"
  python3 "$kp" --style ipt --variant partial -n "$n" -o "$run/kp-upd.ipt"
  load=$(timed iptables-restore --noflush "$run/kp.ipt")
  if [ "${load#>}" = "$load" ]; then
    fp=$(first_packet "$n")
    change=$(timed5 iptables-restore --noflush "$run/kp-upd.ipt")
  else
    fp=-
    change=-
  fi
  echo "kube-proxy-iptables n=$n full=$load s change=${change} ms first_packet=$fp"

  fresh
  "$gen" --style ipt --variant full -n "$n" >"$run/svcnet.ipt" 2>"$run/r-full"
  "$gen" --style ipt --variant update -n "$n" >"$run/svcnet-upd.ipt" 2>"$run/r-upd"
  load=$(timed iptables-restore --noflush "$run/svcnet.ipt")
  if [ "${load#>}" = "$load" ]; then
    ip netns exec "$ns" iptables -t nat -I PREROUTING -j SVNT-SERVICES
    fp=$(first_packet "$n")
    change=$(timed5 iptables-restore --noflush "$run/svcnet-upd.ipt")
  else
    fp=-
    change=-
  fi
  echo "svcnet-iptables n=$n full=$(sum "$(render_s "$run/r-full")" "${load#>}") s" \
    "(render $(render_s "$run/r-full") + load $load) change=${change} ms first_packet=$fp"
done
cleanup_ns
