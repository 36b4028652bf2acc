#!/usr/bin/env python
"""Run every benchmark script (`make bench`), collect their JSON lines in benchmarks/results.json, print a table.

Each script runs in its own process, on the same device (CUDA when present, else CPU), and prints one JSON line per
figure; lines that are not JSON (progress, warnings) pass through. A script that fails is reported and the others
still run; the exit status is then 1.

    python benchmarks/run_all.py                        # all scripts, default sizes
    python benchmarks/run_all.py --threads 1 --note "shared 2-core machine"
    python benchmarks/run_all.py --only evaluator_masks data_loading --quick
"""

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import default_device, device_info

HERE = Path(__file__).resolve().parent
# Cheap ones first, so that a broken environment shows early.
SCRIPTS = ("evaluator_masks", "data_loading", "engine_input", "post_processing", "pipeline_expressions", "app_steps",
           "demo_training", "forward_overhead", "vs_clipseg", "segmenters", "training_sharing", "int8_quantization",
           "onnx_runtime")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads in every script")
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, default=None)
    parser.add_argument("--quick", action="store_true", help="smallest sizes: checks that every script runs")
    parser.add_argument("--note", default=None, help="written into results.json (e.g. how loaded the machine was)")
    parser.add_argument("--output", default=str(HERE / "results.json"))
    parser.add_argument("--merge", action="store_true",
                        help="with --only: replace those scripts' figures in --output and keep the others' (each "
                             "script's run recorded under 'runs': commit, time, device)")
    args = parser.parse_args()
    if args.merge and not args.only:
        parser.error("--merge needs --only: it replaces the figures of the scripts run and keeps the others'")
    if args.threads:
        torch.set_num_threads(args.threads)  # so that the device facts below name the scripts' thread count

    passthrough = ["--device", args.device] + (["--threads", str(args.threads)] if args.threads else [])
    passthrough += ["--quick"] if args.quick else []
    figures, failures, wall = [], {}, {}
    started = time.perf_counter()
    for name in args.only or SCRIPTS:
        print(f"==> {name}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, str(HERE / f"{name}.py"), *passthrough], cwd=HERE,
                                   stdout=subprocess.PIPE, text=True)
        for line in process.stdout:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                sys.stderr.write(line)
                continue
            record["script"] = f"benchmarks/{name}.py"
            figures.append(record)
            print(f"    {record['figure']}: {record['value']} (target {record['target']}, met {record['met']})",
                  file=sys.stderr, flush=True)
        if process.wait() != 0:
            failures[name] = process.returncode
            print(f"    {name} FAILED with exit status {process.returncode}", file=sys.stderr, flush=True)
        wall[name] = round(time.perf_counter() - start, 1)

    results = {
        "generated_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "benchmarks/run_all.py", *sys.argv[1:]]),
        "device": device_info(args.device),
        "git": git_state(),
        "threads": torch.get_num_threads() if args.threads is None else args.threads,
        "quick": args.quick,
        "note": args.note,
        "wall_seconds": {"total": round(time.perf_counter() - started, 1), **wall},
        "failures": failures,
        "figures": figures,
    }
    if args.merge and Path(args.output).is_file():
        results = merged(json.loads(Path(args.output).read_text()), results, args.only)
    Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    print(markdown_table(figures, results["device"]))
    print(f"\nwritten: {args.output} ({results['wall_seconds']['total']} s)", file=sys.stderr)
    sys.exit(1 if failures else 0)


HEADER = ("generated_utc", "command", "git", "device", "threads", "quick", "note")


def merged(previous: dict, current: dict, scripts) -> dict:
    """`previous` with the figures of `scripts` replaced by `current`'s, in `run_all.py`'s script order. The header
    is the latest run's; where, when and how each script's figures were measured is kept per script under `runs`
    (a figure kept from an earlier run keeps that run's header there)."""
    ran = {f"benchmarks/{name}.py" for name in scripts}
    kept = [record for record in previous.get("figures", []) if record.get("script") not in ran]
    order = {f"benchmarks/{name}.py": index for index, name in enumerate(SCRIPTS)}
    figures = sorted(kept + current["figures"], key=lambda record: order.get(record.get("script"), len(order)))
    runs = dict(previous.get("runs", {}))
    for record in kept:
        runs.setdefault(record["script"], {key: previous.get(key) for key in HEADER})
    for name in scripts:
        runs[f"benchmarks/{name}.py"] = {**{key: current[key] for key in HEADER},
                                         "wall_seconds": current["wall_seconds"].get(name)}
    runs = {script: runs[script] for script in sorted(runs, key=lambda script: order.get(script, len(order)))
            if script in {record.get("script") for record in figures}}
    failures = {name: code for name, code in previous.get("failures", {}).items() if name not in scripts}
    return {**current, "figures": figures, "runs": runs, "failures": {**failures, **current["failures"]}}


def git_state() -> dict:
    """The commit measured, and whether the measured packages had uncommitted changes."""
    def git(*command):
        return subprocess.run(["git", *command], cwd=HERE, capture_output=True, text=True).stdout.rstrip()

    return {"commit": git("rev-parse", "HEAD"),
            "uncommitted_changes_in": git("status", "--porcelain", "--", "../modeling_unires", "../unires",
                                          "../dataset_scripts").splitlines()}


def markdown_table(figures, device) -> str:
    where = device.get("gpu") or f"{device['cpu']} CPU ({device['cpu_count']} cores)"
    lines = ["| figure | measured | target | met | device |", "|---|---|---|---|---|"]
    for record in figures:
        met = {True: "yes", False: "**no**", None: "—"}[record["met"]]
        lines.append(f"| {record.get('description', record['figure'])} | {record['value']:.3g} | "
                     f"{record['target'] or '—'} | {met} | {where} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
