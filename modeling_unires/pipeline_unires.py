"""The `referring-expression-segmentation` pipeline: image(s) + expression(s) -> one mask per expression.

The pipeline travels with every checkpoint as transformers carries a custom pipeline: `config.json` holds
`custom_pipelines` (what `PIPELINE_REGISTRY.register_pipeline` + `Pipeline.save_pretrained` write) and this file sits
beside the model's code, so that `pipeline(TASK, model=folder_or_hub_id, trust_remote_code=True)` works where this
package is not installed. `UniRESModel.save_pretrained` does both for every saved checkpoint.
"""

import numpy as np
from PIL import Image
from transformers import Pipeline

from .fast_inference_unires import enable_fast_inference
from .image_loading_unires import open_if_location
from .image_processing_unires import validate_threshold
from .image_processing_unires_fast import use_fast_image_processor
from .processing_unires import validate_expressions
from .rle_unires import mask_to_rle

MASK_FORMATS = ("pil", "numpy")
PIPELINE_TASK = "referring-expression-segmentation"


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
    array with `mask_format="numpy"`), `"score"` (mean probability inside the mask; for an empty mask, the highest
    probability anywhere, so that a low score flags it); with `return_rle=True`, also `"rle"` (COCO RLE
    `{"size": [h, w], "counts": str}`, the one output that needs pycocotools). RLE is made only when asked for, as
    transformers' mask-generation pipeline does (`output_rle_mask=False`): its column-major copy of every mask costs
    about half of the post-processing. `threshold` defaults to the processor's (the config's `mask_threshold`).

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
            enable_fast_inference(self.model, max_expressions_per_pass, cpu_tokens_per_pass)
            self.processor = use_fast_image_processor(self.processor)

    def _sanitize_parameters(self, threshold=None, mask_format=None, return_rle=None, **kwargs):
        if kwargs:
            raise ValueError(f"Unknown arguments for the referring-expression-segmentation pipeline: {sorted(kwargs)}")
        postprocess = {}
        if return_rle is not None:
            if not isinstance(return_rle, bool):
                raise ValueError(f"return_rle={return_rle!r} is invalid: expected True or False")
            postprocess["return_rle"] = return_rle
        if threshold is not None:
            postprocess["threshold"] = validate_threshold(threshold)
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
        """
        if text is None:
            raise ValueError("The referring-expression-segmentation pipeline needs `text` (one or more expressions)")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size={batch_size!r} is invalid: expected a positive number of images")
        preprocess_params, forward_params, postprocess_params = self._sanitize_parameters(**kwargs)
        postprocess_params = {**self._postprocess_params, **postprocess_params}
        if isinstance(image, (list, tuple)):
            if isinstance(text, str):
                raise ValueError(
                    f"Got a list of {len(image)} image(s) and one string: with a list of images, `text` must be a "
                    "list with one entry (a string or a list of strings) per image, e.g. text=[\"the dog\"]"
                )
            if not isinstance(text, (list, tuple)) or len(text) != len(image):
                count = len(text) if isinstance(text, (list, tuple)) else type(text).__name__
                raise ValueError(
                    f"Got {len(image)} image(s) and {count} text entries: give one text entry (a string or a list of "
                    "strings) per image"
                )
            items = [{"image": item, "text": expressions} for item, expressions in zip(image, text)]
            batch_size = batch_size or self._batch_size or 1
            results = []
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                results.extend(self.run_single(chunk, preprocess_params, forward_params, postprocess_params))
            return results
        return self.run_single([{"image": image, "text": text}], preprocess_params, forward_params, postprocess_params)[0]

    def preprocess(self, items):
        # Each item's own check first, so that an error names the expression as the caller numbered it.
        expressions = [validate_expressions(item["text"]) for item in items]
        singles = [isinstance(item["text"], str) for item in items]
        # The one inference path: the processor gives one pixel row per image and `image_indices` maps every
        # expression to its image (encoded once). Paths, URLs and data URIs are only opened here (PIL's reading), so
        # that a file and the same image opened by the caller go through one decoding path (alpha, palettes, 16-bit).
        images = [open_if_location(item["image"], index) for index, item in enumerate(items)]
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

    def postprocess(self, model_outputs, threshold=None, mask_format="pil", return_rle=False):
        meta = model_outputs["meta"]
        masks, scores = self.processor.post_process_masks(
            model_outputs["logits"].float().cpu(),
            meta["original_sizes"],
            image_indices=meta["image_indices"],
            texts=meta["texts"],
            threshold=threshold,
            return_scores=True,
        )
        per_image = [[] for _ in meta["original_sizes"]]
        for row, (mask, score, image_index) in enumerate(zip(masks, scores, meta["image_indices"])):
            output_mask = Image.fromarray(mask.view(np.uint8) * 255) if mask_format == "pil" else mask  # mode "L"
            result = {"text": meta["texts"][row], "score": score, "mask": output_mask}
            if return_rle:
                result["rle"] = mask_to_rle(mask)
            per_image[image_index].append(result)
        return [results[0] if single else results for results, single in zip(per_image, meta["singles"])]

    def save_pretrained(self, save_directory, **kwargs):
        """
        transformers' `Pipeline.save_pretrained` (the model, `custom_pipelines` in its `config.json` and this code
        file, as for any registered custom pipeline), plus the processor, which the base class does not save: the
        folder loads with `pipeline(TASK, model=folder, trust_remote_code=True)` without this package.
        """
        super().save_pretrained(save_directory, **kwargs)
        self._loaded_processor.save_pretrained(save_directory, **kwargs)


__all__ = ["PIPELINE_TASK", "ReferringExpressionSegmentationPipeline", "custom_pipelines_entry"]
