#!/bin/sh
# API server benchmark (issue 3): embedded vs etcd store, in one run.
#   - 10,000 Service creates with 16 concurrent clients (creates/s)
#   - list of the 10,000 (ms)
#   - one update seen by 100 watchers (p50/p99 fan-out latency)
# Usage: bench/api/run.sh [N] [CLIENTS] [WATCHERS]
# Everything runs on loopback; etcd (if installed) is started on free ports and stopped after.
set -eu
N=${1:-10000}
CLIENTS=${2:-16}
WATCHERS=${3:-100}
cd "$(dirname "$0")/../.."
cargo build --release -q -p svcnet-apiserver --example bench
BIN=${CARGO_TARGET_DIR:-target}/release/examples/bench
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -r)"
"$BIN" embedded "$N" "$CLIENTS" "$WATCHERS"
if command -v etcd >/dev/null 2>&1; then
    dir=$(mktemp -d)
    port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
    cport=$(port); pport=$(port); mport=$(port)
    etcd --name bench --data-dir "$dir/etcd" \
        --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
        --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
        --initial-cluster "bench=http://127.0.0.1:$pport" --listen-metrics-urls "http://127.0.0.1:$mport" \
        >"$dir/etcd.log" 2>&1 &
    etcd_pid=$!
    trap 'kill $etcd_pid 2>/dev/null; wait $etcd_pid 2>/dev/null; rm -rf "$dir"' EXIT
    i=0
    until python3 -c "import socket; socket.create_connection(('127.0.0.1',$cport),1)" 2>/dev/null; do
        i=$((i+1)); [ $i -lt 200 ] || { echo "etcd did not start"; exit 1; }; sleep 0.1
    done
    "$BIN" "etcd:http://127.0.0.1:$cport" "$N" "$CLIENTS" "$WATCHERS"
else
    echo "etcd not installed: etcd figures skipped"
fi
