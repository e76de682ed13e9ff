#!/usr/bin/env python3
"""Two latencies of a running `svcnet up`, measured from where the Services are reachable.

1. apply -> first answer: `kubectl apply` of a Deployment (3 replicas of svcnet echo, the
   examples' template with its readiness probe) plus a ClusterIP Service, then HTTP GETs to the
   ClusterIP every 5 ms until one answers. Timed from just before kubectl starts (kubectl's own
   start-up is included and reported apart). A fresh Deployment/Service name per round.
2. Service change -> traffic follows: a Service selecting Deployment A (1 replica); its selector
   is switched between A and B with a PATCH sent straight to the API (no kubectl start-up), and
   GETs to the ClusterIP (a new connection each, back to back) until the answer comes from the
   other Deployment. Changes are 1.2 s apart (the proxy's min-sync-period is 1 s, as
   kube-proxy's).

Usage: up_latency.py KUBECONFIG ROUNDS CHANGES (run it where the ClusterIPs are reachable:
on the host in loopback mode, via `svcnet up exec` in root mode). Prints one JSON object.
Sends traffic only to the cluster's Service addresses and the API server on 127.0.0.1.
"""

import atexit
import base64
import http.client
import json
import shutil
import ssl
import subprocess
import sys
import tempfile
import time

KUBECONFIG, ROUNDS, CHANGES = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
CACHE = tempfile.mkdtemp(prefix="up-bench-kube-cache-")
atexit.register(shutil.rmtree, CACHE, True)


def kubectl(*args, stdin=None):
    out = subprocess.run(
        ["kubectl", "--kubeconfig", KUBECONFIG, "--cache-dir", CACHE, *args],
        input=stdin, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"kubectl {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def deployment(name, replicas):
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {
                     "terminationGracePeriodSeconds": 1,
                     "containers": [{
                         "name": "echo", "image": "ghcr.io/svcnet/svcnet:latest",
                         "command": ["svcnet", "echo", "--listen", "$(POD_IP):8080"],
                         "env": [
                             {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                             {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                         "ports": [{"name": "http", "containerPort": 8080}],
                         "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                                            "periodSeconds": 2}}]}}}}


def service(name, app):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": app},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}


def manifest(*objects):
    return "\n".join(json.dumps(o) for o in objects)


def get(ip, timeout=0.5):
    """The answering pod's name, or None."""
    try:
        conn = http.client.HTTPConnection(ip, 80, timeout=timeout)
        conn.request("GET", "/", headers={"Connection": "close"})
        body = conn.getresponse().read()
        conn.close()
        return json.loads(body).get("pod")
    except (OSError, http.client.HTTPException, ValueError):
        return None


def cluster_ip(name):
    return kubectl("get", "svc", name, "-o", "jsonpath={.spec.clusterIP}")


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


# 1. apply -> first answer.
apply_ms, first_ms, all3_ms = [], [], []
for i in range(ROUNDS):
    name = f"bench-apply-{i}"
    t0 = time.monotonic()
    kubectl("apply", "-f", "-", stdin=manifest(deployment(name, 3), service(name, name)))
    t_applied = time.monotonic()
    ip = cluster_ip(name)
    seen, first = set(), None
    deadline = t0 + 30
    while len(seen) < 3 and time.monotonic() < deadline:
        pod = get(ip, timeout=0.2)
        if pod:
            first = first or time.monotonic()
            seen.add(pod)
        else:
            time.sleep(0.005)
    if first is None:
        sys.exit(f"round {i}: no answer within 30 s")
    apply_ms.append((t_applied - t0) * 1000)
    first_ms.append((first - t0) * 1000)
    all3_ms.append((time.monotonic() - t0) * 1000 if len(seen) == 3 else float("nan"))
    kubectl("delete", "deployment,service", name, "--wait=false")

# 2. Service change -> traffic follows.
kubectl("apply", "-f", "-", stdin=manifest(
    deployment("bench-a", 1), deployment("bench-b", 1), service("bench-switch", "bench-a")))
kubectl("rollout", "status", "deployment/bench-a", "--timeout=60s")
kubectl("rollout", "status", "deployment/bench-b", "--timeout=60s")
ip = cluster_ip("bench-switch")
config = json.loads(kubectl("config", "view", "--raw", "-o", "json"))
cluster = config["clusters"][0]["cluster"]
user = config["users"][0]["user"]
ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
host = cluster["server"].removeprefix("https://")
api = http.client.HTTPSConnection(host, context=ctx, timeout=5)
headers = {"Authorization": f"Bearer {user['token']}",
           "Content-Type": "application/merge-patch+json"}
deadline = time.monotonic() + 30
while not (get(ip) or "").startswith("bench-a"):
    if time.monotonic() > deadline:
        sys.exit("the switch Service never answered from bench-a")
    time.sleep(0.01)
change_ms, current = [], "bench-a"
for i in range(CHANGES):
    target = "bench-b" if current == "bench-a" else "bench-a"
    body = json.dumps({"spec": {"selector": {"app": target}}})
    time.sleep(1.2)
    t0 = time.monotonic()
    api.request("PATCH", "/api/v1/namespaces/default/services/bench-switch", body, headers)
    resp = api.getresponse()
    resp.read()
    if resp.status != 200:
        sys.exit(f"PATCH failed: {resp.status}")
    while True:
        pod = get(ip, timeout=0.2) or ""
        if pod.startswith(target):
            break
        if time.monotonic() - t0 > 10:
            sys.exit(f"change {i}: traffic did not follow within 10 s")
    change_ms.append((time.monotonic() - t0) * 1000)
    current = target
kubectl("delete", "deployment", "bench-a", "bench-b", "--wait=false")
kubectl("delete", "service", "bench-switch", "--wait=false")

print(json.dumps({
    "apply_to_first_answer_ms": [round(v) for v in first_ms],
    "apply_to_first_answer_median_ms": round(pct(first_ms, 50)),
    "apply_to_all_3_answer_median_ms": round(pct(all3_ms, 50)),
    "kubectl_apply_itself_median_ms": round(pct(apply_ms, 50)),
    "service_change_ms": {"n": len(change_ms), "p50": round(pct(change_ms, 50), 1),
                          "p99": round(pct(change_ms, 99), 1), "max": round(max(change_ms), 1)},
}))
