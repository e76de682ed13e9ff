#!/usr/bin/env bash
# L4 proxy benchmark: direct vs HAProxy (1 thread, mode tcp, roundrobin) vs nginx stream
# (1 worker) vs svcnet's userspace data plane, over three nginx HTTP backends on loopback.
# Same run, same pinning: the load generator on CPU 0, proxies and backends on CPU 1.
# Measures wrk keep-alive (50 connections), wrk with "Connection: close", iperf3 bulk.
# The peers' configurations are bench/l4/peers/ (copies of the project's reference peers).
# Traffic stays on 127.0.0.0/8. Everything started here is stopped on exit.
#
# Needs: haproxy nginx wrk iperf3 taskset (apt-get install -y haproxy nginx libnginx-mod-stream wrk iperf3), and a
# release svcnet (cargo build --release -p svcnet), or SVCNET=/path/to/svcnet.
# Usage: bench/l4/run.sh [seconds per wrk run, default 10]
# Knobs (environment): BULK_SECONDS (iperf3 run, default 5); TARGETS (space-separated subset of
# "direct haproxy haproxy-splice nginx-stream svcnet-userspace svcnet-compare"); SVCNET_COMPARE
# (a second svcnet binary, e.g. an older build, measured in the same run as "svcnet-compare");
# PROFILE=DIR (records `perf record -g` and per-syscall counts of each proxy process during its
# wrk runs into DIR, listed in DIR/index.txt; the figures of such a run are perturbed).
set -euo pipefail

DURATION="${1:-10}"
BULK_SECONDS="${BULK_SECONDS:-5}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PEERS="$ROOT/bench/l4/peers"
SVCNET="${SVCNET:-${CARGO_TARGET_DIR:-$ROOT/target}/release/svcnet}"
SVCNET_COMPARE="${SVCNET_COMPARE:-}"
DEFAULT_TARGETS="direct haproxy haproxy-splice nginx-stream svcnet-userspace"
[ -n "$SVCNET_COMPARE" ] && DEFAULT_TARGETS="$DEFAULT_TARGETS svcnet-compare"
TARGETS="${TARGETS:-$DEFAULT_TARGETS}"
WORK="$(mktemp -d /tmp/svcnet-bench-l4.XXXXXX)"
GEN_CPU=0
SUT_CPU=1
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

for tool in haproxy nginx wrk iperf3 taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y haproxy nginx libnginx-mod-stream wrk iperf3)" >&2; exit 1; }
done
[ -x "$SVCNET" ] || { echo "missing $SVCNET (cargo build --release -p svcnet)" >&2; exit 1; }

wait_port() { # host port
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing listens on $1:$2" >&2; exit 1
}

peer_config() { # name → path of the config with @RUNDIR@ filled in
  sed "s|@RUNDIR@|$WORK|g" "$PEERS/$1" > "$WORK/$1"
  echo "$WORK/$1"
}

# Backends: one nginx worker, three listeners 127.0.0.1:18081-18083 answering "ok".
taskset -c "$SUT_CPU" nginx -c "$(peer_config nginx-backend.conf)" -p "$WORK" -g 'daemon off;' &
PIDS+=($!)
BACKEND_PID=$!
taskset -c "$SUT_CPU" iperf3 -s -B 127.0.0.1 -p 15201 >/dev/null 2>&1 &
PIDS+=($!)

# HAProxy: one thread, mode tcp, round robin on :18090; iperf3 relays :18091 (plain), :18094 (splice).
taskset -c "$SUT_CPU" haproxy -f "$(peer_config haproxy.cfg)" -db >/dev/null 2>&1 &
PIDS+=($!)
HAPROXY_PID=$!

# nginx stream: one worker, round robin on :18092; iperf3 relay :18093.
taskset -c "$SUT_CPU" nginx -c "$(peer_config nginx-stream.conf)" -p "$WORK" -g 'daemon off;' &
PIDS+=($!)
NGINX_STREAM_PID=$!

# svcnet userspace: a ClusterIP Service (round robin) and a bulk Service, from a file.
svcnet_objects() { # http-address bulk-address
  cat <<CONF
apiVersion: v1
kind: Service
metadata: {name: http, namespace: bench, annotations: {svcnet.io/scheduler: round-robin}}
spec: {clusterIP: $1, ports: [{port: 18092}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: http-1, namespace: bench, labels: {kubernetes.io/service-name: http}}
addressType: IPv4
ports: [{port: 18081}]
endpoints: [{addresses: [127.0.0.1]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: http-2, namespace: bench, labels: {kubernetes.io/service-name: http}}
addressType: IPv4
ports: [{port: 18082}]
endpoints: [{addresses: [127.0.0.1]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: http-3, namespace: bench, labels: {kubernetes.io/service-name: http}}
addressType: IPv4
ports: [{port: 18083}]
endpoints: [{addresses: [127.0.0.1]}]
---
apiVersion: v1
kind: Service
metadata: {name: bulk, namespace: bench}
spec: {clusterIP: $2, ports: [{port: 18192}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bulk-1, namespace: bench, labels: {kubernetes.io/service-name: bulk}}
addressType: IPv4
ports: [{port: 15201}]
endpoints: [{addresses: [127.0.0.1]}]
CONF
}
start_svcnet() { # binary objects-file
  SVCNET_LOG=warn taskset -c "$SUT_CPU" "$1" proxy --objects "$2" --node-name bench \
    --dataplane userspace --once --metrics-bind-address "" --healthz-bind-address "" &
  PIDS+=($!)
  LAST_SVCNET_PID=$!
}
svcnet_objects 127.0.0.200 127.0.0.201 > "$WORK/objects.yaml"
start_svcnet "$SVCNET" "$WORK/objects.yaml"
SVCNET_PID=$LAST_SVCNET_PID
if [ -n "$SVCNET_COMPARE" ]; then
  svcnet_objects 127.0.0.210 127.0.0.211 > "$WORK/objects-compare.yaml"
  start_svcnet "$SVCNET_COMPARE" "$WORK/objects-compare.yaml"
  SVCNET_COMPARE_PID=$LAST_SVCNET_PID
  wait_port 127.0.0.210 18092; wait_port 127.0.0.211 18192
fi

wait_port 127.0.0.1 18081; wait_port 127.0.0.1 18090; wait_port 127.0.0.1 18092
wait_port 127.0.0.200 18092; wait_port 127.0.0.201 18192; wait_port 127.0.0.1 15201

# CPU time (clock ticks) used so far by these processes and their children (nginx workers).
cpu_ticks() { # pid...
  local pids=("$@") pid total=0
  for pid in "$@"; do pids+=($(pgrep -P "$pid" || true)); done
  for pid in "${pids[@]}"; do
    [ -r "/proc/$pid/stat" ] || continue
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))
# Busy share (%) of CPU $SUT_CPU between two /proc/stat snapshots.
cpu_line() { awk -v cpu="cpu$SUT_CPU" '$1 == cpu {idle = $5 + $6; total = 0; for (i = 2; i <= 9; i++) total += $i; print total, idle}' /proc/stat; }

# wrk: prints "req/s p99 proxy-CPU-µs-per-request SUT-CPU-busy-%". With PROFILE and
# PROFILE_PID set, perf watches that process.
PROFILE="${PROFILE:-}"
PROFILE_PID=
CPU_PIDS=()
run_wrk() { # url [extra wrk args]
  local url="$1"; shift
  local ticks_before sut_before
  ticks_before="$(cpu_ticks "${CPU_PIDS[@]}")"
  sut_before="$(cpu_line)"
  local perf_pids=()
  if [ -n "$PROFILE" ] && [ -n "$PROFILE_PID" ]; then
    local tag; tag="$(date +%s%N)"
    perf record -g -p "$PROFILE_PID" -o "$PROFILE/record-$tag.data" -- sleep "$DURATION" >/dev/null 2>&1 &
    perf_pids+=($!)
    perf stat -e 'syscalls:sys_enter_*' -p "$PROFILE_PID" -o "$PROFILE/syscalls-$tag.txt" -- sleep "$DURATION" >/dev/null 2>&1 &
    perf_pids+=($!)
    echo "$tag $url $*" >> "$PROFILE/index.txt"
  fi
  taskset -c "$GEN_CPU" wrk -t1 -c50 -d"${DURATION}s" --latency "$@" "$url" > "$WORK/wrk.out" 2>&1 || true
  for pid in "${perf_pids[@]}"; do wait "$pid" || true; done
  local ticks sut_after
  ticks=$(( $(cpu_ticks "${CPU_PIDS[@]}") - ticks_before ))
  sut_after="$(cpu_line)"
  local rps p99
  rps="$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.out")"
  p99="$(awk '$1 == "99%" {print $2}' "$WORK/wrk.out")"
  grep -E 'Socket errors|Non-2xx' "$WORK/wrk.out" | sed "s|^|# $url $*: |" >&2 || true
  local per_req busy
  per_req="$(awk -v t="$ticks" -v us="$TICK_US" -v r="${rps:-0}" -v d="$DURATION" 'BEGIN { if (r > 0) printf "%.1f", t * us / (r * d); else print "?" }')"
  busy="$(echo "$sut_before $sut_after" | awk '{ dt = $3 - $1; di = $4 - $2; if (dt > 0) printf "%.0f", 100 * (dt - di) / dt; else print "?" }')"
  echo "${rps:-?} ${p99:-?} $per_req $busy"
}

# iperf3 to a proxy address: prints Gbit/s received.
run_iperf_via() { # host port
  taskset -c "$GEN_CPU" iperf3 -c "$1" -p "$2" -t "$BULK_SECONDS" -J > "$WORK/iperf.json" 2>/dev/null || { echo "?"; return; }
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.1f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))' "$WORK/iperf.json"
}

echo "# L4 proxies, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(uname -r), wrk ${DURATION}s, iperf3 ${BULK_SECONDS}s"
echo "# haproxy $(haproxy -v | awk 'NR==1 {print $3}'), $(nginx -v 2>&1 | awk '{print $3}'), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| target | keep-alive req/s | keep-alive p99 | close req/s | close p99 | bulk Gbit/s | proxy CPU µs/req (ka / close) | CPU $SUT_CPU busy % (ka / close) |"
echo "|---|---|---|---|---|---|---|---|"
for target in $TARGETS; do
  case "$target" in
    direct) url=http://127.0.0.1:18081/; bulk_host=127.0.0.1; bulk_port=15201; CPU_PIDS=($BACKEND_PID) ;;
    haproxy) url=http://127.0.0.1:18090/; bulk_host=127.0.0.1; bulk_port=18091; CPU_PIDS=($HAPROXY_PID) ;;
    haproxy-splice) url=; bulk_host=127.0.0.1; bulk_port=18094 ;;
    nginx-stream) url=http://127.0.0.1:18092/; bulk_host=127.0.0.1; bulk_port=18093; CPU_PIDS=($NGINX_STREAM_PID) ;;
    svcnet-userspace) url=http://127.0.0.200:18092/; bulk_host=127.0.0.201; bulk_port=18192; CPU_PIDS=($SVCNET_PID) ;;
    svcnet-compare) url=http://127.0.0.210:18092/; bulk_host=127.0.0.211; bulk_port=18192; CPU_PIDS=($SVCNET_COMPARE_PID) ;;
    *) echo "unknown target $target" >&2; exit 1 ;;
  esac
  ka_rps=-; ka_p99=-; close_rps=-; close_p99=-; ka_cpu=-; close_cpu=-; ka_busy=-; close_busy=-
  PROFILE_PID="${CPU_PIDS[0]:-}"
  [ -n "$PROFILE" ] && mkdir -p "$PROFILE"
  if [ -n "$url" ]; then
    read -r ka_rps ka_p99 ka_cpu ka_busy < <(run_wrk "$url")
    read -r close_rps close_p99 close_cpu close_busy < <(run_wrk "$url" -H "Connection: close")
  fi
  bulk="$(run_iperf_via "$bulk_host" "$bulk_port")"
  echo "| $target | $ka_rps | $ka_p99 | $close_rps | $close_p99 | $bulk | $ka_cpu / $close_cpu | $ka_busy / $close_busy |"
done
