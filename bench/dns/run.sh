#!/usr/bin/env bash
# dnsperf against svcnet-dns and unbound serving the same 10,000 Service names as local data,
# one after the other on this machine (loopback only). Prints QPS, latency percentiles and
# resident memory; also the memory of svcnet-dns with 10,000 Services and 50,000 pods.
#
# Usage: bench/dns/run.sh            (DURATION=10 seconds per run, RATE=20000 for latency)
#   SERVE=path/to/serve_static   a prebuilt release example (else it is built first)
#   BASELINE=1                   also run svcnet-dns without its answer cache and with one
#                                system call per datagram (the design before the cache)
#   PERF=path                    record a perf profile (call graphs) of svcnet-dns's
#                                throughput run into path
# svcnet-dns runs with its defaults: one UDP worker per CPU (nproc), recvmmsg batches of 32.
# Needs: dnsperf, unbound (apt-get install -y dnsperf unbound), python3, cargo; perf for PERF.
set -euo pipefail

DURATION=${DURATION:-10}
RATE=${RATE:-20000}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=$(mktemp -d /tmp/svcnet-dns-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SVCNET_PORT=$(free_port)
UNBOUND_PORT=$(free_port)

# SERVE=path/to/serve_static skips the build (e.g. a debug build for a quick check).
if [ -z "${SERVE:-}" ]; then
    echo "== building (release)"
    (cd "$ROOT" && cargo build --release -q -p svcnet-dns --example serve_static)
    TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
    SERVE="$TARGET_DIR/release/examples/serve_static"
fi

python3 "$HERE/gen.py" "$WORK" "$UNBOUND_PORT"

wait_dns() { # port name
    for _ in $(seq 1 200); do
        if dig @127.0.0.1 -p "$1" +tries=1 +time=1 +short "$2" A | grep -q .; then return 0; fi
        sleep 0.1
    done
    echo "server on port $1 did not answer" >&2
    return 1
}

rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# Throughput: 1 dnsperf thread, up to 500 queries in flight, for DURATION seconds.
# Latency: a fixed RATE with every query's latency printed (-v), then percentiles.
measure() { # name port pid
    local name=$1 port=$2 pid=$3
    local perf_pid=
    if [ -n "${PERF:-}" ] && [ "$name" = svcnet-dns ]; then
        perf record -q -F 999 -g -p "$pid" -o "$PERF" -- sleep "$DURATION" 2> "$WORK/perf.log" &
        perf_pid=$!
    fi
    dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries.txt" -l "$DURATION" -c 4 -T 1 -q 500 \
        > "$WORK/$name.throughput" 2>&1
    if [ -n "$perf_pid" ]; then wait "$perf_pid" || true; fi
    local qps lost
    qps=$(awk '/Queries per second/ {printf "%.0f", $4}' "$WORK/$name.throughput")
    lost=$(awk '/Queries lost/ {print $3, $4}' "$WORK/$name.throughput")
    dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries.txt" -l 5 -c 4 -T 1 -Q "$RATE" -v \
        > "$WORK/$name.latency" 2>&1
    local percentiles
    percentiles=$(awk '/^> / {print $NF * 1000}' "$WORK/$name.latency" | sort -g | awk '
        { v[NR] = $1 } END {
            if (NR == 0) { print "n/a"; exit }
            printf "p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms", v[int(NR*0.5)+1], v[int(NR*0.99)], v[int(NR*0.999)]
        }')
    printf '%-12s %8s QPS (lost %s)  at %s QPS: %s  RSS %s MB\n' \
        "$name" "$qps" "$lost" "$RATE" "$percentiles" "$(rss_mb "$pid")"
}

echo "== svcnet-dns ($(nproc) UDP workers) on 127.0.0.1:$SVCNET_PORT"
"$SERVE" "$WORK/objects.json" "127.0.0.1:$SVCNET_PORT" 2> "$WORK/svcnet.log" &
SVCNET_PID=$!
PIDS+=("$SVCNET_PID")
wait_dns "$SVCNET_PORT" svc-1.ns-1.svc.cluster.local
measure svcnet-dns "$SVCNET_PORT" "$SVCNET_PID"
kill "$SVCNET_PID"
wait "$SVCNET_PID" 2>/dev/null || true

if [ -n "${BASELINE:-}" ]; then
    echo "== svcnet-dns without answer cache, one system call per datagram"
    SVCNET_DNS_ANSWER_CACHE=0 SVCNET_DNS_UDP_BATCH=1 \
        "$SERVE" "$WORK/objects.json" "127.0.0.1:$SVCNET_PORT" 2> "$WORK/svcnet-base.log" &
    BASE_PID=$!
    PIDS+=("$BASE_PID")
    wait_dns "$SVCNET_PORT" svc-1.ns-1.svc.cluster.local
    measure svcnet-base "$SVCNET_PORT" "$BASE_PID"
    kill "$BASE_PID"
    wait "$BASE_PID" 2>/dev/null || true
fi

echo "== unbound (2 threads) on 127.0.0.1:$UNBOUND_PORT"
unbound -d -c "$WORK/unbound.conf" 2> "$WORK/unbound.log" &
UNBOUND_PID=$!
PIDS+=("$UNBOUND_PID")
wait_dns "$UNBOUND_PORT" svc-1.ns-1.svc.cluster.local
measure unbound "$UNBOUND_PORT" "$UNBOUND_PID"
kill "$UNBOUND_PID"

echo "== memory: svcnet-dns with 10,000 Services and 50,000 pods (verified pod records)"
mkdir -p "$WORK/pods"
python3 "$HERE/gen.py" "$WORK/pods" "$UNBOUND_PORT" 50000
"$SERVE" "$WORK/pods/objects.json" "127.0.0.1:$SVCNET_PORT" 2> "$WORK/svcnet-pods.log" &
PODS_PID=$!
PIDS+=("$PODS_PID")
wait_dns "$SVCNET_PORT" svc-1.ns-1.svc.cluster.local
dig @127.0.0.1 -p "$SVCNET_PORT" +short 10-244-0-1.ns-0.pod.cluster.local A > /dev/null
echo "svcnet-dns RSS with 10k Services + 50k pods: $(rss_mb "$PODS_PID") MB," \
     "peak $(awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$PODS_PID/status") MB" \
     "(CoreDNS guideline: 54 + 60 = 114 MB)"
