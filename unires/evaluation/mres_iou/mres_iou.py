"""`evaluate` module for multi-granularity referring expression segmentation (MRES).

Load it offline from its folder: `evaluate.load("/path/to/unires/evaluation/mres_iou")`
(the folder is also `unires.evaluation.MRES_IOU_METRIC_PATH`). The computation is the
one of `unires.evaluation.metrics`, so both give identical numbers.
"""

import datasets
import evaluate


# Indented on purpose: `evaluate` scans top-level imports and would ask to `pip install
# modeling_unires`; the distribution is called `unires`, so we raise our own, correct message.
try:
    from run_support.citation import UNIRES_CITATION
    from dataset_scripts.masks import encode_mask
    from unires.evaluation.metrics import compute_mres_metrics
except ImportError as error:  # pragma: no cover - exercised only without the package
    raise ImportError(
        "The mres_iou metric needs the `unires` package (it provides modeling_unires): `pip install unires` "
        "or `pip install -e .` in its repository."
    ) from error


_CITATION = UNIRES_CITATION


_DESCRIPTION = """\
Referring-segmentation metrics at object and part granularity: mIoU (mean of per-expression
IoU), oIoU (total intersection over total union) and Prec@X, reported for object-only,
part-only and object+part expressions, plus the part-object confusion (share of part
expressions whose prediction overlaps the parent object more than the part). The choices that
make published numbers disagree (resolution, threshold, Prec comparison, empty ground truth)
are explicit options, recorded in the result.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list`): predicted masks, one per expression: COCO RLE dicts
        (`{"size": [h, w], "counts": str | bytes | list[int]}`), boolean 2-D arrays/tensors
        or nested lists of 0/1.
    references (`list`): ground-truth masks, same forms and sizes as `predictions`.
    granularities (`list[str]`): "object" or "part" for each expression.
    parent_references (`list`, *optional*): for each part expression, the mask of its parent
        object (None for objects and parts without one); used for the confusion figure.
    resolution (`str`, defaults to "original"): "original" or "input"; recorded only.
    input_size (`tuple[int, int]`, *optional*): (h, w) of the input resolution, recorded.
    threshold (`float`, defaults to 0.35): recorded probability threshold.
    prec_thresholds (`tuple[float]`, defaults to (0.5, 0.6, 0.7, 0.8, 0.9)).
    prec_comparison (`str`, defaults to ">="): ">=" or ">" (CRIS).
    empty_gt (`str`, defaults to "one_if_both_empty"): or "zero".
Returns:
    `dict` with keys "object", "part", "object+part" (each: mIoU, oIoU, Prec@X in percent,
    count; part groups also part_object_confusion and part_object_confusion_count; None when
    a group is empty) and "options".
Examples:
    >>> metric = evaluate.load("unires/evaluation/mres_iou")
    >>> mask = {"size": [2, 2], "counts": [1, 3]}
    >>> metric.compute(predictions=[mask], references=[mask], granularities=["object"])["object"]["mIoU"]
    100.0
"""

_RLE_FEATURE = {"size": datasets.Sequence(datasets.Value("int64")), "counts": datasets.Value("string")}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MresIou(evaluate.Metric):
    """MRES referring-segmentation metrics (mIoU, oIoU, Prec@X, part-object confusion)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": _RLE_FEATURE,
                    "references": _RLE_FEATURE,
                    "granularities": datasets.Value("string"),
                    "parent_references": _RLE_FEATURE,
                }
            ),
            reference_urls=["https://arxiv.org/abs/2312.08007"],
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of expressions; masks are stored as compressed RLE (strings)."""
        predictions, references, kwargs = _as_rle_columns(predictions, references, kwargs)
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one expression; its masks are stored as compressed RLE (strings)."""
        if "granularity" in kwargs:  # singular, like prediction/reference
            kwargs["granularities"] = kwargs.pop("granularity")
        if "parent_reference" in kwargs:
            kwargs["parent_references"] = kwargs.pop("parent_reference")
        kwargs.setdefault("parent_references", None)
        if prediction is not None:
            prediction = encode_mask(prediction, "prediction")
        if reference is not None:
            reference = encode_mask(reference, "reference")
        if kwargs["parent_references"] is not None:
            kwargs["parent_references"] = encode_mask(kwargs["parent_references"], "parent_reference")
        return super().add(prediction=prediction, reference=reference, **kwargs)

    def compute(self, *, predictions=None, references=None, **kwargs):
        """Compute the metrics over every added expression (and those passed here)."""
        if predictions is not None and "parent_references" not in kwargs:
            kwargs["parent_references"] = [None] * len(predictions)
        return super().compute(predictions=predictions, references=references, **kwargs)

    def _enforce_nested_string_type(self, schema, obj):
        # A missing parent object is None; the base check would try to iterate it.
        if obj is None:
            return None
        return super()._enforce_nested_string_type(schema, obj)

    def _compute(self, predictions, references, granularities, parent_references, **options):
        parents = parent_references if any(parent is not None for parent in parent_references) else None
        return compute_mres_metrics(predictions, references, granularities, parents, **options)


def _as_rle_columns(predictions, references, kwargs):
    """Every mask as a compressed RLE with `str` counts, the form the Arrow cache stores."""
    if predictions is not None:
        predictions = [encode_mask(mask, f"predictions[{index}]") for index, mask in enumerate(predictions)]
    if references is not None:
        references = [encode_mask(mask, f"references[{index}]") for index, mask in enumerate(references)]
    parents = kwargs.get("parent_references")
    if parents is None:
        count = len(predictions) if predictions is not None else len(references or [])
        parents = [None] * count
    kwargs["parent_references"] = [
        None if mask is None else encode_mask(mask, f"parent_references[{index}]")
        for index, mask in enumerate(parents)
    ]
    return predictions, references, kwargs
