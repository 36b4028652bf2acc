"""The one list of evaluation adapters: every `--model_type`, the class that implements it and the options it takes.

The command line (`examples/evaluate_model.py`: its `--model_type` and `--baselines` choices, and the refusal of an
option the chosen adapter does not take), `load_segmenter` and the harness all read this table, and a test keeps the
segmenters' documentation equal to it. It imports nothing heavy, so a command line can check its arguments before
torch loads; the adapter classes are named as `"module:Class"` and imported on use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

CALLABLE_PREFIX = "callable:"


@dataclass(frozen=True)
class Adapter:
    """One `--model_type`.

    Attributes:
        model_type: its name (`callable` is spelled `callable:<module:fn>` on the command line).
        segmenter: the [`Segmenter`] class, as `"module:Class"`.
        summary: what it wraps, in a few words (help texts and docs).
        options: the keyword options its loader takes (`from_pretrained`, `from_spec` or the constructor).
        needs_model: whether it loads a checkpoint (`--model`).
        baseline: a trivial reference that needs no model; also scored beside another with `--baselines`.
    """

    model_type: str
    segmenter: str
    summary: str
    options: tuple[str, ...] = ()
    needs_model: bool = True
    baseline: bool = False

    @property
    def spelling(self) -> str:
        """How `--model_type` spells it."""
        return f"{CALLABLE_PREFIX}<module:fn>" if self.model_type == "callable" else self.model_type

    def segmenter_class(self):
        module, _, name = self.segmenter.partition(":")
        return getattr(importlib.import_module(module), name)


_SEGMENTERS = "unires.evaluation.segmenters"
ADAPTERS: dict[str, Adapter] = {
    adapter.model_type: adapter
    for adapter in (
        Adapter("unires", f"{_SEGMENTERS}.unires:UniRESSegmenter", "processor → model → post_process_masks",
                ("device", "threshold", "trust_remote_code", "fast_inference")),
        Adapter("onnx", f"{_SEGMENTERS}.onnx:OnnxSegmenter",
                "UniRES exported to ONNX (examples/export.py), run by ONNX Runtime", ("device", "threshold")),
        Adapter("clipseg", f"{_SEGMENTERS}.clipseg:CLIPSegSegmenter",
                "CLIPSegForImageSegmentation, logits resized to the compared size",
                ("device", "threshold", "batch_size")),
        Adapter("sam3", f"{_SEGMENTERS}.sam3:Sam3Segmenter",
                "Sam3Model, the expression as text prompt, instances merged by a stated rule",
                ("device", "threshold", "batch_size", "instance_rule", "score_threshold")),
        Adapter("pipeline", f"{_SEGMENTERS}.pipeline:PipelineSegmenter",
                "our pipeline, or any image-segmentation one (labels matched)",
                ("device", "threshold", "task", "trust_remote_code")),
        Adapter("promptable_concept", f"{_SEGMENTERS}.promptable_concept:PromptableConceptSegmenter",
                "any promptable-concept-segmentation pipeline (SAM 3's), instances merged by a stated rule",
                ("device", "threshold", "instance_rule", "score_threshold", "trust_remote_code")),
        Adapter("callable", f"{_SEGMENTERS}.callable:CallableSegmenter",
                "a plain function segment(image, expressions), for models outside transformers",
                ("threshold",), needs_model=False),
        Adapter("full_image", f"{_SEGMENTERS}.baselines:FullImageSegmenter",
                "trivial baseline: the whole image for every expression", needs_model=False, baseline=True),
        Adapter("largest_object_box", f"{_SEGMENTERS}.baselines:LargestObjectBoxSegmenter",
                "trivial baseline: the filled box of the image's largest annotated object", needs_model=False,
                baseline=True),
    )
}

MODEL_TYPES = tuple(adapter.spelling for adapter in ADAPTERS.values())
"""Every `--model_type` as the command line spells it."""
BASELINES = tuple(name for name, adapter in ADAPTERS.items() if adapter.baseline)
"""The trivial baselines (`--baselines`)."""


def adapter_of(model_type: str) -> Adapter:
    """The adapter of `model_type` (`callable:module:fn` is the `callable` adapter); unknown names are refused."""
    name = "callable" if model_type.startswith(CALLABLE_PREFIX) else model_type
    if name not in ADAPTERS:
        raise ValueError(f"unknown model_type {model_type!r}; choose from {', '.join(MODEL_TYPES)}")
    return ADAPTERS[name]


def foreign_options(model_type: str, options: Iterable[str],
                    spell: Optional[Mapping[str, str]] = None, type_option: str = "model_type") -> Optional[str]:
    """A one-line refusal of the first of `options` (keyword names) that the adapter of `model_type` does not take,
    naming the adapters that do: "instance_rule is an option of model_type sam3, not of clipseg"; `None` when the
    adapter takes them all. `spell` maps a keyword to the name the caller shows (e.g. `task` → `--pipeline_task`)."""
    adapter = adapter_of(model_type)
    spell = spell or {}
    for option in options:
        if option in adapter.options:
            continue
        owners = [a.model_type for a in ADAPTERS.values() if option in a.options]
        shown = spell.get(option, option)
        if not owners:
            return f"{shown} is not an option of any {type_option}"
        return f"{shown} is an option of {type_option} {', '.join(owners)}, not of {adapter.model_type}"
    return None


def markdown_table() -> str:
    """The adapters as the documentation lists them: `--model_type`, class, options."""
    lines = ["| `--model_type` | adapter | options |", "|---|---|---|"]
    for adapter in ADAPTERS.values():
        options = ", ".join(f"`{option}`" for option in adapter.options) or "none"
        lines.append(f"| `{adapter.spelling}` | [`{adapter.segmenter.rpartition(':')[2]}`]: {adapter.summary} | "
                     f"{options} |")
    return "\n".join(lines)
