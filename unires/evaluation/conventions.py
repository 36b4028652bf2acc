"""Each benchmark's own metric conventions beside ours: one table, read by the result JSON and the Markdown report.

A number computed here is comparable with a paper's only under that benchmark's conventions: what its metric
names mean in ours (GroundingSuite's and LISA's gIoU is our mIoU, their cIoU our oIoU), how an empty target
counts, which field is the expression, which split was read, what counts as the target. Each benchmark's entry is
written once, in its builder (``METRIC_CONVENTIONS`` of `dataset_scripts.instructpart`, `.groundingsuite`,
`.reasonseg`, from that project's own loader and evaluator; the dataset card carries it too), and indexed here.

`conventions_for(identity, options)` finds the entry for what was read (a raw release by its builder; a published
copy by its card's name) and adds `options_as_theirs`: for each harness option the benchmark's evaluator implies
(resolution, empty_gt, threshold), its value there, this run's, and whether they agree.
"""

from __future__ import annotations

from typing import Optional

from dataset_scripts import groundingsuite, instructpart, reasonseg

# benchmark -> its conventions (the one table)
BENCHMARK_CONVENTIONS = {
    "instructpart": instructpart.METRIC_CONVENTIONS,
    "groundingsuite": groundingsuite.METRIC_CONVENTIONS,
    "reasonseg": reasonseg.METRIC_CONVENTIONS,
}
# our builder class -> benchmark (a raw release read through `dataset_identity.open_split`)
BUILDERS = {"InstructPart": "instructpart", "GroundingSuiteEval": "groundingsuite", "ReasonSeg": "reasonseg"}
# the start of the `pretty_name` each builder writes into the dataset card -> benchmark (a published copy)
CARD_NAMES = {"InstructPart": "instructpart", "GroundingSuite-Eval": "groundingsuite", "ReasonSeg": "reasonseg"}


def benchmark_of(identity: dict) -> Optional[str]:
    """The benchmark a dataset identity (`dataset_identity.open_split`) is, or None for any other data."""
    builder = identity.get("builder") or ""
    if builder in BUILDERS:
        return BUILDERS[builder]
    return next((key for prefix, key in CARD_NAMES.items() if builder.startswith(prefix + " (MRES schema")), None)


def conventions_for(identity: dict, options) -> Optional[dict]:
    """The benchmark's conventions (None for data that is no benchmark of the table), with `options_as_theirs`:
    per harness option its evaluator implies, {"theirs", "this_run", "same"} for this run's `options`
    (an `MRESMetricOptions`)."""
    key = benchmark_of(identity)
    if key is None:
        return None
    entry = BENCHMARK_CONVENTIONS[key]
    compared = {}
    for option, theirs in entry.get("harness_options", {}).items():
        ours = getattr(options, option, None)
        same = (abs(float(ours) - float(theirs)) < 1e-9) if option == "threshold" and ours is not None else ours == theirs
        compared[option] = {"theirs": theirs, "this_run": ours, "same": bool(same)}
    return {"key": key, **entry, "options_as_theirs": compared}


def conventions_markdown(conventions: dict) -> list[str]:
    """Markdown lines: the benchmark's conventions, and which of this run's options differ from its evaluator's."""
    lines = [f"Benchmark conventions ({conventions['benchmark']}), beside ours:", ""]
    for key, value in conventions.items():
        if key in ("key", "benchmark", "harness_options", "options_as_theirs"):
            continue
        if isinstance(value, dict):
            lines.append(f"- {key}:")
            lines += [f"  - {name}: {text}" for name, text in value.items()]
        else:
            lines.append(f"- {key}: {value}")
    compared = conventions.get("options_as_theirs") or {}
    differing = [f"{name} (theirs {v['theirs']}, this run {v['this_run']})" for name, v in compared.items()
                 if not v["same"]]
    if differing:
        lines.append("- options unlike their evaluator's: " + "; ".join(differing))
    elif compared:
        lines.append("- options as their evaluator's: " + ", ".join(f"{n}={v['theirs']}" for n, v in compared.items()))
    return lines
