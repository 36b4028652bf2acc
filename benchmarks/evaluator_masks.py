#!/usr/bin/env python
"""Evaluator masks/s: `unires.evaluation.MRESMetricAccumulator` / `compute_mres_metrics` vs bare numpy (>= 0.8).

The bare side does only the arithmetic every IoU metric needs: `(prediction & reference).sum()` and
`(prediction | reference).sum()` per mask (and per part against its parent object, where the metric side computes the
part-object confusion too). Two input forms, each timed against its own bare loop:
- `batched`: an (N, H, W) bool array per update, then `compute()` (the vectorised path);
- `list`: lists of 2-D bool arrays with parent masks for the part expressions, as `unires.evaluation.harness`
  passes them (images of any size), through `compute_mres_metrics`.

Masks are 480x640 rectangles (a COCO-sized image), half objects and half parts.

    python benchmarks/evaluator_masks.py
"""

import numpy as np

from unires.evaluation import MRESMetricAccumulator, compute_mres_metrics

from common import base_parser, device_info, emit, median, paired_ratio, paired_timings, parse_args, rounded


def rectangles(rng, count, height, width):
    masks = np.zeros((count, height, width), dtype=bool)
    for mask in masks:
        y, x = rng.integers(0, height // 2), rng.integers(0, width // 2)
        mask[y : y + rng.integers(8, height // 2), x : x + rng.integers(8, width // 2)] = True
    return masks


def main():
    parser = base_parser(__doc__)
    parser.add_argument("--masks", type=int, default=None, help="masks per update (default 64)")
    parser.add_argument("--updates", type=int, default=4)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    args = parse_args(parser)
    count = args.masks or (8 if args.quick else 64)
    repeats = args.repeats or (1 if args.quick else 7)
    rng = np.random.default_rng(0)
    batches = [(rectangles(rng, count, args.height, args.width), rectangles(rng, count, args.height, args.width),
                rectangles(rng, count, args.height, args.width)) for _ in range(args.updates)]
    granularities = ["object", "part"] * (count // 2) + ["object"] * (count % 2)
    total = count * args.updates
    info = device_info("cpu")

    def accumulator_batched():
        accumulator = MRESMetricAccumulator()
        for predictions, references, _ in batches:
            accumulator.update(predictions, references, granularities)
        return accumulator.compute()

    def bare_batched():
        ious = []
        for predictions, references, _ in batches:
            intersection = (predictions & references).sum(axis=(1, 2))
            union = (predictions | references).sum(axis=(1, 2))
            ious.append(intersection / np.maximum(union, 1))
        return np.concatenate(ious).mean()

    def bare_count_nonzero():  # the fastest plain-numpy form, reported beside the figure
        ious = []
        for predictions, references, _ in batches:
            flat_p, flat_r = predictions.reshape(count, -1), references.reshape(count, -1)
            intersection = np.count_nonzero(flat_p & flat_r, axis=1)
            ious.append(intersection / np.maximum(np.count_nonzero(flat_p | flat_r, axis=1), 1))
        return np.concatenate(ious).mean()

    as_lists = [(list(p), list(r), [parent if g == "part" else None for parent, g in zip(parents, granularities)])
                for p, r, parents in batches]

    def metrics_list():
        predictions = [m for p, _, _ in as_lists for m in p]
        references = [m for _, r, _ in as_lists for m in r]
        parents = [m for _, _, q in as_lists for m in q]
        return compute_mres_metrics(predictions, references, granularities * args.updates, parent_masks=parents)

    def bare_list():
        ious = []
        for predictions, references, parents in as_lists:
            for prediction, reference, parent in zip(predictions, references, parents):
                ious.append((prediction & reference).sum() / max((prediction | reference).sum(), 1))
                if parent is not None:
                    ious.append((prediction & parent).sum() / max((prediction | parent).sum(), 1))
        return float(np.mean(ious))

    for name, metric_fn, bare_fn, description in (
        ("batched", accumulator_batched, bare_batched,
         f"MRESMetricAccumulator.update on ({count}, H, W) bool arrays + compute()"),
        ("list", metrics_list, bare_list,
         "compute_mres_metrics on lists of 2-D bool arrays with parent masks for parts (the evaluator's form)"),
    ):
        calls = {"metrics": metric_fn, "bare": bare_fn}
        if name == "batched":
            calls["bare_count_nonzero"] = bare_count_nonzero
        timings = paired_timings(calls, repeats, "cpu")
        extra = {}
        if name == "batched":
            extra["ratio_vs_bare_count_nonzero"] = round(
                paired_ratio(timings["bare_count_nonzero"], timings["metrics"]), 4)
        emit(f"evaluator_{name}_over_bare_numpy", paired_ratio(timings["bare"], timings["metrics"]), ">= 0.8",
             description=f"masks/s: {description} / bare numpy AND/OR/sum", **extra,
             masks_per_s={n: total / median(v) for n, v in timings.items()},
             timings_s=rounded(timings),
             setup=dict(masks=total, mask_size=[args.height, args.width], repeats=repeats), device=info)


if __name__ == "__main__":
    main()
