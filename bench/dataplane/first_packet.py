#!/usr/bin/env python3
"""First-packet latency probe for bench/dataplane/run.sh.

`serve PORT`: accept and close TCP connections on 0.0.0.0:PORT (until killed); prints
"ready" once listening. `probe ADDR PORT COUNT`: COUNT sequential TCP connects to
ADDR:PORT, each a new connection (so its first packet walks the NAT rules), and prints
"median_us=… p90_us=… failed=…" of the connect() times. Runs only inside the namespaces
run.sh creates.
"""
import socket
import statistics
import sys
import time


def serve(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(1024)
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        c.close()


def probe(addr, port, count):
    times, failed = [], 0
    for _ in range(count):
        c = socket.socket()
        c.settimeout(2.0)
        # An RST close keeps the client from piling up TIME_WAIT sockets.
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        t = time.perf_counter_ns()
        try:
            c.connect((addr, port))
            times.append((time.perf_counter_ns() - t) / 1000)
        except OSError:
            failed += 1
        c.close()
    if not times:
        print(f"median_us=- p90_us=- failed={failed}")
        return
    times.sort()
    p90 = times[int(len(times) * 0.9)]
    print(f"median_us={statistics.median(times):.0f} p90_us={p90:.0f} failed={failed}")


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        probe(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
