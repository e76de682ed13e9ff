#!/bin/bash
# Benchmark of the EndpointSlice controller with many Services (issue 4):
# starts `svcnet server --no-controllers` and `svcnet controllers` on loopback in a temporary
# directory, runs readiness_latency.py against them and stops both.
# Usage: bench/controllers/run.sh [--services N] [--pods N] [--flips N]
# Needs a built binary: cargo build --release -p svcnet (or set SVCNET=path).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
svcnet=${SVCNET:-$here/../../target/release/svcnet}
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$svcnet" server --no-controllers --data-dir "$dir" --listen "127.0.0.1:$port" 2>"$dir/server.log" &
pids+=($!)
for _ in $(seq 1 200); do [ -f "$dir/kubeconfig" ] && curl -sk "https://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
kc="$dir/kubeconfig"
"$svcnet" controllers --kubeconfig "$kc" --no-load-balancer --no-node-lifecycle 2>"$dir/controllers.log" &
pids+=($!)
ctl=$!
token=$(kubectl --kubeconfig "$kc" config view --raw -o jsonpath='{.users[0].user.token}')
kubectl --kubeconfig "$kc" config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$dir/ca.pem"
python3 "$here/readiness_latency.py" --server "https://127.0.0.1:$port" --token "$token" --ca "$dir/ca.pem" --controller-pid "$ctl" "$@"
