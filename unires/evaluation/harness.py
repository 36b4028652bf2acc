"""One MRES evaluation for every model: a segmenter, a dataset split, the metrics, every convention stated.

This is the evaluation's one front door. Every model, the trivial baselines included, is a [`Segmenter`] (adapters in
`segmenters`, listed once in `registry`). `accumulate_metrics` is the one loop (every sentence on its own, streaming
metrics, a share of the images per process); `evaluate_segmenter` computes its metrics; `run_evaluation` adds loading
(model by type, dataset by name / folder / Hub id), the dataset's identity and the conventions, and returns one
JSON-ready result; `markdown_report` renders it as a table per split (object-only, part-only, object+part, as the
paper's Table 3), and `compare_table` puts several results in one table.

Resolution is the one choice the loop itself makes: "original" compares at each image's own size (CRIS, the paper);
"input" compares at the model's square input size (LAVT), the ground truth resized there with nearest-neighbour
sampling.

Metric names: mIoU is the mean of per-expression IoU (LISA and GroundingSuite call it gIoU); oIoU is total
intersection over total union (cIoU). Every sentence of a referent is one expression, scored on its own (PSALM's
RefCOCO script joins a referent's sentences into one prompt: that is another number).
"""

from __future__ import annotations

import platform
import time
from dataclasses import replace
from itertools import islice
from typing import Iterable, Mapping, Optional, Sequence

from dataset_scripts.features import sentences_of
from dataset_scripts.masks import decode_mask

from .conventions import conventions_for, conventions_markdown
from .dataset_identity import annotation_summary, describe, open_split
from .metrics import GROUPS, MRESMetricAccumulator, MRESMetricOptions
from .registry import BASELINES, foreign_options
from .segmenters.base import Segmenter, resize_mask

RESULT_FORMAT = "unires-mres-evaluation/1"
EXPRESSION_RULE = ("one sentence per expression: every sentence of a referent is segmented and scored on its own "
                   "(not joined into one prompt)")


class NothingEvaluatedError(ValueError):
    """The request evaluated no expression (an empty split, `max_images=0`, a granularity with no referent)."""


def metric_conventions(options: MRESMetricOptions) -> dict:
    """The metric-side conventions in words, beside the options themselves."""
    resolution = ("original image size" if options.resolution == "original"
                  else f"model input size {options.input_size[0]}x{options.input_size[1]} (ground truth resized "
                       "nearest-neighbour)")
    return {
        "resolution": resolution,
        "threshold": options.threshold,
        "prec_comparison": f"Prec@X counts IoU {options.prec_comparison} X",
        "empty_gt": ("empty prediction on empty ground truth counts IoU 1" if options.empty_gt == "one_if_both_empty"
                     else "empty prediction on empty ground truth counts IoU 0"),
        "empty_prediction": "an empty predicted mask is scored as it is (IoU 0 against a non-empty ground truth)",
        "expressions": EXPRESSION_RULE,
        "mIoU": "mean of per-expression IoU (= gIoU)",
        "oIoU": "total intersection / total union over expressions (= cIoU)",
        "part_object_confusion": "share of part expressions whose prediction overlaps the parent object more than "
                                 "the part (IoU with parent > IoU with part)",
    }


# ------------------------------------------------------------------------------------------------------------------
# The loop


def _queries(row: dict, granularity: Optional[str]):
    """(text, true mask RLE, granularity, parent mask RLE) for every sentence of every referent."""
    by_id = {r["referent_id"]: r for r in row["referents"]}
    for referent in row["referents"]:
        if granularity is not None and referent["granularity"] != granularity:
            continue
        parent = by_id.get(referent.get("parent_id")) if referent["granularity"] == "part" else None
        for sentence in sentences_of(referent):
            yield sentence, referent["mask"], referent["granularity"], parent["mask"] if parent else None


def _options_for(segmenter: Segmenter, options: Optional[MRESMetricOptions]) -> MRESMetricOptions:
    """The metric options as applied: the segmenter's threshold, and at resolution "input" its input size."""
    options = options or MRESMetricOptions()
    if segmenter.threshold is not None and options.threshold != segmenter.threshold:
        options = replace(options, threshold=segmenter.threshold)
    if options.resolution == "input":
        input_size = segmenter.input_size
        if options.input_size is None:
            if not input_size:
                raise ValueError(f"resolution='input' needs the model's input size, which the {segmenter.model_type} "
                                 "segmenter does not know: pass MRESMetricOptions(input_size=...)")
            # Recorded in the results: a number at "input" resolution means nothing without the size.
            options = replace(options, input_size=(input_size, input_size))
        elif input_size and tuple(options.input_size) != (input_size, input_size):
            raise ValueError(f"the {segmenter.model_type} segmenter's input size {input_size} disagrees with "
                             f"options.input_size={tuple(options.input_size)}")
    return options


def accumulate_metrics(
    segmenter: Segmenter,
    rows: Iterable[dict],
    *,
    options: Optional[MRESMetricOptions] = None,
    batch_size: int = 8,
    max_images: Optional[int] = None,
    granularity: Optional[str] = None,
    process_index: int = 0,
    num_processes: int = 1,
    progress: bool = True,
) -> MRESMetricAccumulator:
    """Run `segmenter` over MRES image rows (every sentence of every referent on its own) and accumulate the metrics.

    With several processes, each takes every `num_processes`-th image starting at `process_index`; merge the returned
    accumulators (`MRESMetricAccumulator.merge`). Nothing is kept but the running sums.
    """
    from tqdm.auto import tqdm

    options = _options_for(segmenter, options)

    def size_of(row):
        return tuple(options.input_size) if options.resolution == "input" else (row["height"], row["width"])

    accumulator = MRESMetricAccumulator(options)
    total = max_images if max_images is not None else (len(rows) if hasattr(rows, "__len__") else None)
    rows = islice(rows, max_images) if max_images is not None else rows
    bar = tqdm(total=total, desc="evaluating", unit="img", disable=not progress)
    batch: list[dict] = []

    def flush():
        queries = [list(_queries(row, granularity)) for row in batch]
        sizes = [size_of(row) for row in batch]
        predictions = segmenter.masks_of_rows(batch, [[q[0] for q in qs] for qs in queries], sizes)
        preds, refs, grans, parents = [], [], [], []
        for qs, size, row_preds in zip(queries, sizes, predictions):
            for (_, rle, gran, parent_rle), pred in zip(qs, row_preds):
                preds.append(pred)
                refs.append(resize_mask(decode_mask(rle), size))
                grans.append(gran)
                parents.append(None if parent_rle is None else resize_mask(decode_mask(parent_rle), size))
        if preds:
            accumulator.update(preds, refs, grans, parent_masks=parents)
        bar.update(len(batch))
        batch.clear()

    for index, row in enumerate(rows):
        if index % num_processes != process_index:
            continue
        batch.append(row)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    bar.close()
    return accumulator


def evaluate_segmenter(
    segmenter: Segmenter,
    rows,
    *,
    options: Optional[MRESMetricOptions] = None,
    batch_size: int = 8,
    max_images: Optional[int] = None,
    granularity: Optional[str] = None,
    progress: bool = True,
    what: str = "the data",
) -> dict:
    """Metrics of `segmenter` on MRES `rows`; the options' threshold is the segmenter's (it is what was applied).

    Raises `NothingEvaluatedError` when no expression was scored.
    """
    if max_images is not None and max_images < 1:
        raise NothingEvaluatedError(f"max_images={max_images}: nothing would be evaluated; pass a positive number "
                                    "or leave it unset for every image")
    accumulator = accumulate_metrics(segmenter, rows, options=options, batch_size=batch_size, max_images=max_images,
                                     granularity=granularity, progress=progress)
    metrics = accumulator.compute()
    if metrics["object+part"]["count"] == 0:
        raise NothingEvaluatedError(
            f"nothing was evaluated: {what} gave 0 expressions"
            + (f" (max_images={max_images})" if max_images is not None else "")
            + (f" of granularity {granularity!r}" if granularity else "")
            + ". Check the split name and that the split has referents with sentences.")
    return metrics


def run_evaluation(
    model: Optional[str],
    model_type: str,
    dataset: str,
    splits: Sequence[str],
    *,
    data_dir: Optional[str] = None,
    dataset_config: Optional[str] = None,
    revision: Optional[str] = None,
    cache_dir: Optional[str] = None,
    resolution: str = "original",
    threshold: Optional[float] = None,
    prec_comparison: str = ">=",
    empty_gt: str = "one_if_both_empty",
    batch_size: int = 8,
    max_images: Optional[int] = None,
    granularity: Optional[str] = None,
    device: Optional[str] = None,
    segmenter: Optional[Segmenter] = None,
    label: Optional[str] = None,
    baselines: Sequence[str] = (),
    progress: bool = True,
    **segmenter_options,
) -> dict:
    """Load the model (or use `segmenter`) and the dataset, evaluate every split; one JSON-ready result.

    `model_type` is a name of `registry.ADAPTERS`; `threshold`, `device` and `segmenter_options` go to its loader,
    which refuses an option it does not take (`instance_rule` with `clipseg`). `baselines` (`full_image`,
    `largest_object_box`) are scored on the same rows with the same options.
    """
    if not splits:
        raise NothingEvaluatedError("no split given: nothing would be evaluated")
    if max_images is not None and max_images < 1:
        raise NothingEvaluatedError(f"max_images={max_images}: nothing would be evaluated; pass a positive number "
                                    "or leave it unset for every image")
    unknown = [name for name in baselines if name not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {', '.join(BASELINES)}")
    loader_options = {key: value for key, value in
                      dict(segmenter_options, threshold=threshold, device=device).items() if value is not None}
    if segmenter is None:  # refused before the data is read, as the loader would refuse it after
        refusal = foreign_options(model_type, loader_options)
        if refusal:
            raise ValueError(refusal)
    elif segmenter_options:
        raise ValueError(f"{', '.join(sorted(segmenter_options))}: options of a model_type's loader, but a segmenter "
                         "was given: build it with them instead")
    if model is not None and segmenter is None:  # a mistyped folder is a missing path, named before the data is read
        from run_support.sources import check_local_or_hub

        check_local_or_hub(model, kind="model")
    # The data first: a wrong name or split fails before a large model is loaded.
    opened = [(split, *open_split(dataset, split, data_dir=data_dir, config=dataset_config, revision=revision,
                                  cache_dir=cache_dir)) for split in splits]
    from .segmenters import load_segmenter

    if segmenter is None:
        segmenter = load_segmenter(model_type, model, **loader_options)
    base_options = MRESMetricOptions(resolution=resolution, prec_comparison=prec_comparison, empty_gt=empty_gt,
                                     threshold=segmenter.threshold if segmenter.threshold is not None else
                                     (threshold if threshold is not None else MRESMetricOptions.threshold))
    references = {name: load_segmenter(name) for name in baselines}
    result = {
        "format": RESULT_FORMAT,
        "model": {"name": label or model or model_type, "id": model, "type": model_type,
                  "segmenter": segmenter.conventions()},
        "splits": {},
    }
    for split, rows, identity in opened:
        counts, fingerprint = annotation_summary(rows, max_images)
        identity.update(counts=counts, annotations_sha256=fingerprint, max_images=max_images,
                        split_images=len(rows) if hasattr(rows, "__len__") else None)
        started = time.perf_counter()
        metrics = evaluate_segmenter(segmenter, rows, options=base_options, batch_size=batch_size,
                                     max_images=max_images, granularity=granularity, progress=progress,
                                     what=f"split {split!r} of {dataset}")
        seconds = time.perf_counter() - started
        options = MRESMetricOptions.from_dict(metrics["options"])
        result["splits"][split] = {
            "dataset": identity,
            "conventions": {**metric_conventions(options), "granularity": granularity or "all"},
            # the benchmark's own metric conventions beside ours (None for data that is no benchmark of the table)
            "benchmark_conventions": conventions_for(identity, options),
            "metrics": metrics,
            "baselines": evaluate_segmenters(references, rows, options=options, batch_size=batch_size,
                                             max_images=max_images, granularity=granularity),
            "seconds": round(seconds, 2),
            "expressions_per_second": round(metrics["object+part"]["count"] / seconds, 3) if seconds > 0 else None,
        }
    result["environment"] = _environment(device)
    return result


def evaluate_segmenters(segmenters: Mapping[str, Segmenter], rows, *, options: MRESMetricOptions,
                        progress: bool = False, **kwargs) -> dict:
    """{name: metrics} of several segmenters on the same rows with the same metric options (each segmenter's own
    threshold applies to its probabilities: a baseline's masks have none)."""
    return {name: evaluate_segmenter(segmenter, rows, options=options, progress=progress, **kwargs)
            for name, segmenter in segmenters.items()}


def _environment(device) -> dict:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__,
            "device": device or ("cuda" if torch.cuda.is_available() else "cpu")}


# ------------------------------------------------------------------------------------------------------------------
# Reporting


def _value(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _prec_keys(metrics: dict) -> list:
    return [key for key in metrics["object+part"] if key.startswith("Prec@")]


def _row_cells(metrics: dict, group: str, prec_keys) -> list:
    group_metrics = metrics[group]
    cells = [_value(group_metrics.get(key)) for key in ["mIoU", "oIoU", *prec_keys]]
    cells.append(_value(group_metrics.get("part_object_confusion")))
    cells.append(str(group_metrics.get("count", 0)))
    return cells


def _header(first_columns, prec_keys) -> list[str]:
    header = [*first_columns, "mIoU (gIoU)", "oIoU (cIoU)", *prec_keys, "part→object confusion", "count"]
    return ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]


def markdown_report(result: dict) -> str:
    """Markdown: per split, the dataset identity, the conventions and the table (object / part / object+part)."""
    model = result["model"]
    lines = [f"# {model['name']} ({model['type']})", ""]
    segmenter = model.get("segmenter", {})
    lines.append("Segmenter: " + ", ".join(f"{k}={v}" for k, v in segmenter.items() if v is not None))
    for split, entry in result["splits"].items():
        metrics = entry["metrics"]
        prec_keys = _prec_keys(metrics)
        lines += ["", f"## {split}", "", "Dataset: " + describe(entry["dataset"]), ""]
        lines += [f"- {key}: {value}" for key, value in entry["conventions"].items()]
        if entry.get("benchmark_conventions"):
            lines += ["", *conventions_markdown(entry["benchmark_conventions"])]
        lines.append("")
        lines += _header(["method", "setting"], prec_keys)
        for method, method_metrics in [(model["name"], metrics), *entry.get("baselines", {}).items()]:
            for group in GROUPS:
                lines.append("| " + " | ".join([method, group, *_row_cells(method_metrics, group, prec_keys)]) + " |")
    return "\n".join(lines) + "\n"


# What of a dataset's identity makes two numbers incomparable (paths and file hashes may differ for the same data:
# a raw release and its published copy share their annotations' sha256).
DATA_FIELDS = ("name", "builder", "config", "revision", "annotations_sha256", "counts", "max_images", "split_images")


def row_labels(names: Sequence[str]) -> list[str]:
    """One label per result: its name, and "name (2)", "name (3)", ... for later results of the same name."""
    labels, seen = [], {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        labels.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return labels


def _differences(values: dict, what: str) -> list[str]:
    """One note per key whose value is not the same across rows: `what: key differs: label: value; ...`."""
    notes = []
    keys = sorted(set().union(*(v.keys() for v in values.values())))
    for key in keys:
        by_label = {label: v.get(key) for label, v in values.items()}
        if len({repr(value) for value in by_label.values()}) > 1:
            notes.append(f"{what}: {key} differs: " + "; ".join(f"{label}: {value}" for label, value in by_label.items()))
    return notes


def compare_table(results: Sequence[dict], names: Optional[Sequence[str]] = None,
                  sources: Optional[Sequence[str]] = None) -> str:
    """One table across results (and their splits), one row per result even when two share a name, with a note
    for every difference between them in data (the dataset's identity), conventions (the metric options) and
    adapter (model type and its options). `sources` (e.g. the files read) name a result in errors."""
    if not results:
        raise ValueError("compare needs at least one result")
    sources = list(sources) if sources else [f"result {index + 1}" for index in range(len(results))]
    for source, result in zip(sources, results):
        if not isinstance(result, dict) or result.get("format") != RESULT_FORMAT:
            found = result.get("format") if isinstance(result, dict) else type(result).__name__
            raise ValueError(f"{source}: not a result of this harness (format {found!r}, expected {RESULT_FORMAT!r})")
    names = list(names) if names else [r["model"]["name"] for r in results]
    labels = row_labels(names)
    first = next(iter(results[0]["splits"].values()))["metrics"]
    prec_keys = _prec_keys(first)
    lines = _header(["model", "split", "setting"], prec_keys)
    datasets, conventions = {}, {}
    for label, result in zip(labels, results):
        for split, entry in result["splits"].items():
            rows = [(label, entry["metrics"])]
            rows += [(f"{label}: baseline {b}", m) for b, m in entry.get("baselines", {}).items()]
            for row_name, metrics in rows:
                for group in GROUPS:
                    lines.append("| " + " | ".join([row_name, split, group, *_row_cells(metrics, group, prec_keys)])
                                 + " |")
            identity = {key: entry["dataset"].get(key) for key in DATA_FIELDS}
            identity["annotations_sha256"] = (identity["annotations_sha256"] or "")[:16]
            datasets.setdefault(split, {})[label] = identity
            # The conventions in words, and the metric options they do not spell (Prec@X thresholds, input size).
            options = entry["metrics"].get("options", {})
            conventions.setdefault(split, {})[label] = {
                **entry["conventions"], **{k: v for k, v in options.items() if k not in entry["conventions"]}}
    # The model type as given (for a callable, its module:function) and every option the adapter states.
    adapters = {label: {**result["model"].get("segmenter", {}), "model_type": result["model"].get("type")}
                for label, result in zip(labels, results)}
    thresholds = {label: adapter.get("threshold") for label, adapter in adapters.items()}
    thresholds_differ = len({repr(value) for value in thresholds.values()}) > 1
    notes = []
    for split, by_label in datasets.items():
        data_notes = _differences(by_label, f"{split}: data")
        if data_notes:
            notes.append(f"**{split}: the rows were evaluated on different data**")
            notes += data_notes
        notes += [note for note in _differences(conventions[split], f"{split}: conventions")
                  if not (thresholds_differ and note.startswith(f"{split}: conventions: threshold "))]
    if thresholds_differ:  # one note: the threshold is the segmenter's, and the metrics applied the same one
        notes.append("thresholds differ (each segmenter's stated one): "
                     + "; ".join(f"{label}: {value}" for label, value in thresholds.items()))
    notes += [note for note in _differences(adapters, "adapter") if not note.startswith("adapter: threshold ")]
    table = "\n".join(lines)
    if notes:
        table += "\n\n" + "\n".join(f"- {note}" for note in notes)
    return table
