#!/usr/bin/env bash
# L4 proxy benchmark: direct vs HAProxy (1 thread, mode tcp, roundrobin) vs nginx stream
# (1 worker) vs svcnet's userspace data plane, over three nginx HTTP backends on loopback.
# Same run, same pinning: the load generator on CPU 0, proxies and backends on CPU 1.
# Measures wrk keep-alive (50 connections), wrk with "Connection: close", iperf3 bulk.
# Traffic stays on 127.0.0.0/8. Everything started here is stopped on exit.
#
# Needs: haproxy nginx wrk iperf3 taskset (apt-get install -y haproxy nginx libnginx-mod-stream wrk iperf3), and a
# release svcnet (cargo build --release -p svcnet), or SVCNET=/path/to/svcnet.
# Usage: bench/l4/run.sh [seconds per wrk run, default 10]
set -euo pipefail

DURATION="${1:-10}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SVCNET="${SVCNET:-${CARGO_TARGET_DIR:-$ROOT/target}/release/svcnet}"
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

# Backends: one nginx, one worker, three ports answering a small body with keep-alive.
mkdir -p "$WORK/nginx-backends" "$WORK/nginx-stream"
cat > "$WORK/nginx-backends/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx-backends/pid;
error_log $WORK/nginx-backends/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $WORK/nginx-backends;
  proxy_temp_path $WORK/nginx-backends;
  fastcgi_temp_path $WORK/nginx-backends;
  uwsgi_temp_path $WORK/nginx-backends;
  scgi_temp_path $WORK/nginx-backends;
  server { listen 127.0.0.1:18081; location / { return 200 "backend-1\n"; } }
  server { listen 127.0.0.1:18082; location / { return 200 "backend-2\n"; } }
  server { listen 127.0.0.1:18083; location / { return 200 "backend-3\n"; } }
}
CONF
taskset -c "$SUT_CPU" nginx -c "$WORK/nginx-backends/nginx.conf" -p "$WORK/nginx-backends" &
PIDS+=($!)
taskset -c "$SUT_CPU" iperf3 -s -B 127.0.0.1 -p 15201 >/dev/null 2>&1 &
PIDS+=($!)

# HAProxy: one thread, mode tcp, round robin.
cat > "$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen http
  bind 127.0.0.1:18090
  balance roundrobin
  server b1 127.0.0.1:18081
  server b2 127.0.0.1:18082
  server b3 127.0.0.1:18083
listen bulk
  bind 127.0.0.1:18190
  server b1 127.0.0.1:15201
CONF
taskset -c "$SUT_CPU" haproxy -f "$WORK/haproxy.cfg" -db &
PIDS+=($!)

# nginx stream: one worker.
cat > "$WORK/nginx-stream/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
daemon off;
pid $WORK/nginx-stream/pid;
error_log $WORK/nginx-stream/error.log;
events { worker_connections 4096; }
stream {
  upstream http_backends { server 127.0.0.1:18081; server 127.0.0.1:18082; server 127.0.0.1:18083; }
  server { listen 127.0.0.1:18091; proxy_pass http_backends; }
  server { listen 127.0.0.1:18191; proxy_pass 127.0.0.1:15201; }
}
CONF
taskset -c "$SUT_CPU" nginx -c "$WORK/nginx-stream/nginx.conf" -p "$WORK/nginx-stream" &
PIDS+=($!)

# svcnet userspace: a ClusterIP Service (round robin) and a bulk Service, from a file.
cat > "$WORK/objects.yaml" <<CONF
apiVersion: v1
kind: Service
metadata: {name: http, namespace: bench, annotations: {svcnet.io/scheduler: round-robin}}
spec: {clusterIP: 127.0.0.200, ports: [{port: 18092}]}
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
spec: {clusterIP: 127.0.0.201, ports: [{port: 18192}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bulk-1, namespace: bench, labels: {kubernetes.io/service-name: bulk}}
addressType: IPv4
ports: [{port: 15201}]
endpoints: [{addresses: [127.0.0.1]}]
CONF
SVCNET_LOG=warn taskset -c "$SUT_CPU" "$SVCNET" proxy --objects "$WORK/objects.yaml" --node-name bench \
  --dataplane userspace --once --metrics-bind-address "" --healthz-bind-address "" &
PIDS+=($!)

wait_port 127.0.0.1 18081; wait_port 127.0.0.1 18090; wait_port 127.0.0.1 18091
wait_port 127.0.0.200 18092; wait_port 127.0.0.201 18192; wait_port 127.0.0.1 15201

# wrk: prints "req/s p99".
run_wrk() { # url [extra wrk args]
  local url="$1"; shift
  taskset -c "$GEN_CPU" wrk -t1 -c50 -d"${DURATION}s" --latency "$@" "$url" > "$WORK/wrk.out" 2>&1 || true
  local rps p99
  rps="$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.out")"
  p99="$(awk '$1 == "99%" {print $2}' "$WORK/wrk.out")"
  echo "${rps:-?} ${p99:-?}"
}

# iperf3: prints Gbit/s received.
run_iperf() { # port
  taskset -c "$GEN_CPU" iperf3 -c 127.0.0.1 -p "$1" -t 5 -J > "$WORK/iperf.json" 2>/dev/null || { echo "?"; return; }
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.1f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))' "$WORK/iperf.json"
}

run_iperf_via() { # host port (iperf3 -c to a proxy address)
  taskset -c "$GEN_CPU" iperf3 -c "$1" -p "$2" -t 5 -J > "$WORK/iperf.json" 2>/dev/null || { echo "?"; return; }
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.1f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))' "$WORK/iperf.json"
}

echo "# L4 proxies, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $(uname -r), wrk ${DURATION}s"
echo
echo "| target | keep-alive req/s | keep-alive p99 | close req/s | close p99 | bulk Gbit/s |"
echo "|---|---|---|---|---|---|"
for target in direct haproxy nginx-stream svcnet-userspace; do
  case "$target" in
    direct) url=http://127.0.0.1:18081/; bulk_host=127.0.0.1; bulk_port=15201 ;;
    haproxy) url=http://127.0.0.1:18090/; bulk_host=127.0.0.1; bulk_port=18190 ;;
    nginx-stream) url=http://127.0.0.1:18091/; bulk_host=127.0.0.1; bulk_port=18191 ;;
    svcnet-userspace) url=http://127.0.0.200:18092/; bulk_host=127.0.0.201; bulk_port=18192 ;;
  esac
  read -r ka_rps ka_p99 < <(run_wrk "$url")
  read -r close_rps close_p99 < <(run_wrk "$url" -H "Connection: close")
  bulk="$(run_iperf_via "$bulk_host" "$bulk_port")"
  echo "| $target | $ka_rps | $ka_p99 | $close_rps | $close_p99 | $bulk |"
done
