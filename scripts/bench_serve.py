#!/usr/bin/env python3
"""Closed-loop load test of a running `cm serve`: throughput and latency per concurrency level.

For each level C of --concurrency, C clients each send synchronous POST /v1/images/generations
one after another (a new request as soon as the last one is answered), first for --warmup
seconds (not counted), then for --duration seconds. Counted: the requests answered within that
window. Each request asks for --n images with a fresh seed, the next class of the model in turn,
and its steps cycling through --steps (`1,2`: half 1-step, half 2-step requests). Reported per
level: requests/s, images/s, latency p50/p95/p99, errors, and from /metrics over the window the
UNet calls, the mean images per call (cm_batch_size_sum / cm_batch_size_count) and the share of
the window the engine was computing (cm_engine_busy_seconds_total; behind a balancer, name every
replica with --metrics-url, and it is summed over them). A Markdown table on stdout; --json FILE
writes the same rows as JSON. Standard library only.

  ./build/cm serve -m models/fmnist-cm --max-batch 16 &
  python3 scripts/bench_serve.py --concurrency 1,4,16,64 --duration 20 --steps 1,2
"""
import argparse
import http.client
import json
import math
import re
import sys
import threading
import time
import urllib.parse


def positive_ints(text):
    """'1,4,16' -> [1, 4, 16]; every value an integer >= 1."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"every value must be at least 1, got '{text}'")
    return values


def non_negative_seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got '{text}'")
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be finite and not negative, got '{text}'")
    return value


def positive_seconds(text):
    value = non_negative_seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8080", help="the server's base URL")
    p.add_argument("--concurrency", type=positive_ints, default=[1, 4, 16, 64],
                   help="clients at each level, comma-separated (default 1,4,16,64)")
    p.add_argument("--duration", type=positive_seconds, default=20.0,
                   help="seconds counted at each level (default 20)")
    p.add_argument("--warmup", type=non_negative_seconds, default=None,
                   help="seconds run and not counted before each level (default: a quarter of "
                        "--duration, at most 5)")
    p.add_argument("--steps", type=positive_ints, default=[1],
                   help="sampling steps per request, cycled: 1, or 1,2 for a mix (default 1)")
    p.add_argument("--n", type=positive_ints, default=[1], help="images per request (default 1)")
    p.add_argument("--classes", type=int, default=None,
                   help="classes to cycle through (default: the model's, from /v1/models)")
    p.add_argument("--metrics-url", action="append", metavar="URL",
                   help="a server whose /metrics count the UNet calls (default: --url); repeat "
                        "for each replica behind a balancer (their counters are summed)")
    p.add_argument("--api-key", help="sent as Authorization: Bearer KEY")
    p.add_argument("--timeout", type=positive_seconds, default=600.0,
                   help="seconds one request may take (default 600)")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    a = p.parse_args(argv)
    if len(a.n) != 1:
        p.error("--n: one value")
    a.n = a.n[0]
    if a.warmup is None:
        a.warmup = min(5.0, a.duration / 4)
    if a.classes is not None and a.classes < 0:
        p.error("--classes: must not be negative")
    a.metrics_url = a.metrics_url or [a.url]
    return a


def percentile(values, q):
    """The q-quantile (0 < q <= 1) by the nearest-rank method; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def metric(text, name):
    """The value of an unlabelled Prometheus sample, summed over several texts (a list: one per
    replica); nan when absent."""
    if isinstance(text, (list, tuple)):
        return sum(metric(t, name) for t in text)
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


class Client:
    """One keep-alive connection to the server (reopened after an error)."""

    def __init__(self, url, api_key=None, timeout=600.0):
        u = urllib.parse.urlsplit(url)
        self.https = u.scheme == "https"
        self.host, self.port = u.hostname, u.port or (443 if self.https else 80)
        self.prefix = u.path.rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = "Bearer " + api_key
        self.timeout = timeout
        self.conn = None

    def request(self, method, path, body=None):
        """(status, body bytes)."""
        data = None if body is None else json.dumps(body).encode()
        # A kept-alive connection the server closed while idle (its keep-alive timeout) fails
        # before the request reached it: once more on a new connection, then the error stands.
        reused = self.conn is not None
        while True:
            if self.conn is None:
                cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
                self.conn = cls(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, self.prefix + path, data, self.headers)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if not reused:
                    raise
                reused = False
            except Exception:
                self.close()
                raise

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def summarize(concurrency, completions, window, before, after):
    """One table row from the completions (end time, latency s, images, ok) of a level, the
    counted window (start, end) and the /metrics texts at its start and end (each a text or a
    list of texts, one per replica)."""
    start, end = window
    seconds = end - start
    counted = [c for c in completions if start <= c[0] <= end]
    ok = [c for c in counted if c[3]]
    latencies = [c[1] for c in ok]
    delta = {k: metric(after, k) - metric(before, k)
             for k in ("cm_batch_size_sum", "cm_batch_size_count", "cm_images_total",
                       "cm_engine_busy_seconds_total")}
    calls = delta["cm_batch_size_count"]
    return {
        "concurrency": concurrency,
        "seconds": round(seconds, 3),
        "requests": len(ok),
        "errors": len(counted) - len(ok),
        "requests_per_s": len(ok) / seconds,
        "images_per_s": sum(c[2] for c in ok) / seconds,
        "latency_p50_s": percentile(latencies, 0.50),
        "latency_p95_s": percentile(latencies, 0.95),
        "latency_p99_s": percentile(latencies, 0.99),
        "unet_calls": calls,
        "images_per_unet_call": delta["cm_batch_size_sum"] / calls if calls > 0 else float("nan"),
        "engine_busy": delta["cm_engine_busy_seconds_total"] / seconds,
    }


COLUMNS = [  # (heading, key, format)
    ("concurrency", "concurrency", "{:d}"),
    ("requests", "requests", "{:d}"),
    ("errors", "errors", "{:d}"),
    ("requests/s", "requests_per_s", "{:.2f}"),
    ("images/s", "images_per_s", "{:.2f}"),
    ("p50 s", "latency_p50_s", "{:.3f}"),
    ("p95 s", "latency_p95_s", "{:.3f}"),
    ("p99 s", "latency_p99_s", "{:.3f}"),
    ("UNet calls", "unet_calls", "{:.0f}"),
    ("images per UNet call", "images_per_unet_call", "{:.2f}"),
    ("engine busy", "engine_busy", "{:.0%}"),
]


def format_table(rows):
    """The rows as a Markdown table (nan shown as n/a)."""
    def cell(row, key, fmt):
        v = row[key]
        return "n/a" if isinstance(v, float) and math.isnan(v) else fmt.format(v)
    lines = ["| " + " | ".join(h for h, _, _ in COLUMNS) + " |",
             "|" + "|".join("---:" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(cell(r, k, f) for _, k, f in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def run_level(a, concurrency, classes, counter):
    """Closed loop at one concurrency level: warm-up, then the counted window."""
    lock = threading.Lock()
    completions, first_error = [], []
    stop = threading.Event()
    monitors = [Client(url, a.api_key, a.timeout) for url in a.metrics_url]

    def scrape():
        return [m.request("GET", "/metrics")[1].decode() for m in monitors]

    def next_body():
        with lock:
            k = next(counter)
        body = {"n": a.n, "seed": k, "steps": a.steps[k % len(a.steps)]}
        if classes:
            body["class_labels"] = [k % classes]
        return body

    def client():
        c = Client(a.url, a.api_key, a.timeout)
        while not stop.is_set():
            body = next_body()
            t0 = time.perf_counter()
            try:
                status, answer = c.request("POST", "/v1/images/generations", body)
                ok = status == 200
                error = None if ok else f"HTTP {status}: {answer[:200]!r}"
            except Exception as e:  # noqa: BLE001 - counted and reported
                ok, error = False, f"{type(e).__name__}: {e}"
            t1 = time.perf_counter()
            with lock:
                completions.append((t1, t1 - t0, a.n if ok else 0, ok))
                if error and not first_error:
                    first_error.append(error)
            if not ok:
                time.sleep(0.05)  # a refusing server (429, 503) is not hammered
        c.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    time.sleep(a.warmup)
    before = scrape()
    start = time.perf_counter()
    time.sleep(a.duration)
    end = time.perf_counter()
    after = scrape()
    stop.set()
    for t in threads:  # each finishes its request in flight (not counted)
        t.join()
    for m in monitors:
        m.close()
    with lock:
        row = summarize(concurrency, list(completions), (start, end), before, after)
    return row, (first_error[0] if first_error else None)


def main(argv=None):
    a = parse_args(argv)
    probe = Client(a.url, a.api_key, a.timeout)
    status, body = probe.request("GET", "/health")
    if status != 200:
        sys.exit(f"server not ready: {status} {body[:200]!r}")
    classes = a.classes
    if classes is None:
        status, body = probe.request("GET", "/v1/models")
        model = json.loads(body)["data"][0] if status == 200 else {}
        classes = int(model.get("num_classes") or 0)
    probe.close()
    for url in a.metrics_url:
        probe = Client(url, a.api_key, a.timeout)
        status, body = probe.request("GET", "/metrics")
        probe.close()
        if status != 200:
            sys.exit(f"GET {url}/metrics: {status} {body[:200]!r} (--api-key?)")

    counter = iter(range(sys.maxsize))
    rows, failed = [], False
    for concurrency in a.concurrency:
        row, error = run_level(a, concurrency, classes, counter)
        rows.append(row)
        print(f"concurrency {concurrency}: {row['images_per_s']:.2f} images/s, "
              f"{row['errors']} errors", file=sys.stderr)
        if error:
            failed = True
            print(f"  first error: {error}", file=sys.stderr)
    print(f"`cm serve` at {a.url}: closed loop, {a.duration:g} s per level after {a.warmup:g} s "
          f"of warm-up; n={a.n}, steps {','.join(map(str, a.steps))}\n")
    print(format_table(rows))
    if a.json:
        settings = {k: getattr(a, k)
                    for k in ("url", "metrics_url", "duration", "warmup", "steps", "n")}
        with open(a.json, "w") as f:
            json.dump({"settings": settings, "rows": rows}, f, indent=2)
            f.write("\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
