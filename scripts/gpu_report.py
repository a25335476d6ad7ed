#!/usr/bin/env python3
"""Writes gpu_report.md and gpu_report.json from `cm bench --json` rows and bench_diffusers.py rows.

Standard library only (Python 3.9+): it runs where the timings land, the GPU machine or CI, with
nothing installed. A missing input file means its phase produced nothing and is reported as such;
a malformed one is an error (one line naming the file), since a report over bad rows would mislead.
"""
import argparse
import json
import os
import re
import sys

# Issue 12's target: LSUN-256, two steps, float16, batch 4, cm at least 1.5x diffusers + torch.compile.
TARGET = {"model": "lsun256", "dtype": "float16", "batch": 4, "steps": 2, "min_speedup": 1.5}
PEAK_BATCHES = (16, 64)  # batches whose fraction of the matmul peak the report lists
IMPLS = ("diffusers-eager", "diffusers-compile")


class InputError(Exception):
    pass


def _number(row, key, where):
    v = row.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v <= 0:
        raise InputError(f"{where}: '{key}' must be a positive number, got {json.dumps(v)}")
    return float(v)


def _common(row, where):
    """The key every row is matched on: (model, dtype, batch, steps)."""
    for k in ("model", "dtype"):
        if not isinstance(row.get(k), str) or not row[k]:
            raise InputError(f"{where}: '{k}' must be a non-empty string, got {json.dumps(row.get(k))}")
    batch = row.get("batch")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InputError(f"{where}: 'batch' must be a positive integer, got {json.dumps(batch)}")
    ts = row.get("timesteps")
    if ts is not None and not isinstance(ts, list):
        raise InputError(f"{where}: 'timesteps' must be a list, got {json.dumps(ts)}")
    steps = row.get("steps", len(ts) if ts else None)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"{where}: needs 'steps' or a non-empty 'timesteps'")
    # cm names a model folder by its path; diffusers rows by the folder's name.
    model = os.path.basename(row["model"].rstrip("/")) or row["model"]
    return (model, row["dtype"], batch, steps)


def load_rows(path):
    """The rows of a JSON array file, or None when the file does not exist."""
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})")
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text")
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise InputError(f"{path}: expected a JSON array of objects")
    return data


def index_cm(rows, path):
    """key -> {"on": row, "off": row} by the row's cuda_graphs flag."""
    out = {}
    for i, row in enumerate(rows or []):
        where = f"{path} row {i}"
        key = _common(row, where)
        _number(row, "ms_per_image", where)
        if not isinstance(row.get("cuda_graphs"), bool):
            raise InputError(f"{where}: 'cuda_graphs' must be true or false")
        slot = "on" if row["cuda_graphs"] else "off"
        if slot in out.setdefault(key, {}):
            raise InputError(f"{where}: a second row for {_describe(key)} with graphs {slot}")
        out[key][slot] = row
    return out


def index_diffusers(rows, path):
    """key -> {"diffusers-eager": row, "diffusers-compile": row}; a row may carry 'error' instead."""
    out = {}
    for i, row in enumerate(rows or []):
        where = f"{path} row {i}"
        key = _common(row, where)
        if row.get("impl") not in IMPLS:
            raise InputError(f"{where}: 'impl' must be one of {', '.join(IMPLS)}, got {json.dumps(row.get('impl'))}")
        if "error" in row:
            if not isinstance(row["error"], str):
                raise InputError(f"{where}: 'error' must be a string")
        else:
            _number(row, "ms_per_image", where)
        if row["impl"] in out.setdefault(key, {}):
            raise InputError(f"{where}: a second {row['impl']} row for {_describe(key)}")
        out[key][row["impl"]] = row
    return out


def _describe(key):
    model, dtype, batch, steps = key
    return f"{model} {dtype} batch {batch} {steps}-step"


def _ms(row):
    return float(row["ms_per_image"]) if row and "error" not in row else None


def combine(cm, diff):
    """One table row per (model, dtype, batch, steps) seen in either input."""
    table = []
    for key in sorted(set(cm) | set(diff)):
        c, d = cm.get(key, {}), diff.get(key, {})
        on, off = _ms(c.get("on")), _ms(c.get("off"))
        eager, comp = _ms(d.get("diffusers-eager")), _ms(d.get("diffusers-compile"))
        cms = [v for v in (on, off) if v is not None]
        best = min(cms) if cms else None
        r = {"model": key[0], "dtype": key[1], "batch": key[2], "steps": key[3],
             "cm_graphs_on_ms": on, "cm_graphs_off_ms": off,
             "diffusers_eager_ms": eager, "diffusers_compile_ms": comp, "cm_best_ms": best,
             "speedup_vs_compile": comp / best if best and comp else None,
             "speedup_vs_eager": eager / best if best and eager else None,
             "errors": {impl: row["error"] for impl, row in d.items() if "error" in row}}
        # Both sides must have timed the same schedule for the comparison to mean anything.
        ts = {json.dumps(row.get("timesteps")) for row in list(c.values()) + list(d.values())
              if row.get("timesteps") is not None}
        if len(ts) > 1:
            r["note"] = "timesteps differ between rows: " + " vs ".join(sorted(ts))
        table.append(r)
    return table


def verdict(table):
    t = TARGET
    what = f"{t['model']} {t['steps']}-step {t['dtype']} batch {t['batch']}"
    row = next((r for r in table if (r["model"], r["dtype"], r["batch"], r["steps"]) ==
                (t["model"], t["dtype"], t["batch"], t["steps"])), None)
    v = {"target": what, "min_speedup": t["min_speedup"], "holds": None, "speedup": None,
         "cm_best_ms": row and row["cm_best_ms"], "diffusers_compile_ms": row and row["diffusers_compile_ms"]}
    missing = []
    if not row or row["cm_best_ms"] is None:
        missing.append("no cm row")
    if not row or row["diffusers_compile_ms"] is None:
        err = row and row["errors"].get("diffusers-compile")
        missing.append(f"diffusers-compile failed ({err})" if err else "no diffusers-compile row")
    if missing:
        v["text"] = f"Target UNDECIDED for {what}: {'; '.join(missing)}."
        return v
    v["speedup"] = row["speedup_vs_compile"]
    v["holds"] = v["speedup"] >= t["min_speedup"]
    v["text"] = (f"Target {'HOLDS' if v['holds'] else 'DOES NOT HOLD'} for {what}: cm "
                 f"{row['cm_best_ms']:.2f} ms/image, diffusers with torch.compile "
                 f"{row['diffusers_compile_ms']:.2f} ms/image, cm {v['speedup']:.2f}x faster "
                 f"(target: at least {t['min_speedup']}x).")
    return v


def peak_rows(cm):
    out = []
    for key in sorted(cm):
        if key[2] not in PEAK_BATCHES:
            continue
        for slot in ("on", "off"):
            row = cm[key].get(slot)
            if row:
                out.append({"model": key[0], "dtype": key[1], "batch": key[2], "steps": key[3],
                            "cuda_graphs": slot == "on",
                            **{k: row.get(k) for k in ("achieved_gflops", "peak_gflops",
                                                       "fraction_of_peak", "peak_gpu_mem_mb")}})
    return out


SUMMARY = re.compile(r"(\d+)% tests passed, (\d+) tests? failed out of (\d+)")
FAILED = re.compile(r"^\s*\d+\s+-\s+(\S+)\s+\((.+)\)\s*$")


def parse_ctest(paths):
    """Totals over every ctest summary in the logs (the script runs GPU tests and the rest apart)."""
    logs = [p for p in paths if os.path.exists(p)]
    if not logs:
        return {"ran": False}
    total = failed = 0
    names = []
    for p in logs:
        try:
            with open(p, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as e:
            raise InputError(f"{p}: cannot read ({e.strerror})")
        for m in SUMMARY.finditer(text):
            failed += int(m.group(2))
            total += int(m.group(3))
        after = text.split("The following tests FAILED:")
        for block in after[1:]:
            for line in block.splitlines()[1:]:
                m = FAILED.match(line)
                if not m:
                    break
                names.append(f"{m.group(1)} ({m.group(2)})")
    return {"ran": True, "total": total, "failed": failed, "passed": total - failed,
            "failed_tests": names, "summary_found": total > 0}


def parse_phases(path):
    """gpu_check.sh's phases.tsv: name, status, seconds per line."""
    if not path or not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            try:
                if len(parts) != 3:
                    raise ValueError
                out.append({"phase": parts[0], "status": parts[1], "seconds": float(parts[2])})
            except ValueError:
                raise InputError(f"{path} line {n}: expected 'name<TAB>status<TAB>seconds', got {line.strip()!r}")
    return out


def _f(v, fmt="{:.2f}"):
    return "—" if v is None else fmt.format(v)


def markdown(table, v, peaks, tests, phases, info, inputs):
    md = ["# GPU check report", "",
          "Produced by scripts/gpu_check.sh (issue 12). Times are medians in ms per image; "
          "lower is better. Speed-up = diffusers-compile ms / cm's best ms.", "",
          "## Target", "", v["text"], ""]
    for name, path in inputs.items():
        if path is None:
            md.append(f"- {name}: not produced (see the phases below).")
    for model in sorted({r["model"] for r in table}):
        md += ["", f"## {model}", "",
               "| batch | dtype | steps | cm graphs on | cm graphs off | diffusers eager | "
               "diffusers compile | cm best vs compile |",
               "|---:|---|---:|---:|---:|---:|---:|---:|"]
        notes = []
        for r in (r for r in table if r["model"] == model):
            def d(impl, ms):
                return "failed" if impl in r["errors"] else _f(ms)
            md.append(f"| {r['batch']} | {r['dtype']} | {r['steps']} | {_f(r['cm_graphs_on_ms'])} | "
                      f"{_f(r['cm_graphs_off_ms'])} | {d('diffusers-eager', r['diffusers_eager_ms'])} | "
                      f"{d('diffusers-compile', r['diffusers_compile_ms'])} | "
                      f"{_f(r['speedup_vs_compile'], '{:.2f}x')} |")
            for impl, err in r["errors"].items():
                notes.append(f"- batch {r['batch']} {impl}: {err}")
            if "note" in r:
                notes.append(f"- batch {r['batch']}: {r['note']}")
        if notes:
            md += [""] + notes
    md += ["", "## Fraction of the GPU's matmul peak (cm, batch " +
           " and ".join(map(str, PEAK_BATCHES)) + ")", ""]
    if peaks:
        md += ["| model | dtype | batch | graphs | achieved GFLOP/s | peak GFLOP/s | of peak | peak GPU MB |",
               "|---|---|---:|---|---:|---:|---:|---:|"]
        for p in peaks:
            frac = p["fraction_of_peak"]
            md.append(f"| {p['model']} | {p['dtype']} | {p['batch']} | {'on' if p['cuda_graphs'] else 'off'} | "
                      f"{_f(p['achieved_gflops'], '{:.0f}')} | {_f(p['peak_gflops'], '{:.0f}')} | "
                      f"{_f(frac * 100 if isinstance(frac, (int, float)) else None, '{:.1f}%')} | "
                      f"{_f(p['peak_gpu_mem_mb'], '{:.0f}')} |")
    else:
        md.append("No cm row at these batch sizes.")
    md += ["", "## Tests", ""]
    if not tests["ran"]:
        md.append("ctest did not run (no log).")
    elif not tests["summary_found"]:
        md.append("ctest ran but printed no summary (crashed or stopped; see ctest.log).")
    else:
        md.append(f"{tests['passed']} of {tests['total']} passed, {tests['failed']} failed.")
        md += [f"- failed: {n}" for n in tests["failed_tests"]]
    if phases:
        md += ["", "## Phases", "", "| phase | status | seconds |", "|---|---|---:|"]
        md += [f"| {p['phase']} | {p['status']} | {p['seconds']:.1f} |" for p in phases]
    if info:
        md += ["", "## Machine", "", "```", info.rstrip(), "```"]
    return "\n".join(md) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cm", required=True, help="cm bench --json output (a JSON array)")
    ap.add_argument("--diffusers", required=True, help="bench_diffusers.py output (a JSON array)")
    ap.add_argument("--ctest", action="append", default=[], help="a ctest log (repeatable)")
    ap.add_argument("--info", help="text about the machine (cm info, nvidia-smi), quoted in the report")
    ap.add_argument("--phases", help="gpu_check.sh's phases.tsv")
    ap.add_argument("--out-dir", required=True, help="where gpu_report.md and gpu_report.json go")
    a = ap.parse_args(argv)
    try:
        cm_rows, diff_rows = load_rows(a.cm), load_rows(a.diffusers)
        table = combine(index_cm(cm_rows, a.cm), index_diffusers(diff_rows, a.diffusers))
        peaks = peak_rows(index_cm(cm_rows, a.cm))
        v = verdict(table)
        tests = parse_ctest(a.ctest)
        phases = parse_phases(a.phases)
        info = None
        if a.info and os.path.exists(a.info):
            with open(a.info, encoding="utf-8", errors="replace") as f:
                info = f.read()
        inputs = {os.path.basename(a.cm): a.cm if cm_rows is not None else None,
                  os.path.basename(a.diffusers): a.diffusers if diff_rows is not None else None}
        os.makedirs(a.out_dir, exist_ok=True)
        with open(os.path.join(a.out_dir, "gpu_report.md"), "w", encoding="utf-8") as f:
            f.write(markdown(table, v, peaks, tests, phases, info, inputs))
        with open(os.path.join(a.out_dir, "gpu_report.json"), "w", encoding="utf-8") as f:
            json.dump({"target": v, "rows": table, "peak": peaks, "tests": tests, "phases": phases,
                       "inputs": inputs}, f, indent=1)
            f.write("\n")
    except InputError as e:
        print(f"gpu_report: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"gpu_report: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    print(v["text"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
