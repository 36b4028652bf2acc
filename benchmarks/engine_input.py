#!/usr/bin/env python
"""The data engine's input step at Objects365 scale: peak memory and CPU time per box of the manifest step.

Builds Objects365-shaped detection JSON (``images`` with Objects365's fields, ``annotations`` with
``iscrowd``/``isfake``/``isreflected``, 365 ``categories`` last; 14.4 boxes per image on average,
Objects365's 25M boxes over 1.74M images; a few boxes reach out of their image) at four sizes, and
runs ``mres_engine.readers.manifest.prepare_manifest`` (8 shards) on each in a fresh subprocess, which
reports its peak RSS above its own baseline after the imports (``VmHWM`` reset through
``/proc/self/clear_refs`` where the kernel allows it, else peak minus baseline) and its CPU seconds.

Figures (one JSON line each, all from the one run):

- ``engine_input_rss_bytes_per_box`` (target <= 80): the slope of peak RSS over the number of
  boxes, fitted over the four sizes (what each more box costs; the intercept is printed too);
- ``engine_input_cpu_us_per_box``: the slope of CPU seconds over boxes, in microseconds;
- ``engine_input_objects365_peak_gib`` (target <= 2): intercept + slope x 25M boxes, the peak
  extrapolated to Objects365 (1.74M images, 25M boxes; a 5.2 GiB file);
- ``engine_input_objects365_cpu_minutes``: the CPU time extrapolated the same way.

``--source_tree`` runs another checkout's engine (e.g. ``git archive <commit> | tar -x -C /tmp/old``)
on the same files, to compare before and after a change.

    python benchmarks/engine_input.py                       # 5k, 10k, 20k, 40k images
    python benchmarks/engine_input.py --images 10000 80000 --source_tree /tmp/old
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile

from common import base_parser, emit, parse_args

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBJECTS365_IMAGES = 1_742_292
OBJECTS365_BOXES = 25_000_000
BOXES_PER_IMAGE = OBJECTS365_BOXES / OBJECTS365_IMAGES

CHILD = r"""
import json, os, sys, time
def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
try:
    from mres_engine.readers.manifest import prepare_manifest
    import mres_engine.readers.detection, numpy  # what the step imports lazily is not its memory
except ImportError:  # an engine from before readers/
    from mres_engine.manifest import prepare_manifest
    import mres_engine.stages.input, numpy
from mres_engine.options import RunnerOptions
try:
    import ijson
except ImportError:  # an engine from before the streaming reader
    pass
baseline = status("VmRSS")
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
except OSError:
    pass
cpu, wall = time.process_time(), time.perf_counter()
options = RunnerOptions(annotations=sys.argv[1], image_dir=sys.argv[2], output_dir=sys.argv[3], num_shards=8)
try:  # the synthetic input has no image files: the engine's look for a few of them is not what is measured
    info = prepare_manifest(options, check_images=False)
except TypeError:  # an engine from before that look
    info = prepare_manifest(options)
print(json.dumps({"cpu_seconds": time.process_time() - cpu, "wall_seconds": time.perf_counter() - wall,
                  "peak_rss": status("VmHWM"), "baseline_rss": baseline,
                  "num_images": info["num_images"], "num_boxes": info["num_boxes"]}))
"""


def write_objects365_like(path: str, num_images: int, seed: int = 0) -> int:
    """Objects365-shaped detection JSON with ``num_images`` images; returns the number of boxes written."""
    rng = random.Random(seed)
    num_boxes = 0
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"images": [')
        for i in range(num_images):
            width, height = rng.choice(((1024, 768), (768, 1024), (1024, 683), (800, 600), (1024, 1024)))
            image = {"height": height, "id": i + 1, "license": 5, "width": width,
                     "file_name": f"images/v2/patch{i % 51}/objects365_v2_{i + 1:08d}.jpg", "url": ""}
            f.write(("," if i else "") + json.dumps(image))
        f.write('], "annotations": [')
        for i in range(num_images):
            for _ in range(rng.randint(0, round(2 * BOXES_PER_IMAGE))):
                width, height = 1024, 768
                x, y = rng.uniform(-2, width * 0.8), rng.uniform(-2, height * 0.8)
                w, h = rng.uniform(2, width * 0.3), rng.uniform(2, height * 0.3)
                annotation = {"id": num_boxes + 1, "iscrowd": 0, "isfake": 0, "area": round(w * h, 4), "isreflected": 0,
                              "bbox": [round(x, 4), round(y, 4), round(w, 4), round(h, 4)], "image_id": i + 1,
                              "category_id": rng.randint(1, 365)}
                f.write(("," if num_boxes else "") + json.dumps(annotation))
                num_boxes += 1
        categories = [{"name": f"category {c}", "id": c} for c in range(1, 366)]
        f.write('], "categories": ' + json.dumps(categories) + ', "licenses": []}')
    return num_boxes


def run_manifest_step(annotations: str, out: str, source_tree: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source_tree, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    result = subprocess.run([sys.executable, "-c", CHILD, annotations, os.path.dirname(annotations), out],
                            env=env, cwd=source_tree, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        raise SystemExit(f"the manifest step failed with exit status {result.returncode}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def fit(xs, ys) -> tuple[float, float]:
    """Least-squares slope and intercept."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


def main():
    parser = base_parser(__doc__)
    parser.add_argument("--images", type=int, nargs="+", default=None, help="the sizes, in images (default 5000 10000 20000 40000)")
    parser.add_argument("--source_tree", default=REPO, help="the checkout whose mres_engine runs (default: this one)")
    args = parse_args(parser)
    sizes = args.images or ([500, 1000, 2000, 4000] if args.quick else [5000, 10000, 20000, 40000])
    if len(sizes) < 2:
        parser.error("--images needs two sizes at least (the figures are slopes)")
    runs = []
    with tempfile.TemporaryDirectory(prefix="engine-input-") as folder:
        for size in sizes:
            annotations = os.path.join(folder, f"objects365-{size}.json")
            boxes = write_objects365_like(annotations, size)
            run = run_manifest_step(annotations, os.path.join(folder, f"out-{size}"), os.path.abspath(args.source_tree))
            run.update(images=size, boxes_in=boxes, file_bytes=os.path.getsize(annotations),
                       peak_above_baseline=run["peak_rss"] - run["baseline_rss"])
            os.remove(annotations)
            runs.append(run)
            print(f"{size} images, {boxes} boxes: peak +{run['peak_above_baseline'] / 2**20:.1f} MiB, "
                  f"{run['cpu_seconds']:.2f} CPU s", file=sys.stderr, flush=True)
    boxes = [r["boxes_in"] for r in runs]
    rss_slope, rss_intercept = fit(boxes, [r["peak_above_baseline"] for r in runs])
    cpu_slope, cpu_intercept = fit(boxes, [r["cpu_seconds"] for r in runs])
    raw = {"runs": runs, "source_tree": os.path.abspath(args.source_tree), "boxes_per_image": round(BOXES_PER_IMAGE, 2)}
    emit("engine_input_rss_bytes_per_box", rss_slope, "<= 80", intercept_bytes=round(rss_intercept),
         description="manifest step: peak RSS per input box (slope over 4 sizes)", **raw)
    emit("engine_input_cpu_us_per_box", cpu_slope * 1e6, None, intercept_seconds=cpu_intercept,
         description="manifest step: CPU microseconds per input box (slope over 4 sizes)")
    emit("engine_input_objects365_peak_gib", (rss_intercept + rss_slope * OBJECTS365_BOXES) / 2**30, "<= 2",
         boxes=OBJECTS365_BOXES, images=OBJECTS365_IMAGES,
         description="manifest step: peak RSS extrapolated to Objects365 (25M boxes, 1.74M images), GiB")
    emit("engine_input_objects365_cpu_minutes", (cpu_intercept + cpu_slope * OBJECTS365_BOXES) / 60, None,
         boxes=OBJECTS365_BOXES, images=OBJECTS365_IMAGES,
         description="manifest step: CPU minutes extrapolated to Objects365 (25M boxes, 1.74M images)")


if __name__ == "__main__":
    main()
