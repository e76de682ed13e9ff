#!/usr/bin/env bash
# svcnet up latencies (issue 7): kubectl apply of a Deployment (3 replicas) + Service -> first
# successful answer from its ClusterIP, and Service selector change -> traffic follows.
# Loopback mode (userspace data plane) and, as root, root mode (nftables in svcnet's own
# network namespace; the measurement runs inside it via `svcnet up exec`).
#
# Build first, outside the quiet lock:   CARGO_TARGET_DIR=/work/targets/release cargo build --release -p svcnet
# Then:                                   /work/q bash bench/up/run.sh [ROUNDS] [CHANGES]
# Traffic goes only to 127.0.0.0/8 (loopback mode) or inside the namespace svcnet up creates.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
svcnet="${SVCNET:-${CARGO_TARGET_DIR:-/work/targets/release}/release/svcnet}"
rounds="${1:-5}"
changes="${2:-20}"
[ -x "$svcnet" ] || { echo "no release binary at $svcnet; build it first" >&2; exit 1; }
work="$(mktemp -d /tmp/svcnet-up-bench.XXXXXX)"
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -INT "$pid"; wait "$pid" || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "machine: nproc=$(nproc) kernel=$(uname -r) load=$(cut -d' ' -f1-3 /proc/loadavg)"
echo "binary: $svcnet"

# Starts `svcnet up "$@"` with DATA dir $1-suffixed and waits for its "svcnet is up" line.
start_up() {
  local mode="$1"; shift
  mkfifo "$work/$mode.fifo"
  SVCNET_LOG=warn "$svcnet" up --data-dir "$work/$mode" "$@" >"$work/$mode.fifo" 2>"$work/$mode.log" &
  pid=$!
  exec 3<"$work/$mode.fifo"
  while read -r line <&3; do
    case "$line" in "svcnet is up"*) break ;; esac
  done
  (cat <&3 >/dev/null &)
  exec 3<&-
}

stop_up() {
  kill -INT "$pid"; wait "$pid" || true; pid=""
}

port=$((20000 + RANDOM % 20000))
echo "== loopback mode (userspace data plane)"
start_up loopback --listen "127.0.0.1:$port"
# The svcnet binary's directory is first on PATH for pods (`svcnet echo`), and for kubectl here.
python3 "$here/up_latency.py" "$work/loopback/kubeconfig" "$rounds" "$changes"
stop_up

if [ "$(id -u)" = 0 ]; then
  for dp in nftables iptables; do
    echo "== root mode ($dp in svcnet's namespace)"
    start_up "root-$dp" --dataplane "$dp" --listen "127.0.0.1:$((port + 1))"
    "$svcnet" up exec --data-dir "$work/root-$dp" -- \
      python3 "$here/up_latency.py" "$work/root-$dp/kubeconfig" "$rounds" "$changes"
    stop_up
  done
fi
