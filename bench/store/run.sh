#!/bin/sh
# Store throughput: 16 concurrent writers creating 10,000 keys (1 KiB values), one list of all
# of them, and one write fanned out to 100 watchers — on the embedded store and on a
# throw-away etcd on loopback ports. Usage: bench/store/run.sh [txns] [writers]
# PROFILE=dev skips the (slow) release build. Results go to stdout; record them in
# bench/README.md with the machine they ran on.
set -eu
cd "$(dirname "$0")/../.."
TXNS=${1:-10000}
WRITERS=${2:-16}
PROFILE=${PROFILE:-release}
if [ "$PROFILE" = release ]; then FLAG=--release; DIR=release; else FLAG=; DIR=debug; fi
cargo build $FLAG -p svcnet-store --example store_bench
BIN=${CARGO_TARGET_DIR:-target}/$DIR/examples/store_bench

echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
# The floor for any durable commit on this disk: synchronous 4 KiB writes.
TMP=$(mktemp -d)
trap 'kill $ETCD_PID 2>/dev/null || true; rm -rf "$TMP"' EXIT
dd if=/dev/zero of="$TMP/dsync" bs=4k count=200 oflag=dsync 2>&1 | tail -1 | sed 's/^/# dsync 4k x200: /'

"$BIN" embedded "$WRITERS" "$TXNS" 1024 100

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PEER=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
etcd --name b --data-dir "$TMP/etcd" --listen-client-urls "http://127.0.0.1:$PORT" \
  --advertise-client-urls "http://127.0.0.1:$PORT" --listen-peer-urls "http://127.0.0.1:$PEER" \
  --initial-advertise-peer-urls "http://127.0.0.1:$PEER" --initial-cluster "b=http://127.0.0.1:$PEER" \
  >"$TMP/etcd.log" 2>&1 &
ETCD_PID=$!
i=0
until etcdctl --endpoints "127.0.0.1:$PORT" --command-timeout=1s endpoint health >/dev/null 2>&1; do
  i=$((i + 1)); [ $i -lt 300 ] || { echo "etcd did not start" >&2; exit 1; }; sleep 0.1
done
"$BIN" "etcd:http://127.0.0.1:$PORT" "$WRITERS" "$TXNS" 1024 100
