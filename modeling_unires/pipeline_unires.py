"""The `referring-expression-segmentation` pipeline: image(s) + expression(s) -> one mask per expression.

The pipeline travels with every checkpoint as transformers carries a custom pipeline: `config.json` holds
`custom_pipelines` (what `PIPELINE_REGISTRY.register_pipeline` + `Pipeline.save_pretrained` write) and this file sits
beside the model's code, so that `pipeline(TASK, model=folder_or_hub_id, trust_remote_code=True)` works where this
package is not installed. `UniRESModel.save_pretrained` does both for every saved checkpoint.

It also speaks transformers' `promptable-concept-segmentation` task (pull request 43612, SAM 3's pipeline): a list of
`{"image", "text"}` dicts (or one dict) in, per item a list of results with `score`, `box` and `mask` out. Where the
installed transformers has that task, `import modeling_unires` makes `pipeline("promptable-concept-segmentation",
model=<a UniRES checkpoint>)` build this pipeline ([`alias_concept_task`]); any other model keeps the task's own.
"""

import importlib

import numpy as np
import torch
from PIL import Image
from transformers import Pipeline

from .configuration_unires import UniRESConfig
from .fast_inference_unires import enable_fast_inference
from .image_loading_unires import open_if_location
from .image_processing_unires import validate_threshold
from .image_processing_unires_fast import use_fast_image_processor
from .processing_unires import validate_expressions
from .rle_unires import mask_to_rle

MASK_FORMATS = ("pil", "numpy", "torch")
PIPELINE_TASK = "referring-expression-segmentation"
CONCEPT_TASK = "promptable-concept-segmentation"
"""transformers' task for text→mask models (pull request 43612, SAM 3), whose input and output forms this pipeline
also takes and gives."""
_BOX_PROMPTS = ("input_boxes", "input_boxes_labels")  # SAM 3's visual prompts: UniRES takes none


def mask_box(mask) -> dict | None:
    """
    The extent of a `(height, width)` mask as `{"xmin", "ymin", "xmax", "ymax"}` ints in pixels, the form of
    transformers' object-detection and promptable-concept-segmentation pipelines: `xmin`/`ymin` are the first column
    and row that hold the mask, `xmax`/`ymax` one past the last (box edges, as COCO's `[x, y, w, h]` with
    `w = xmax - xmin`). `None` for an empty mask: it has no extent.
    """
    mask = np.asarray(mask, dtype=bool)
    rows, columns = mask.any(axis=1), mask.any(axis=0)
    if not rows.any():
        return None
    return {
        "xmin": int(columns.argmax()),
        "ymin": int(rows.argmax()),
        "xmax": int(len(columns) - columns[::-1].argmax()),
        "ymax": int(len(rows) - rows[::-1].argmax()),
    }


def concept_items(inputs) -> list[dict]:
    """
    The items of the `promptable-concept-segmentation` form (a list of `{"image", "text"}` dicts), checked:
    `ValueError` names the item's index and the key that is wrong. `text` is one expression or a list of them; SAM
    3's box prompts (`input_boxes`, `input_boxes_labels`) are refused unless `None`.
    """
    items = []
    for index, item in enumerate(inputs):
        if not isinstance(item, dict):
            raise ValueError(
                f"item {index} is a {type(item).__name__}: in the promptable-concept-segmentation form every item is a "
                "dict {'image': ..., 'text': ...}"
            )
        for key in ("image", "text"):
            if key not in item:
                raise ValueError(
                    f"item {index} has no {key!r}: every item needs 'image' and 'text', e.g. "
                    "{'image': 'photo.jpg', 'text': 'the dog'}"
                )
        for key, value in item.items():
            if key in _BOX_PROMPTS and value is not None:
                raise ValueError(f"item {index}: {key!r} is not supported: UniRES segments from text prompts only")
            if key not in ("image", "text") + _BOX_PROMPTS:
                raise ValueError(f"item {index}: unknown key {key!r}; an item has 'image' and 'text'")
        text = item["text"]
        if not isinstance(text, (str, list, tuple)):
            raise ValueError(
                f"item {index}: 'text' must be a string or a list of strings, got {type(text).__name__}"
            )
        try:
            validate_expressions(text)
        except ValueError as error:
            raise ValueError(f"item {index}: 'text': {error}") from error
        items.append({"image": item["image"], "text": text})
    return items


def _probability(name, value) -> float:
    try:
        return validate_threshold(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is invalid: expected a probability (a number) in [0, 1]") from None


def custom_pipelines_entry() -> dict:
    """
    The `custom_pipelines` entry of a UniRES `config.json`, as `Pipeline.save_pretrained` writes it for a pipeline
    registered with `PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=..., pt_model=AutoModel,
    type="multimodal")`: `pipeline()` reads it with `trust_remote_code=True`.
    """
    impl = f"{__name__.split('.')[-1]}.{ReferringExpressionSegmentationPipeline.__name__}"
    return {PIPELINE_TASK: {"impl": impl, "pt": ["AutoModel"], "type": "multimodal"}}


class ReferringExpressionSegmentationPipeline(Pipeline):
    r"""
    Segment what each expression refers to.

    ```python
    >>> import modeling_unires  # registers the task
    >>> from transformers import pipeline
    >>> segmenter = pipeline("referring-expression-segmentation", model="path/or/hub-id")
    >>> segmenter("photo.jpg", ["the dog", "the left ear of the dog"])            # list of dicts
    >>> segmenter(["a.jpg", "b.png"], [["the dog"], ["the car", "its wheel"]])    # list of lists
    >>> segmenter([{"image": "a.jpg", "text": "the dog"}, {"image": "b.png", "text": "its wheel"}])  # as SAM 3's
    ```

    Images may be paths, URLs, `data:` URIs, PIL images or arrays: the pipeline opens the first three
    (`image_loading_unires.open_image`), and the image processor decodes every image alike (alpha, palettes, 16-bit).
    Each image is encoded once for all of its expressions; with a list of images, `batch_size` images (and all their
    expressions) go through the model together.

    `fast_inference` (default: on a CPU) gives the model its inference-only layers (`fast_inference_unires`,
    in place: `enable_fast_inference(model, max_expressions_per_pass, cpu_tokens_per_pass)`, which also splits an
    image's expressions into passes) and the processor the fast post-processing (`UniRESImageProcessorFast`): the
    same masks as the plain model and processor, faster on a CPU. `fast_inference=False` keeps both plain.

    Every expression gives a dict: `"text"`, `"mask"` (PIL image of mode "L", 0/255, at the original size, or a bool
    array with `mask_format="numpy"`, or a 0/1 `torch.long` tensor with `mask_format="torch"`), `"score"` (mean
    probability inside the mask; for an empty mask, the highest probability anywhere, so that a low score flags it),
    `"box"` (the mask's extent, `{"xmin", "ymin", "xmax", "ymax"}` in pixels as transformers' detection pipelines
    give it, max edges exclusive: [`mask_box`]; `None` for an empty mask); with `return_rle=True`, also `"rle"` (COCO
    RLE `{"size": [h, w], "counts": str}`, the one output that needs pycocotools). RLE is made only when asked for, as
    transformers' mask-generation pipeline does (`output_rle_mask=False`): its column-major copy of every mask costs
    about half of the post-processing. `threshold` (or its other name `mask_threshold`) defaults to the processor's
    (the config's `mask_threshold`).

    **The `promptable-concept-segmentation` form** (transformers' task for SAM 3, pull request 43612). The input is a
    list of `{"image", "text"}` dicts, or one dict; `text` is an expression or a list of them. Each item gives a list
    of results (one per expression, in order), each with `"score"`, `"box"`, `"mask"` (default: a 0/1 `torch.long`
    tensor, as SAM 3's pipeline) and `"label"` (its expression, as SAM 3's pipeline labels an instance with its
    prompt) beside `"text"`. One dict gives one such list, a list of dicts a list of lists. The parameters are the
    task's: `threshold` is the lowest score kept (`score > threshold`; default: none dropped, as a referring model
    answers every expression), `mask_threshold` binarises the masks (default: the processor's), `top_k` keeps the
    `top_k` highest-scoring results of an item. A pipeline built for that task (`pipeline(
    "promptable-concept-segmentation", model=...)`, where transformers has it) takes every call in this form:
    `segmenter(image, text="the dog")` gives a list, and one string serves every image of a list, as SAM 3's does.

    `save_pretrained` writes the model, the processor, `custom_pipelines` in `config.json` and this code: the
    folder then works with `pipeline(..., trust_remote_code=True)` without this package.
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, fast_inference=None, max_expressions_per_pass=32, cpu_tokens_per_pass=3600, **kwargs):
        super().__init__(*args, **kwargs)
        if fast_inference is None:
            fast_inference = self.device.type == "cpu"
        if not isinstance(fast_inference, bool):
            raise ValueError(f"fast_inference={fast_inference!r} is invalid: expected True, False or None (on a CPU)")
        # The processor as loaded is what `save_pretrained` writes: a checkpoint names the plain image processor.
        self._loaded_processor = self.processor
        if fast_inference:
            if type(self.model).__name__ == "UniRESModel":  # an ONNX Runtime model (unires.export) has its own graph
                enable_fast_inference(self.model, max_expressions_per_pass, cpu_tokens_per_pass)
            self.processor = use_fast_image_processor(self.processor)

    def _sanitize_parameters(self, threshold=None, mask_threshold=None, top_k=None, mask_format=None,
                             return_rle=None, **kwargs):
        if kwargs:
            raise ValueError(f"Unknown arguments for the referring-expression-segmentation pipeline: {sorted(kwargs)}")
        # `threshold` is kept as given: what it means depends on the form of the call (see `_postprocess_for`).
        postprocess = {}
        if return_rle is not None:
            if not isinstance(return_rle, bool):
                raise ValueError(f"return_rle={return_rle!r} is invalid: expected True or False")
            postprocess["return_rle"] = return_rle
        if threshold is not None:
            postprocess["threshold"] = validate_threshold(threshold)
        if mask_threshold is not None:
            postprocess["mask_threshold"] = _probability("mask_threshold", mask_threshold)
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k={top_k!r} is invalid: expected a positive number of results")
            postprocess["top_k"] = top_k
        if mask_format is not None:
            if mask_format not in MASK_FORMATS:
                raise ValueError(f"mask_format={mask_format!r} is invalid: expected one of {MASK_FORMATS}")
            postprocess["mask_format"] = mask_format
        return {}, {}, postprocess

    def __call__(self, image, text=None, batch_size=None, **kwargs):
        """
        `image` with `text` (a string or a list of strings) gives one result per expression (a dict for a string,
        a list of dicts for a list). A list of images with a parallel list of `text` (each a string or a list of
        strings) gives one such result per image.

        `image` may instead be a `{"image", "text"}` dict or a list of them (the `promptable-concept-segmentation`
        form, with no `text` argument): per item a list of results, whose parameters are that task's (see the class
        documentation).
        """
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size={batch_size!r} is invalid: expected a positive number of images")
        preprocess_params, forward_params, postprocess_params = self._sanitize_parameters(**kwargs)
        postprocess_params = {**self._postprocess_params, **postprocess_params}
        given_items = isinstance(image, dict) or (
            isinstance(image, (list, tuple)) and any(isinstance(entry, dict) for entry in image)
        )
        concept = given_items or self.task == CONCEPT_TASK
        if given_items:
            if text is not None:
                raise ValueError(
                    "Got {'image', 'text'} items and a `text` argument: give each item's text inside the item"
                )
            items = concept_items([image] if isinstance(image, dict) else image)
            single = isinstance(image, dict)
        elif text is None:
            raise ValueError(f"The {self.task or PIPELINE_TASK} pipeline needs `text` (one or more expressions)")
        elif isinstance(image, (list, tuple)):
            if isinstance(text, str):
                if not concept:
                    raise ValueError(
                        f"Got a list of {len(image)} image(s) and one string: with a list of images, `text` must be "
                        "a list with one entry (a string or a list of strings) per image, e.g. text=[\"the dog\"]"
                    )
                text = [text] * len(image)  # as SAM 3's pipeline: one prompt for every image
            if not isinstance(text, (list, tuple)) or len(text) != len(image):
                count = len(text) if isinstance(text, (list, tuple)) else type(text).__name__
                raise ValueError(
                    f"Got {len(image)} image(s) and {count} text entries: give one text entry (a string or a list of "
                    "strings) per image"
                )
            items = [{"image": item, "text": expressions} for item, expressions in zip(image, text)]
            single = False
        else:
            items = [{"image": image, "text": text}]
            single = True
        for index, item in enumerate(items):
            item["index"] = index  # errors name the image as the caller numbered it, whatever the batch
        postprocess_params = self._postprocess_for(postprocess_params, concept)
        batch_size = batch_size or self._batch_size or 1
        results = []
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            results.extend(self.run_single(chunk, preprocess_params, forward_params, postprocess_params))
        return results[0] if single else results

    @staticmethod
    def _postprocess_for(params: dict, concept: bool) -> dict:
        """The post-processing options of one call: `threshold` binarises the masks in this pipeline's own form, and
        is the lowest score kept in the `promptable-concept-segmentation` form (whose masks `mask_threshold`
        binarises), as in SAM 3's pipeline."""
        params = dict(params)
        threshold, mask_threshold = params.pop("threshold", None), params.pop("mask_threshold", None)
        if concept:
            params.setdefault("mask_format", "torch")
            return {**params, "mask_threshold": mask_threshold, "score_threshold": threshold, "concept": True}
        if params.get("top_k") is not None:
            raise ValueError(
                "top_k is an option of the promptable-concept-segmentation form ({'image', 'text'} items), where an "
                "item's results are a list: here every expression gives exactly one result"
            )
        if threshold is not None and mask_threshold is not None and threshold != mask_threshold:
            raise ValueError(
                f"threshold={threshold} and mask_threshold={mask_threshold}: here both name the mask threshold; give one"
            )
        return {**params, "mask_threshold": mask_threshold if mask_threshold is not None else threshold}

    def preprocess(self, items):
        # Each item's own check first, so that an error names the expression as the caller numbered it.
        expressions = [validate_expressions(item["text"]) for item in items]
        singles = [isinstance(item["text"], str) for item in items]
        # The one inference path: the processor gives one pixel row per image and `image_indices` maps every
        # expression to its image (encoded once). Paths, URLs and data URIs are only opened here (PIL's reading), so
        # that a file and the same image opened by the caller go through one decoding path (alpha, palettes, 16-bit).
        images = [open_if_location(item["image"], item.get("index", index)) for index, item in enumerate(items)]
        inputs = dict(self.processor(images=images, text=expressions, return_tensors="pt"))
        original_sizes = inputs.pop("original_sizes")
        texts = [text for image_texts in expressions for text in image_texts]
        inputs["meta"] = {
            "texts": texts,
            "image_indices": inputs["image_indices"].tolist(),
            "original_sizes": original_sizes.tolist(),
            "singles": singles,
        }
        return inputs

    def _forward(self, model_inputs):
        meta = model_inputs.pop("meta")
        outputs = self.model(**model_inputs)
        return {"logits": outputs.logits, "meta": meta}

    def postprocess(self, model_outputs, mask_threshold=None, mask_format="pil", return_rle=False, concept=False,
                    score_threshold=None, top_k=None):
        meta = model_outputs["meta"]
        masks, scores = self.processor.post_process_masks(
            model_outputs["logits"].float().cpu(),
            meta["original_sizes"],
            image_indices=meta["image_indices"],
            texts=meta["texts"],
            threshold=mask_threshold,
            return_scores=True,
        )
        per_image = [[] for _ in meta["original_sizes"]]
        for row, (mask, score, image_index) in enumerate(zip(masks, scores, meta["image_indices"])):
            if concept and score_threshold is not None and not score > score_threshold:
                continue  # as SAM 3's pipeline keeps `score > threshold`
            if mask_format == "pil":
                output_mask = Image.fromarray(mask.view(np.uint8) * 255)  # mode "L"
            elif mask_format == "torch":
                output_mask = torch.from_numpy(mask).long()  # 0/1, as SAM 3's pipeline gives its masks
            else:
                output_mask = mask
            text = meta["texts"][row]
            result = {"text": text, "score": score, "mask": output_mask, "box": mask_box(mask)}
            if concept:
                result["label"] = text
            if return_rle:
                result["rle"] = mask_to_rle(mask)
            per_image[image_index].append(result)
        if concept:
            return [_top(results, top_k) for results in per_image]
        return [results[0] if single else results for results, single in zip(per_image, meta["singles"])]

    def save_pretrained(self, save_directory, **kwargs):
        """
        transformers' `Pipeline.save_pretrained` (the model, `custom_pipelines` in its `config.json` and this code
        file, as for any registered custom pipeline), plus the processor, which the base class does not save: the
        folder loads with `pipeline(TASK, model=folder, trust_remote_code=True)` without this package.
        """
        super().save_pretrained(save_directory, **kwargs)
        self._loaded_processor.save_pretrained(save_directory, **kwargs)


def _top(results: list, top_k) -> list:
    """The `top_k` highest-scoring of an item's results, in their order (all when `top_k` is None)."""
    if top_k is None or len(results) <= top_k:
        return results
    kept = sorted(sorted(range(len(results)), key=lambda row: -results[row]["score"])[:top_k])
    return [results[row] for row in kept]


class PromptableConceptSegmentationAlias(Pipeline):
    """
    What transformers' `promptable-concept-segmentation` task builds after [`alias_concept_task`]: for a UniRES
    model, [`ReferringExpressionSegmentationPipeline`] (which then takes every call in that task's form); for any
    other model, the task's own pipeline (`task_pipeline_class`, e.g. SAM 3's `PromptableConceptSegmentationPipeline`),
    built exactly as before. `pipeline()` picks the class before it loads the model, so the choice is made here, when
    the model is known.
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    task_pipeline_class = None

    def __new__(cls, *args, **kwargs):
        model = kwargs["model"] if "model" in kwargs else (args[0] if args else None)
        if getattr(getattr(model, "config", None), "model_type", None) == UniRESConfig.model_type:
            return ReferringExpressionSegmentationPipeline(*args, **kwargs)
        if cls.task_pipeline_class is None:
            raise RuntimeError(f"{cls.__name__} has no pipeline for other models: call alias_concept_task() first")
        return cls.task_pipeline_class(*args, **kwargs)


def alias_concept_task(config_class, model_class) -> bool:
    """
    Where the installed transformers has the `promptable-concept-segmentation` task (pull request 43612), make
    `pipeline("promptable-concept-segmentation", model=<a UniRES checkpoint>)` build this package's pipeline: the
    task's entry in `PIPELINE_REGISTRY` gets [`PromptableConceptSegmentationAlias`] as its class (any other model
    still gets the task's own pipeline) and the task's model auto classes learn `config_class` → `model_class`.
    Returns whether the task exists; without it nothing changes, and the pipeline still takes the task's input form
    under its own name, `referring-expression-segmentation`. Calling it again changes nothing.
    """
    from transformers.pipelines import PIPELINE_REGISTRY

    entry = PIPELINE_REGISTRY.supported_tasks.get(CONCEPT_TASK)
    if entry is None:
        return False
    impl = entry["impl"]
    if impl is not PromptableConceptSegmentationAlias:
        if isinstance(impl, str):  # transformers names its built-in pipelines as "module.Class"
            module, _, name = impl.rpartition(".")
            impl = getattr(importlib.import_module(module), name)
        PromptableConceptSegmentationAlias.task_pipeline_class = impl
        PIPELINE_REGISTRY.supported_tasks[CONCEPT_TASK] = {**entry, "impl": PromptableConceptSegmentationAlias}
    for auto_class in entry.get("pt", ()):
        auto_class.register(config_class, model_class, exist_ok=True)
    return True


__all__ = [
    "CONCEPT_TASK",
    "PIPELINE_TASK",
    "PromptableConceptSegmentationAlias",
    "ReferringExpressionSegmentationPipeline",
    "alias_concept_task",
    "concept_items",
    "custom_pipelines_entry",
    "mask_box",
]
