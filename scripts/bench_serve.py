#!/usr/bin/env python3
"""Load a running `cm serve` with concurrent clients and report its throughput.

Each of --clients threads sends --requests synchronous POST /v1/images/generations in turn
(n images each, its steps cycling through --steps, a fresh seed and a class cycling through the
model's classes). Reports images/s over the wall time, latency percentiles, and, from /metrics,
the UNet calls made and the mean images per call. Standard library only.

  ./build/cm serve -m models/fmnist-cm --max-batch 16 &
  python3 scripts/bench_serve.py --clients 8 --requests 16 --steps 1,2
"""
import argparse
import json
import re
import sys
import threading
import time
import urllib.request


def call(url, body=None, key=None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(req, timeout=600) as r:
        return r.status, r.read()


def metric(text, name):
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=16, help="per client")
    p.add_argument("--n", type=int, default=1, help="images per request")
    p.add_argument("--steps", default="1", help="comma list, cycled: e.g. 1,2")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--api-key")
    a = p.parse_args()
    steps = [int(s) for s in a.steps.split(",")]

    status, body = call(a.url + "/health")
    if status != 200:
        sys.exit("server not ready: %s" % body)
    before = call(a.url + "/metrics", key=a.api_key)[1].decode()
    latencies, errors = [], []
    lock = threading.Lock()

    def client(c):
        for i in range(a.requests):
            k = c * a.requests + i
            body = {"n": a.n, "seed": k, "steps": steps[k % len(steps)],
                    "class_labels": [k % a.classes]}
            t0 = time.perf_counter()
            try:
                call(a.url + "/v1/images/generations", body, a.api_key)
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(str(e))
                continue
            with lock:
                latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    after = call(a.url + "/metrics", key=a.api_key)[1].decode()

    images = metric(after, "cm_images_total") - metric(before, "cm_images_total")
    calls = (metric(after, "cm_network_evaluations_total")
             - metric(before, "cm_network_evaluations_total"))
    rows = metric(after, "cm_batch_size_sum") - metric(before, "cm_batch_size_sum")
    latencies.sort()
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0
    print(json.dumps({
        "clients": a.clients, "requests": len(latencies), "errors": len(errors),
        "images": images, "wall_s": round(wall, 3), "images_per_s": round(images / wall, 2),
        "latency_p50_s": round(pct(0.5), 3), "latency_p95_s": round(pct(0.95), 3),
        "unet_calls": calls, "mean_images_per_call": round(rows / calls, 2) if calls else 0,
    }))
    if errors:
        print("first error:", errors[0], file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
