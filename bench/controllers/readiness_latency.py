#!/usr/bin/env python3
"""Readiness-to-EndpointSlice latency of the svcnet EndpointSlice controller.

Creates SERVICES Services (the first PODS of them get one pod each), waits until their slices
exist, then flips the readiness of random pods FLIPS times, one at a time, and measures the time
from the pod status write to the watch event of the slice showing it. Prints p50/p99 and the CPU
the controller process used (from /proc/PID/stat) during setup and during the flips.

Talks only to the API server on loopback. Usage (run.sh does all of it):
  readiness_latency.py --server https://127.0.0.1:PORT --token T --ca FILE --controller-pid PID
"""

import argparse
import http.client
import json
import os
import random
import ssl
import threading
import time
import urllib.parse


def conn(args):
    u = urllib.parse.urlparse(args.server)
    ctx = ssl.create_default_context(cafile=args.ca)
    ctx.check_hostname = False
    return http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=60)


def request(c, args, method, path, body=None, content_type="application/json"):
    headers = {"Authorization": f"Bearer {args.token}", "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = content_type
    c.request(method, path, body=data, headers=headers)
    r = c.getresponse()
    payload = r.read()
    if r.status >= 300:
        raise RuntimeError(f"{method} {path}: {r.status} {payload[:300]!r}")
    return json.loads(payload) if payload else None


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def pod(i, ready):
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"bench-{i}", "labels": {"app": f"bench-{i}"}},
        "spec": {"nodeName": "bench-node", "containers": [{"name": "c", "image": "none"}]},
        "status": {"phase": "Running", "podIP": f"10.{100 + i // 65536}.{(i // 256) % 256}.{i % 256}",
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--controller-pid", type=int, required=True)
    p.add_argument("--services", type=int, default=10000)
    p.add_argument("--pods", type=int, default=1000)
    p.add_argument("--flips", type=int, default=200)
    args = p.parse_args()
    ns = "/api/v1/namespaces/default"
    c = conn(args)
    cpu0 = cpu_seconds(args.controller_pid)
    t0 = time.monotonic()
    for i in range(args.services):
        request(c, args, "POST", f"{ns}/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": f"bench-{i}"},
            "spec": {"selector": {"app": f"bench-{i}"}, "ports": [{"port": 80}]}})
    for i in range(args.pods):
        request(c, args, "POST", f"{ns}/pods", pod(i, True))
    # Wait until every pod has a slice (bounded).
    deadline = time.monotonic() + 600
    while True:
        lst = request(c, args, "GET", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices")
        n = sum(1 for s in lst["items"] if s["metadata"].get("labels", {}).get("kubernetes.io/service-name", "").startswith("bench-") and s.get("endpoints"))
        if n >= args.pods:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"only {n} of {args.pods} slices after 600 s")
        time.sleep(0.2)
    setup_s = time.monotonic() - t0
    cpu1 = cpu_seconds(args.controller_pid)
    rv = lst["metadata"]["resourceVersion"]

    # Watch slices in a thread; record when each (service, ready) is first seen.
    seen = {}
    cond = threading.Condition()

    def watcher():
        wc = conn(args)
        wc.request("GET", f"/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?watch=1&resourceVersion={rv}",
                   headers={"Authorization": f"Bearer {args.token}", "Accept": "application/json"})
        r = wc.getresponse()
        buf = b""
        while True:
            chunk = r.read1(65536)
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if not line.strip():
                    continue
                ev = json.loads(line)
                obj = ev.get("object", {})
                svc = obj.get("metadata", {}).get("labels", {}).get("kubernetes.io/service-name")
                for e in obj.get("endpoints") or []:
                    ready = (e.get("conditions") or {}).get("ready", False)
                    with cond:
                        seen[(svc, ready)] = time.monotonic()
                        cond.notify_all()

    threading.Thread(target=watcher, daemon=True).start()
    time.sleep(0.5)  # let the watch connect before the first flip (not a measurement)
    state = {i: True for i in range(args.pods)}
    latencies = []
    for _ in range(args.flips):
        i = random.randrange(args.pods)
        state[i] = not state[i]
        key = (f"bench-{i}", state[i])
        with cond:
            seen.pop(key, None)
        start = time.monotonic()
        request(c, args, "PATCH", f"{ns}/pods/bench-{i}/status",
                 {"status": {"conditions": [{"type": "Ready", "status": "True" if state[i] else "False"}]}},
                 content_type="application/merge-patch+json")
        with cond:
            ok = cond.wait_for(lambda: key in seen and seen[key] >= start, timeout=10)
        if not ok:
            raise SystemExit(f"slice for {key} not updated within 10 s")
        latencies.append((seen[key] - start) * 1000)
    cpu2 = cpu_seconds(args.controller_pid)
    latencies.sort()
    q = lambda f: latencies[min(len(latencies) - 1, int(f * len(latencies)))]
    print(f"services={args.services} pods={args.pods} flips={args.flips}")
    print(f"setup: {setup_s:.1f} s wall, controller cpu {cpu1 - cpu0:.1f} s")
    print(f"readiness->slice latency: p50={q(0.50):.1f} ms p99={q(0.99):.1f} ms max={latencies[-1]:.1f} ms (target p99 <= 50 ms)")
    print(f"controller cpu during flips: {cpu2 - cpu1:.2f} s ({(cpu2 - cpu1) / args.flips * 1000:.1f} ms per flip)")


if __name__ == "__main__":
    main()
