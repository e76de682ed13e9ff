#!/usr/bin/env python3
"""Writes the benchmark inputs into DIR: objects.json (10,000 ClusterIP Services in 100
namespaces, plus PODS pods for the memory figure), unbound.conf (the same names as local data)
and queries.txt (every name once, shuffled, type A). Usage: gen.py DIR PORT [PODS]."""
import json
import random
import sys

out, port = sys.argv[1], int(sys.argv[2])
n_pods = int(sys.argv[3]) if len(sys.argv) > 3 else 0
N_SERVICES, N_NAMESPACES = 10_000, 100

items = [{"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": f"ns-{n}"}}
         for n in range(N_NAMESPACES)]
names = []
for idx in range(N_SERVICES):
    ns = f"ns-{idx % N_NAMESPACES}"
    ip = f"10.96.{idx // 250 + 1}.{idx % 250 + 1}"
    items.append({"kind": "Service", "apiVersion": "v1",
                  "metadata": {"name": f"svc-{idx}", "namespace": ns},
                  "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                           "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
    names.append((f"svc-{idx}.{ns}.svc.cluster.local.", ip))
for idx in range(n_pods):
    ip = f"10.{244 + idx // 65000}.{(idx // 250) % 256}.{idx % 250 + 1}"
    items.append({"kind": "Pod", "apiVersion": "v1",
                  "metadata": {"name": f"pod-{idx}", "namespace": f"ns-{idx % N_NAMESPACES}"},
                  "status": {"podIP": ip, "podIPs": [{"ip": ip}]}})
with open(f"{out}/objects.json", "w") as f:
    json.dump({"kind": "List", "apiVersion": "v1", "items": items}, f)

with open(f"{out}/unbound.conf", "w") as f:
    f.write(f"""server:
    interface: 127.0.0.1@{port}
    port: {port}
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{out}"
    pidfile: "{out}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 0
    num-threads: 2
    so-reuseport: yes
    access-control: 127.0.0.0/8 allow
    do-ip6: no
    module-config: "iterator"
    local-zone: "cluster.local." static
""")
    for name, ip in names:
        f.write(f'    local-data: "{name} 5 IN A {ip}"\n')

random.seed(1)
random.shuffle(names)
with open(f"{out}/queries.txt", "w") as f:
    for name, _ in names:
        f.write(f"{name} A\n")
