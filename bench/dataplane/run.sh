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
# Prints "<wall>s (cpu <user+sys>s)": on a shared machine the CPU time is the steadier figure.
timed() {
  /usr/bin/time -f "%e %U %S" -o "$run/time" ip netns exec "$ns" "$@" >/dev/null
  awk '{ printf "%.3fs (cpu %.3fs)", $1, $2 + $3 }' "$run/time"
}

for n in "${sizes[@]}"; do
  "$gen" --style nft --variant full -n "$n" > "$run/svcnet.nft"
  "$gen" --style nft --variant update -n "$n" > "$run/svcnet-upd.nft"
  # The benchmark's services are TCP; for the first-packet probe, add a UDP copy of the last one.
  fresh
  full=$(timed nft -f "$run/svcnet.nft")
  change=$(timed nft -f "$run/svcnet-upd.nft")
  echo "svcnet-nftables n=$n full=${full} change=${change}"
  fresh
  python3 "$kp" --style nft --variant full -n "$n" -o "$run/kp.nft"
  python3 "$kp" --style nft --variant incr-svc -n "$n" -o "$run/kp-upd.nft"
  if [ "$n" -le "${KP_NFT_MAX:-1000}" ]; then
    full=$(timed nft -f "$run/kp.nft")
    change=$(timed nft -f "$run/kp-upd.nft")
    echo "kube-proxy-nftables n=$n full=${full} change=${change}"
  else
    echo "kube-proxy-nftables n=$n skipped (201 s full load measured before; KP_NFT_MAX=$n to run)"
  fi
  if [ "$n" -gt "${IPT_MAX:-1000}" ]; then
    echo "iptables n=$n skipped (IPT_MAX=$n to run)"
    continue
  fi
  fresh
  python3 "$kp" --style ipt --variant full -n "$n" -o "$run/kp.ipt"
  python3 "$kp" --style ipt --variant partial -n "$n" -o "$run/kp-upd.ipt"
  full=$(timed iptables-restore --noflush "$run/kp.ipt")
  change=$(timed iptables-restore --noflush "$run/kp-upd.ipt")
  echo "kube-proxy-iptables n=$n full=${full} change=${change}"
  fresh
  "$gen" --style ipt --variant full -n "$n" > "$run/svcnet.ipt"
  "$gen" --style ipt --variant update -n "$n" > "$run/svcnet-upd.ipt"
  full=$(timed iptables-restore --noflush "$run/svcnet.ipt")
  change=$(timed iptables-restore --noflush "$run/svcnet-upd.ipt")
  echo "svcnet-iptables n=$n full=${full} change=${change}"
done
