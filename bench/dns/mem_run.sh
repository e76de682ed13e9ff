#!/usr/bin/env bash
# Resident memory of `svcnet dns` in watch mode (`svcnet_dns::run`, the path `svcnet up` and
# the lab use) with SERVICES Services and PODS pods in an API server, verified pod records
# (so the pod watch runs). Loopback only; everything it starts is stopped at the end.
#
# Usage: SVCNET=path/to/svcnet LOAD=path/to/load_cluster bench/dns/mem_run.sh
#   SVCNET  a release build of the binary (cargo build --release -p svcnet)
#   LOAD    the loader example (cargo build -p svcnet-dns --example load_cluster)
#   SERVICES=10000 PODS=50000 by default (CoreDNS's guideline: 54 MB + 1 MB per 1,000).
# Not a timing benchmark: run it under /work/b, not /work/q (it loads the API server).
set -euo pipefail

SVCNET=${SVCNET:?set SVCNET to a release svcnet binary}
LOAD=${LOAD:?set LOAD to the load_cluster example}
SERVICES=${SERVICES:-10000}
PODS=${PODS:-50000}
WORK=$(mktemp -d /tmp/svcnet-dns-mem.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API_PORT=$(free_port)
DNS_PORT=$(free_port)
METRICS_PORT=$(free_port)
rss_mb() { awk -v key="$2:" '$1 == key {printf "%.1f", $2/1024}' "/proc/$1/status"; }

echo "== API server on 127.0.0.1:$API_PORT"
"$SVCNET" server --data-dir "$WORK/api" --listen "127.0.0.1:$API_PORT" --no-controllers \
    2> "$WORK/api.log" &
PIDS+=($!)
for _ in $(seq 1 300); do
    [ -s "$WORK/api/kubeconfig" ] && kubectl --kubeconfig "$WORK/api/kubeconfig" \
        --cache-dir "$WORK/kube-cache" get --raw /readyz > /dev/null 2>&1 && break
    sleep 0.1
done

echo "== loading $SERVICES Services and $PODS pods"
"$LOAD" "$WORK/api/kubeconfig" "$SERVICES" "$PODS"

echo "== svcnet dns --pods verified on 127.0.0.1:$DNS_PORT"
"$SVCNET" dns --kubeconfig "$WORK/api/kubeconfig" --listen "127.0.0.1:$DNS_PORT" \
    --metrics-address "127.0.0.1:$METRICS_PORT" --pods verified 2> "$WORK/dns.log" &
DNS_PID=$!
PIDS+=("$DNS_PID")
# The last pod's record answers once the whole initial sync is in the zone.
LAST=$((PODS - 1))
LAST_IP="10.$((244 + LAST / 65000)).$(((LAST / 250) % 256)).$((LAST % 250 + 1))"
LAST_NAME="${LAST_IP//./-}.ns-$((LAST % 100)).pod.cluster.local"
START=$(date +%s.%N)
for _ in $(seq 1 600); do
    if dig @127.0.0.1 -p "$DNS_PORT" +tries=1 +time=1 +short "$LAST_NAME" A | grep -q "$LAST_IP"; then
        break
    fi
    sleep 0.1
done
echo "synced in $(echo "$(date +%s.%N) - $START" | bc) s"
dig @127.0.0.1 -p "$DNS_PORT" +short "svc-$((SERVICES - 1)).ns-$(((SERVICES - 1) % 100)).svc.cluster.local" A
# Let the rebuild after the sync finish and its garbage be returned.
sleep 2
# Zone builds so far (the initial one, and one per coalesced batch of watch events).
curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | awk '
    /^svcnet_dns_programming_duration_seconds_sum/ {sum = $2}
    /^svcnet_dns_programming_duration_seconds_count/ {count = $2}
    END {if (count > 0) printf "zone builds: %d, mean %.1f ms\n", count, 1000 * sum / count}'
echo "svcnet dns (watch) RSS with $SERVICES Services + $PODS pods:" \
     "$(rss_mb "$DNS_PID" VmRSS) MB, peak $(rss_mb "$DNS_PID" VmHWM) MB" \
     "(CoreDNS guideline: $((54 + (SERVICES + PODS) / 1000)) MB)"
