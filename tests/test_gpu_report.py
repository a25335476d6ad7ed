#!/usr/bin/env python3
"""Tests of the GPU check's parts that need no GPU: scripts/gpu_report.py end to end, and that
scripts/gpu_check.sh and scripts/bench_diffusers.py parse and answer --help.

Every number below is SYNTHETIC: round values chosen so the expected speed-ups are easy to check
by hand. None of them is a measurement.
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORT = os.path.join(ROOT, "scripts", "gpu_report.py")
CHECK = os.path.join(ROOT, "scripts", "gpu_check.sh")
BENCH = os.path.join(ROOT, "scripts", "bench_diffusers.py")


def cm_row(model, batch, graphs, ms, steps=2, **extra):
    ts = [17, 0] if steps == 2 else [0]
    return {"model": model, "device": "cuda", "dtype": "float16", "batch": batch, "steps": steps,
            "timesteps": ts, "cuda_graphs": graphs, "ms_per_image": ms, "images_per_s": 1000.0 / ms,
            **extra}


def diff_row(model, batch, impl, ms=None, steps=2, error=None):
    r = {"model": model, "dtype": "float16", "batch": batch, "steps": steps,
         "timesteps": [17, 0] if steps == 2 else [0], "impl": impl}
    if error:
        r["error"] = error
    else:
        r.update(ms_per_image=ms, images_per_s=1000.0 / ms)
    return r


class ReportTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, name, content):
        path = os.path.join(self.dir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(content if isinstance(content, str) else json.dumps(content))
        return path

    def run_report(self, cm, diff, *extra):
        args = [sys.executable, REPORT, "--out-dir", os.path.join(self.dir, "out")]
        args += ["--cm", cm if cm and os.sep in cm else self.write("cm_bench.json", cm)]
        args += ["--diffusers", diff if diff and os.sep in diff else self.write("diffusers.json", diff)]
        return subprocess.run(args + list(extra), capture_output=True, text=True)

    def report(self, cm, diff, *extra):
        p = self.run_report(cm, diff, *extra)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(os.path.join(self.dir, "out", "gpu_report.md"), encoding="utf-8") as f:
            md = f.read()
        with open(os.path.join(self.dir, "out", "gpu_report.json"), encoding="utf-8") as f:
            return md, json.load(f)

    def row(self, js, model, batch):
        return next(r for r in js["rows"] if r["model"] == model and r["batch"] == batch)

    def test_target_holds_and_speedups(self):
        # cm's best is graphs on (10 ms); diffusers-compile 17 ms: 1.7x. Eager 40 ms: 4x.
        cm = [cm_row("/tmp/models/lsun256", 4, True, 10.0), cm_row("/tmp/models/lsun256", 4, False, 12.5)]
        diff = [diff_row("lsun256", 4, "diffusers-eager", 40.0), diff_row("lsun256", 4, "diffusers-compile", 17.0)]
        md, js = self.report(cm, diff)
        r = self.row(js, "lsun256", 4)  # the cm path and the diffusers name are one model
        self.assertAlmostEqual(r["cm_best_ms"], 10.0)
        self.assertAlmostEqual(r["speedup_vs_compile"], 1.7)
        self.assertAlmostEqual(r["speedup_vs_eager"], 4.0)
        self.assertIs(js["target"]["holds"], True)
        self.assertIn("Target HOLDS", md)
        self.assertIn("| 4 | float16 | 2 | 10.00 | 12.50 | 40.00 | 17.00 | 1.70x |", md)

    def test_target_fails_when_graphs_off_is_best_but_too_slow(self):
        # Graphs off is the faster here (12 ms), compile 15 ms: 1.25x, below 1.5.
        cm = [cm_row("lsun256", 4, True, 13.0), cm_row("lsun256", 4, False, 12.0)]
        diff = [diff_row("lsun256", 4, "diffusers-compile", 15.0)]
        md, js = self.report(cm, diff)
        self.assertAlmostEqual(js["target"]["speedup"], 1.25)
        self.assertIs(js["target"]["holds"], False)
        self.assertIn("DOES NOT HOLD", md)

    def test_exactly_the_target_holds(self):
        md, js = self.report([cm_row("lsun256", 4, True, 8.0)], [diff_row("lsun256", 4, "diffusers-compile", 12.0)])
        self.assertIs(js["target"]["holds"], True)

    def test_target_only_at_batch_4_two_steps(self):
        # Fast rows elsewhere must not decide the target: batch 16 and a one-step batch 4.
        cm = [cm_row("lsun256", 16, True, 1.0), cm_row("lsun256", 4, True, 1.0, steps=1)]
        diff = [diff_row("lsun256", 16, "diffusers-compile", 9.0),
                diff_row("lsun256", 4, "diffusers-compile", 9.0, steps=1)]
        md, js = self.report(cm, diff)
        self.assertIsNone(js["target"]["holds"])
        self.assertIn("UNDECIDED", md)

    def test_missing_and_failed_rows(self):
        cm = [cm_row("lsun256", 4, True, 10.0), cm_row("lsun256", 1, False, 30.0)]
        diff = [diff_row("lsun256", 4, "diffusers-eager", 50.0),
                diff_row("lsun256", 4, "diffusers-compile", error="torch._dynamo: graph break")]
        md, js = self.report(cm, diff)
        self.assertIsNone(js["target"]["holds"])
        self.assertIn("diffusers-compile failed (torch._dynamo: graph break)", js["target"]["text"])
        self.assertIn("| 4 | float16 | 2 | 10.00 | — | 50.00 | failed | — |", md)
        self.assertIn("| 1 | float16 | 2 | — | 30.00 | — | — | — |", md)
        self.assertIsNone(self.row(js, "lsun256", 1)["speedup_vs_compile"])

    def test_absent_diffusers_file_is_reported_not_fatal(self):
        md, js = self.report([cm_row("lsun256", 4, True, 10.0)], os.path.join(self.dir, "none.json"))
        self.assertIn("none.json: not produced", md)
        self.assertIsNone(js["inputs"]["none.json"])
        self.assertIn("no diffusers-compile row", js["target"]["text"])

    def test_timestep_mismatch_is_noted(self):
        cm = [cm_row("lsun256", 4, True, 10.0)]
        d = diff_row("lsun256", 4, "diffusers-compile", 20.0)
        d["timesteps"] = [22, 0]
        md, js = self.report(cm, [d])
        self.assertIn("timesteps differ", md)

    def test_peak_fraction_for_batch_16_and_64_only(self):
        extra = dict(achieved_gflops=250000.0, peak_gflops=500000.0, fraction_of_peak=0.5, peak_gpu_mem_mb=2048.0)
        cm = [cm_row("lsun256", 16, True, 5.0, **extra), cm_row("lsun256", 4, True, 6.0, **extra),
              cm_row("imagenet64", 64, False, 0.5, steps=1, **extra)]
        md, js = self.report(cm, [])
        self.assertEqual(sorted((p["model"], p["batch"]) for p in js["peak"]), [("imagenet64", 64), ("lsun256", 16)])
        self.assertIn("| lsun256 | float16 | 16 | on | 250000 | 500000 | 50.0% | 2048 |", md)
        self.assertIn("## imagenet64", md)

    def test_ctest_logs_and_phases(self):
        gpu = self.write("ctest_gpu.log", "100% tests passed, 0 tests failed out of 1\n")
        rest = self.write("ctest_rest.log", "\n".join([
            "90% tests passed, 2 tests failed out of 20", "", "Total Test time (real) =  12.00 sec", "",
            "The following tests FAILED:", "\t  3 - core (Failed)", "\t  7 - training (Timeout)",
            "Errors while running CTest", ""]))
        phases = self.write("phases.tsv", "build\tok\t180.5\nctest-gpu\tfailed (rc 8)\t20.0\n")
        md, js = self.report([], [], "--ctest", gpu, "--ctest", rest, "--phases", phases)
        self.assertEqual((js["tests"]["total"], js["tests"]["failed"], js["tests"]["passed"]), (21, 2, 19))
        self.assertEqual(js["tests"]["failed_tests"], ["core (Failed)", "training (Timeout)"])
        self.assertIn("19 of 21 passed, 2 failed.", md)
        self.assertIn("| ctest-gpu | failed (rc 8) | 20.0 |", md)

    def test_ctest_log_without_summary(self):
        log = self.write("ctest.log", "Test project /x\n    Start 1: cuda\nSegmentation fault\n")
        md, js = self.report([], [], "--ctest", log)
        self.assertFalse(js["tests"]["summary_found"])
        self.assertIn("printed no summary", md)

    def assert_error(self, p, *fragments):
        self.assertEqual(p.returncode, 2)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
        for frag in fragments:
            self.assertIn(frag, p.stderr)

    def test_bad_inputs_are_one_line_errors(self):
        self.assert_error(self.run_report("[{", []), "cm_bench.json", "not valid JSON")
        self.assert_error(self.run_report({"rows": []}, []), "cm_bench.json", "JSON array")
        bad = cm_row("lsun256", 4, True, 10.0)
        del bad["ms_per_image"]
        self.assert_error(self.run_report([bad], []), "cm_bench.json row 0", "'ms_per_image'")
        self.assert_error(self.run_report([cm_row("lsun256", 4, "yes", 10.0)], []), "row 0", "cuda_graphs")
        self.assert_error(self.run_report([], [diff_row("lsun256", 4, "torch", 5.0)]), "diffusers.json row 0", "impl")
        self.assert_error(self.run_report([cm_row("lsun256", 0, True, 1.0)], []), "'batch'")

    def test_duplicate_rows_are_errors(self):
        cm = [cm_row("lsun256", 4, True, 10.0), cm_row("lsun256", 4, True, 11.0)]
        self.assert_error(self.run_report(cm, []), "cm_bench.json row 1", "second row")

    def test_bad_phases_line(self):
        phases = self.write("phases.tsv", "build ok 3\n")
        self.assert_error(self.run_report([], [], "--phases", phases), "phases.tsv line 1")


class ScriptsTest(unittest.TestCase):
    def test_gpu_check_is_valid_bash(self):
        p = subprocess.run(["bash", "-n", CHECK], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_gpu_check_help_and_bad_option(self):
        p = subprocess.run(["bash", CHECK, "--help"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("--prepare", p.stdout)
        p = subprocess.run(["bash", CHECK, "--bogus"], capture_output=True, text=True)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--bogus", p.stderr)

    def test_bench_diffusers_arguments_without_torch(self):
        # --help and argument errors come before torch is imported, so they work anywhere.
        p = subprocess.run([sys.executable, BENCH, "--help"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("--compile", p.stdout)
        p = subprocess.run([sys.executable, BENCH, "--model", "x", "--batch", "4,a", "--steps", "1"],
                           capture_output=True, text=True)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("4,a", p.stderr)
        p = subprocess.run([sys.executable, BENCH, "--model", "x", "--batch", "4"], capture_output=True, text=True)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--timesteps", p.stderr)


if __name__ == "__main__":
    unittest.main()
