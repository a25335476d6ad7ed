"""scripts/bench_serve.py: its arguments, its statistics and table, and a one-second run per level
against the real `cm serve` (numbers finite and positive; no timing asserted)."""
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

from cm_server import ROOT, CmServer

SCRIPT = os.path.join(ROOT, "scripts", "bench_serve.py")
spec = importlib.util.spec_from_file_location("bench_serve", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_arguments():
    a = bench.parse_args([])
    assert a.concurrency == [1, 4, 16, 64] and a.steps == [1] and a.n == 1
    assert a.duration == 20 and a.warmup == 5
    a = bench.parse_args(["--concurrency", "2,8", "--duration", "2", "--steps", "1,2",
                          "--n", "3", "--json", "out.json"])
    assert a.concurrency == [2, 8] and a.steps == [1, 2] and a.n == 3
    assert a.warmup == 0.5  # a quarter of --duration
    assert a.json == "out.json"
    assert bench.parse_args(["--warmup", "0"]).warmup == 0
    assert a.metrics_url == [a.url]
    a = bench.parse_args(["--url", "http://lb", "--metrics-url", "http://a:1",
                          "--metrics-url", "http://b:2"])
    assert a.metrics_url == ["http://a:1", "http://b:2"]


@pytest.mark.parametrize("argv", [
    ["--concurrency", "0"], ["--concurrency", "1,x"], ["--concurrency", ""],
    ["--steps", "0"], ["--duration", "0"], ["--duration", "-1"], ["--duration", "nan"],
    ["--warmup", "-1"], ["--n", "1,2"], ["--classes", "-1"],
])
def test_bad_arguments_exit(argv, capsys):
    with pytest.raises(SystemExit) as e:
        bench.parse_args(argv)
    assert e.value.code == 2
    assert "error" in capsys.readouterr().err


def test_percentile_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert bench.percentile(values, 0.5) == 50
    assert bench.percentile(values, 0.95) == 95
    assert bench.percentile(values, 0.99) == 99
    assert bench.percentile([3.0], 0.99) == 3.0
    assert bench.percentile(list(reversed(values)), 1.0) == 100
    assert math.isnan(bench.percentile([], 0.5))


METRICS_BEFORE = ("cm_images_total 10\ncm_batch_size_sum 10\ncm_batch_size_count 10\n"
                  "cm_engine_busy_seconds_total 1.5\n")
METRICS_AFTER = ("cm_images_total 40\ncm_batch_size_sum 40\ncm_batch_size_count 16\n"
                 "cm_engine_busy_seconds_total 3.0\n")


def test_summary_counts_the_window_only():
    # (end time, latency, images, ok): one before the window, one failed, one after it.
    completions = [(0.5, 0.4, 2, True), (1.5, 0.2, 2, True), (2.0, 0.4, 2, True),
                   (2.5, 0.1, 0, False), (3.0, 0.6, 2, True), (3.5, 0.3, 2, True)]
    row = bench.summarize(4, completions, (1.0, 3.0), METRICS_BEFORE, METRICS_AFTER)
    assert row["concurrency"] == 4 and row["seconds"] == 2.0
    assert row["requests"] == 3 and row["errors"] == 1
    assert row["requests_per_s"] == 1.5 and row["images_per_s"] == 3.0
    assert row["latency_p50_s"] == 0.4 and row["latency_p99_s"] == 0.6
    assert row["unet_calls"] == 6 and row["images_per_unet_call"] == 5.0
    assert row["engine_busy"] == 0.75  # 1.5 s of 2
    # Replicas behind a balancer: their counters summed.
    both = bench.summarize(4, completions, (1.0, 3.0), [METRICS_BEFORE, METRICS_BEFORE],
                           [METRICS_AFTER, METRICS_BEFORE])
    assert both["unet_calls"] == 6 and both["images_per_unet_call"] == 5.0
    empty = bench.summarize(1, [], (0.0, 1.0), METRICS_BEFORE, METRICS_BEFORE)
    assert empty["requests"] == 0 and math.isnan(empty["images_per_unet_call"])


def test_markdown_table():
    rows = [bench.summarize(1, [(1.0, 0.25, 1, True)], (0.0, 2.0), METRICS_BEFORE,
                            METRICS_AFTER),
            bench.summarize(64, [], (0.0, 2.0), METRICS_BEFORE, METRICS_BEFORE)]
    lines = bench.format_table(rows).splitlines()
    assert len(lines) == 4
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["concurrency", "requests", "errors", "requests/s", "images/s", "p50 s",
                      "p95 s", "p99 s", "UNet calls", "images per UNet call", "engine busy"]
    assert lines[1] == "|" + "|".join(["---:"] * len(header)) + "|"
    first = [c.strip() for c in lines[2].strip("|").split("|")]
    assert first == ["1", "1", "0", "0.50", "0.50", "0.250", "0.250", "0.250", "6", "5.00", "75%"]
    last = [c.strip() for c in lines[3].strip("|").split("|")]
    assert last[0] == "64" and last[5:8] == ["n/a"] * 3 and last[9] == "n/a"
    assert all(len(line.split("|")) == len(header) + 2 for line in lines)


def test_short_run_against_cm_serve(tmp_path):
    out = tmp_path / "bench.json"
    with CmServer(args=["-t", "1"]) as server:
        run = subprocess.run(
            [sys.executable, SCRIPT, "--url", server.url, "--concurrency", "1,2",
             "--duration", "1", "--warmup", "0.5", "--steps", "1,2", "--json", str(out)],
            capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["concurrency"] for r in rows] == [1, 2]
    for r in rows:
        assert r["errors"] == 0
        for key in ("requests", "requests_per_s", "images_per_s", "latency_p50_s",
                    "latency_p95_s", "latency_p99_s", "unet_calls", "images_per_unet_call"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r["images_per_unet_call"] >= 1
        assert 0 < r["engine_busy"] <= 1.05, r  # a share of the window (a call may straddle it)
    table = [line for line in run.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 3  # header and two levels
