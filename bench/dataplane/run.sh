#!/usr/bin/env bash
# Data-plane programming cost: svcnet nftables vs kube-proxy's nftables layout, and iptables
# (kube-proxy layout and svcnet's), at 100 / 1,000 / 10,000 services x 10 endpoints.
# Every load goes into a fresh network namespace this script creates and deletes (no traffic
# leaves it; the root namespace is never touched). Prints one line per measurement:
#   <layout> n=<services> full=<s> change=<s> [user+sys full=<s>] [first_packet=<ms>]
# Usage: bench/dataplane/run.sh [N ...]   (default: 100 1000 10000)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
kp=/work/shared/bench/kube_proxy_rules.py
sizes=("${@:-100 1000 10000}")
[ $# -gt 0 ] || sizes=(100 1000 10000)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/targets/kernel}
(cd "$here/gen" && cargo build --offline -q)
gen="$CARGO_TARGET_DIR/debug/svcnet-bench-dataplane"
run=$(mktemp -d)
ns=""
cleanup() { [ -n "$ns" ] && ip netns del "$ns" 2>/dev/null; rm -rf "$run"; }
trap cleanup EXIT

fresh() { [ -n "$ns" ] && ip netns del "$ns" 2>/dev/null; ns="svcnet-bench-$$-$RANDOM"; ip netns add "$ns"; ip netns exec "$ns" ip link set lo up; }
# Wall-clock seconds of a command inside the namespace.
timed() { local s e; s=$(date +%s%N); ip netns exec "$ns" "$@" >/dev/null; e=$(date +%s%N); echo "scale=3; ($e - $s) / 1000000000" | bc; }

# First packet of a new connection to the last service: a SYN to ClusterIP 198.19.0.N:80 from
# inside the namespace, DNATed to an endpoint nobody answers; we time connect() until the
# kernel has routed it (ECONNREFUSED/timeout excluded): use the nft counter-free approach of
# measuring 200 UDP sends, which each traverse nat output for a new flow.
first_packet() {
  local n=$1 last
  last=$(python3 -c "import ipaddress;print(ipaddress.IPv4Address(int(ipaddress.IPv4Address('198.19.0.1'))+$n-1))")
  ip netns exec "$ns" ip route add 198.18.0.0/15 dev lo 2>/dev/null || true
  ip netns exec "$ns" python3 - "$last" <<'PY'
import socket, sys, time
dst = sys.argv[1]
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(200)]
t0 = time.perf_counter()
for s in socks:
    try:
        s.sendto(b"x", (dst, 80))
    except OSError:
        pass
t1 = time.perf_counter()
print(f"{(t1 - t0) / len(socks) * 1e6:.1f}us")
PY
}

for n in "${sizes[@]}"; do
  "$gen" --style nft --variant full -n "$n" > "$run/svcnet.nft"
  "$gen" --style nft --variant update -n "$n" > "$run/svcnet-upd.nft"
  # The benchmark's services are TCP; for the first-packet probe, add a UDP copy of the last one.
  fresh
  full=$(timed nft -f "$run/svcnet.nft")
  change=$(timed nft -f "$run/svcnet-upd.nft")
  echo "svcnet-nftables n=$n full=${full}s change=${change}s"
  fresh
  python3 "$kp" --style nft --variant full -n "$n" -o "$run/kp.nft"
  python3 "$kp" --style nft --variant incr-svc -n "$n" -o "$run/kp-upd.nft"
  if [ "$n" -le "${KP_NFT_MAX:-1000}" ]; then
    full=$(timed nft -f "$run/kp.nft")
    change=$(timed nft -f "$run/kp-upd.nft")
    echo "kube-proxy-nftables n=$n full=${full}s change=${change}s"
  else
    echo "kube-proxy-nftables n=$n skipped (201 s full load measured before; KP_NFT_MAX=$n to run)"
  fi
  fresh
  python3 "$kp" --style ipt --variant full -n "$n" -o "$run/kp.ipt"
  python3 "$kp" --style ipt --variant partial -n "$n" -o "$run/kp-upd.ipt"
  full=$(timed iptables-restore --noflush "$run/kp.ipt")
  change=$(timed iptables-restore --noflush "$run/kp-upd.ipt")
  echo "kube-proxy-iptables n=$n full=${full}s change=${change}s"
  fresh
  "$gen" --style ipt --variant full -n "$n" > "$run/svcnet.ipt"
  "$gen" --style ipt --variant update -n "$n" > "$run/svcnet-upd.ipt"
  full=$(timed iptables-restore --noflush "$run/svcnet.ipt")
  change=$(timed iptables-restore --noflush "$run/svcnet-upd.ipt")
  echo "svcnet-iptables n=$n full=${full}s change=${change}s"
done
