"""Export a UniRES model to ONNX in two graphs, split as SAM's exports are: the image encoder, run once per image, and
the query decoder, run for any number of expressions against the encoded images.

    from unires.export import export_onnx
    export_onnx(model, processor, "unires-onnx")            # image_encoder.onnx, query_decoder.onnx, processor, ...

Graphs (the number of images and of expressions are dynamic axes; the image side and the text length are the
model's, `config.image_size` and `config.text_max_length`):

- `image_encoder.onnx`: `pixel_values (num_images, 3, S, S)` -> `image_embeddings (num_images, tokens, hidden)` (what
  `UniRESModel.get_image_embeddings` returns) and, for a model with the pixel branch (`pixel_decoder_channels > 0`),
  `pixel_features (num_images, channels, S, S)`: everything the decoder reads of an image.
- `query_decoder.onnx`: the encoder's outputs + `input_ids`, `attention_mask (num_expressions, text_length)` and
  `image_indices (num_expressions,)` -> `logits (num_expressions, S, S)`, equal to `UniRESModel(...).logits`.

The exporter is `torch.onnx.export(..., dynamo=True)`. optimum-onnx (the ecosystem's exporter for transformers models,
with custom `OnnxConfig`s) was tried first: its only release (0.1.0) requires `transformers<4.58`, and this project runs
on transformers 5, so installing it would downgrade transformers; the split into two graphs with image-to-expression
indices is also not one of its task shapes. The export wrappers below call the model's own modules; only the pixel
branch is written in its closed form (bilinear upsampling of the per-token filters, then a dot product with the
image's pixel features), which the model's docstring states it equals and which, unlike the model's cell-by-cell
loop over the images present in a call, has no data-dependent control flow.

This module imports torch and onnx; `modeling_unires` never imports it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

IMAGE_ENCODER_FILE = "image_encoder.onnx"
QUERY_DECODER_FILE = "query_decoder.onnx"
QUANTIZED_SUFFIX = "_quantized"
ONNX_CONFIG_FILE = "onnx_config.json"
README_FILE = "README.md"
DEFAULT_OPSET = 18
TEXT_INPUTS = ("input_ids", "attention_mask", "image_indices")


def quantized_name(file_name: str) -> str:
    """`image_encoder.onnx` -> `image_encoder_quantized.onnx` (optimum's naming of quantized graphs)."""
    stem, ext = os.path.splitext(file_name)
    return f"{stem}{QUANTIZED_SUFFIX}{ext}"


def has_pixel_branch(config) -> bool:
    return bool(getattr(config, "pixel_decoder_channels", 0))


def encoder_output_names(config) -> list[str]:
    """What the image encoder graph returns, in order: the decoder's image-side inputs."""
    return ["image_embeddings", "pixel_features"] if has_pixel_branch(config) else ["image_embeddings"]


class ImageEncoderGraph(nn.Module):
    """What `image_encoder.onnx` computes: `pixel_values` -> image embeddings (and the pixel branch's features)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        embeddings = self.model.vision_encoder(pixel_values).image_embeddings
        pixel_decoder = self.model.mask_head.pixel_decoder
        if pixel_decoder is None:
            return embeddings
        # The model runs the two convolutions image by image (a batched convolution may change algorithm with the
        # batch); a graph has no loop over a dynamic axis, and the runtime keeps images apart where it must.
        features = pixel_decoder.conv_out(F.gelu(pixel_decoder.conv_in(pixel_values)))
        return embeddings, features


class QueryDecoderGraph(nn.Module):
    """What `query_decoder.onnx` computes: the encoded images + tokenised expressions + `image_indices` -> logits, as
    `UniRESModel.forward(image_embeddings=..., pixel_values=..., input_ids=..., attention_mask=...,
    image_indices=...)`."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        config = model.config
        side = config.image_size // config.vision_config.patch_size
        self.grid = (side, side)

    def forward(self, image_embeddings, *rest):
        model, grid = self.model, self.grid
        if model.mask_head.pixel_decoder is not None:
            pixel_features, input_ids, attention_mask, image_indices = rest
        else:
            pixel_features, (input_ids, attention_mask, image_indices) = None, rest
        visual, low, high = model.vision_encoder.split_embeddings(image_embeddings)
        text_states = model.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        decoded = model.decoder(visual, low, high, text_states, attention_mask, image_indices, grid)
        head = model.mask_head
        patch = model.config.vision_config.patch_size
        per_patch = head._alignment_per_patch(decoded.last_hidden_state, decoded.sentence_embedding)
        logits = head._mask_logits(decoded.last_hidden_state, grid, patch, per_patch)
        if pixel_features is not None:
            logits = logits + self._pixel_logits(decoded.last_hidden_state, pixel_features, image_indices, patch)
        return logits

    def _pixel_logits(self, decoded, pixel_features, image_indices, patch):
        """The pixel branch: each token's filter upsampled bilinearly between patch centres (half-pixel centres,
        borders clamped), dotted with its image's pixel features at every pixel (`UniRESMaskHead._pixel_logits`)."""
        rows, cols = self.grid
        filters = self.model.mask_head.pixel_filter(decoded)  # (expressions, rows * cols, channels)
        filters = filters.transpose(1, 2).reshape(decoded.shape[0], -1, rows, cols)
        upsampled = F.interpolate(filters, size=(rows * patch, cols * patch), mode="bilinear", align_corners=False)
        return (upsampled * pixel_features.index_select(0, image_indices)).sum(1)


def _example_inputs(model, processor, num_images: int = 2, num_expressions: int = 3):
    """Processor outputs for a few plain images and expressions: what the graphs are traced and checked with."""
    from PIL import Image

    images = [Image.new("RGB", (48 + 8 * index, 40), color=(40 * index, 120, 200)) for index in range(num_images)]
    words = ["the left one", "the red part of it", "a thing on the right", "the small window"]
    texts = [[words[(image + expression) % len(words)] for expression in range(num_expressions)]
             for image in range(num_images)]
    return processor(images=images, text=texts, return_tensors="pt")


def export_onnx(
    model,
    processor,
    output_dir,
    *,
    opset: int = DEFAULT_OPSET,
    quantize: Optional[str] = None,
    validate: bool = True,
    atol: float = 1e-4,
    model_id: Optional[str] = None,
) -> Path:
    """
    Export `model` (a `UniRESModel`) and `processor` to `output_dir`: `image_encoder.onnx`, `query_decoder.onnx`,
    the processor's files (tokenizer included), `config.json`, `onnx_config.json` (graph inputs and outputs, and
    what a runtime without transformers needs: image size, normalisation, threshold, text length, pad token) and a
    `README.md` on how to run them. With `quantize="int8"` the dynamically quantized graphs are written beside
    (`*_quantized.onnx`, see `onnx_quantization.quantize_graphs`).

    With `validate` (default), ONNX Runtime runs both graphs on a few processor outputs and the logits must equal
    PyTorch's within `atol`, else `ValueError` names the difference.
    """
    if quantize not in (None, "none", "int8"):
        raise ValueError(f"quantize={quantize!r} is invalid: expected None, 'none' or 'int8'")
    if type(model).__name__ != "UniRESModel":
        raise TypeError(f"export_onnx takes a UniRESModel, got {type(model).__name__}")
    config = model.config
    image_size = int(config.image_size)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    from modeling_unires.fast_inference_unires import disable_fast_inference, is_fast_inference_enabled

    if is_fast_inference_enabled(model):
        disable_fast_inference(model)  # the plain definition is what is exported
    was_training = model.training
    model = model.eval().float()
    try:
        inputs = _example_inputs(model, processor)
        if tuple(inputs["pixel_values"].shape[-2:]) != (image_size, image_size):
            raise ValueError(
                f"the processor resizes to {tuple(inputs['pixel_values'].shape[-2:])} but config.image_size is "
                f"{image_size}: export a model with its own processor"
            )
        text_length = int(inputs["input_ids"].shape[1])
        encoder_outputs = encoder_output_names(config)
        with torch.no_grad():
            _export_graphs(model, inputs, output_dir, opset, encoder_outputs)
    finally:
        model.train(was_training)

    processor.save_pretrained(output_dir)
    config.save_pretrained(output_dir)
    onnx_config = _onnx_config(config, processor, encoder_outputs, text_length, opset, model_id)
    (output_dir / ONNX_CONFIG_FILE).write_text(json.dumps(onnx_config, indent=2) + "\n")
    if validate:
        _validate(model, inputs, output_dir, atol)
    if quantize == "int8":
        from .onnx_quantization import quantize_graphs

        onnx_config["quantized"] = quantize_graphs(output_dir)
        (output_dir / ONNX_CONFIG_FILE).write_text(json.dumps(onnx_config, indent=2) + "\n")
    (output_dir / README_FILE).write_text(readme_text(onnx_config, model_id=model_id))
    return output_dir


def _export_graphs(model, inputs, output_dir: Path, opset: int, encoder_outputs: list[str]) -> None:
    num_images = torch.export.Dim("num_images", min=1, max=1024)
    num_expressions = torch.export.Dim("num_expressions", min=1, max=65536)
    pixel_values = inputs["pixel_values"]
    encoder = ImageEncoderGraph(model)
    _onnx_export(encoder, (pixel_values,), output_dir / IMAGE_ENCODER_FILE, opset,
                 input_names=["pixel_values"], output_names=encoder_outputs,
                 dynamic_shapes={"pixel_values": {0: num_images}})
    encoded = encoder(pixel_values)
    encoded = encoded if isinstance(encoded, tuple) else (encoded,)
    decoder_inputs = (*encoded, inputs["input_ids"], inputs["attention_mask"], inputs["image_indices"])
    names = [*encoder_outputs, *TEXT_INPUTS]
    shapes = {"image_embeddings": {0: num_images}, "input_ids": {0: num_expressions},
              "attention_mask": {0: num_expressions}, "image_indices": {0: num_expressions}}
    if "pixel_features" in encoder_outputs:
        shapes["pixel_features"] = {0: num_images}
    # torch.export names the dynamic shapes by the forward's parameters: `image_embeddings, *rest`.
    dynamic_shapes = (shapes["image_embeddings"], tuple(shapes[name] for name in names[1:]))
    _onnx_export(QueryDecoderGraph(model), decoder_inputs, output_dir / QUERY_DECODER_FILE, opset,
                 input_names=names, output_names=["logits"], dynamic_shapes=dynamic_shapes)


@contextlib.contextmanager
def _attention_masks_per_query(opset: int):
    """
    While exporting: `scaled_dot_product_attention` gets its boolean or additive mask expanded over the queries.
    From opset 23 the exporter writes ONNX's `Attention` op (one fused kernel in ONNX Runtime, where older opsets get
    MatMul, Softmax and MatMul), whose ONNX Runtime kernel requires the mask's query axis to be the queries' length;
    UniRES's decoder passes `(batch, 1, 1, keys)` masks, which PyTorch broadcasts. Same values, a broadcast made
    explicit. On the paper-size decoder at 480 (1 CPU thread) opset 23 decodes about 10-15% faster than opset 18;
    18 stays the default for the runtimes that lack opset 23 (older ONNX Runtime, onnxruntime-web).
    """
    original = F.scaled_dot_product_attention
    if opset < 23:
        yield
        return

    def expanded(query, key, value, attn_mask=None, *args, **kwargs):
        if attn_mask is not None and attn_mask.dim() == 4 and attn_mask.shape[-2] == 1 and query.shape[-2] != 1:
            attn_mask = attn_mask.expand(*attn_mask.shape[:-2], query.shape[-2], attn_mask.shape[-1])
        return original(query, key, value, attn_mask, *args, **kwargs)

    F.scaled_dot_product_attention = expanded
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def _onnx_export(module, args, path: Path, opset: int, *, input_names, output_names, dynamic_shapes) -> None:
    import warnings

    with warnings.catch_warnings(), _attention_masks_per_query(opset):
        warnings.simplefilter("ignore")  # the exporter's deprecation notes on dynamic shape names
        program = torch.onnx.export(
            module, args, dynamo=True, opset_version=opset, input_names=input_names, output_names=output_names,
            dynamic_shapes=dynamic_shapes, external_data=False, verbose=False, report=False,
        )
    # One file per graph, weights inside (a 2 GB protobuf limit; the paper-size model is 0.6 GB).
    program.save(str(path), external_data=False)


def _onnx_config(config, processor, encoder_outputs, text_length, opset, model_id) -> dict:
    from modeling_unires import __version__

    image_processor = processor.image_processor
    tokenizer = processor.tokenizer
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    resample = image_processor.resample
    return {
        "format": "unires-onnx",
        "format_version": 1,
        "unires_version": __version__,
        "source_model": model_id,
        "opset": opset,
        "image_encoder": {"file": IMAGE_ENCODER_FILE, "inputs": ["pixel_values"], "outputs": encoder_outputs},
        "query_decoder": {"file": QUERY_DECODER_FILE, "inputs": [*encoder_outputs, *TEXT_INPUTS],
                          "outputs": ["logits"]},
        "image_size": int(config.image_size),
        "resample": resample,
        "image_mean": [float(v) for v in image_processor.image_mean],
        "image_std": [float(v) for v in image_processor.image_std],
        "do_normalize": bool(image_processor.do_normalize),
        "mask_threshold": float(image_processor.mask_threshold),
        "text_max_length": int(text_length),
        "pad_token_id": int(pad_token_id),
        "quantized": None,
    }


def _validate(model, inputs, output_dir: Path, atol: float) -> None:
    from .modeling_ort import ORTModelForReferringSegmentation

    ort_model = ORTModelForReferringSegmentation.from_pretrained(output_dir)
    names = ("pixel_values", "input_ids", "attention_mask", "image_indices")
    with torch.no_grad():
        expected = model(**{name: inputs[name] for name in names}).logits
    got = ort_model(**{name: inputs[name] for name in names}).logits
    difference = float((got - expected).abs().max())
    if not math.isfinite(difference) or difference > atol:
        raise ValueError(
            f"the exported graphs disagree with the PyTorch model: max |logits difference| = {difference:.3g} > "
            f"atol={atol:g} (in {output_dir})"
        )
    logger.info("ONNX export validated: max |logits difference| %.3g <= %g", difference, atol)


# ------------------------------------------------------------------------------------------------- the README


SNIPPET_START = "<!-- snippet:start -->"
SNIPPET_END = "<!-- snippet:end -->"

SNIPPET = '''\
import json, numpy as np, onnxruntime as ort
from PIL import Image, ImageOps
from tokenizers import Tokenizer

folder, texts = "{folder}", ["the dog", "its left ear"]
image = ImageOps.exif_transpose(Image.open("photo.jpg")).convert("RGB")
cfg = json.load(open(f"{{folder}}/onnx_config.json")); size, length = cfg["image_size"], cfg["text_max_length"]
pixels = np.asarray(image.resize((size, size), Image.BICUBIC, reducing_gap=3.0), np.float32) / 255
pixels = ((pixels - np.float32(cfg["image_mean"])) / np.float32(cfg["image_std"])).transpose(2, 0, 1)[None]
tokenizer = Tokenizer.from_file(f"{{folder}}/tokenizer.json")
tokenizer.enable_truncation(length); tokenizer.enable_padding(length=length, pad_id=cfg["pad_token_id"])
tokens = tokenizer.encode_batch(texts)
encoder, decoder = (ort.InferenceSession(f"{{folder}}/{{cfg[g]['file']}}") for g in ("image_encoder", "query_decoder"))
features = dict(zip(cfg["image_encoder"]["outputs"], encoder.run(None, {{"pixel_values": pixels}})))
logits = decoder.run(None, {{**features, "input_ids": np.int64([t.ids for t in tokens]),
                            "attention_mask": np.int64([t.attention_mask for t in tokens]),
                            "image_indices": np.zeros(len(texts), np.int64)}})[0]  # every expression on image 0
def taps(n, m):  # resize m -> n pixels bilinearly with half-pixel centres (torch's align_corners=False)
    x = np.clip((np.arange(n) + 0.5) * m / n - 0.5, 0, m - 1); i = np.floor(x).astype(int)
    return i, np.minimum(i + 1, m - 1), np.float32(x - i)
(y0, y1, fy), (x0, x1, fx) = taps(image.height, size), taps(image.width, size)
rows = logits[:, y0] * (1 - fy[:, None]) + logits[:, y1] * fy[:, None]
threshold = np.log(cfg["mask_threshold"] / (1 - cfg["mask_threshold"]))  # sigmoid(logit) > mask_threshold
masks = rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx > threshold  # (len(texts), image.height, image.width)
'''


def snippet(folder: str = "unires-onnx") -> str:
    """The README's Python that segments `photo.jpg` with the export in `folder`: onnxruntime, numpy, Pillow and
    tokenizers only (no torch, no transformers)."""
    return SNIPPET.format(folder=folder)


def readme_text(onnx_config: dict, model_id: Optional[str] = None) -> str:
    """The README.md written beside the graphs."""
    encoder_outputs = ", ".join(f"`{name}`" for name in onnx_config["image_encoder"]["outputs"])
    size = onnx_config["image_size"]
    quantized = onnx_config.get("quantized")
    source = f" of `{model_id}`" if model_id else ""
    lines = [
        f"# UniRES{source} for ONNX Runtime",
        "",
        "Two graphs, split as SAM's ONNX exports are: encode an image once, then decode any number of referring "
        "expressions against it.",
        "",
        f"- `{IMAGE_ENCODER_FILE}`: `pixel_values` (num_images, 3, {size}, {size}) → {encoder_outputs}.",
        f"- `{QUERY_DECODER_FILE}`: {encoder_outputs}, `input_ids` and `attention_mask` (num_expressions, "
        f"{onnx_config['text_max_length']}), `image_indices` (num_expressions,) → `logits` (num_expressions, {size}, "
        f"{size}); `image_indices[i]` is the row of the encoder's outputs that expression `i` is about.",
        "- The number of images and the number of expressions are dynamic; the image side and the text length are "
        "fixed.",
        "- `onnx_config.json`: what a runtime needs (normalisation, threshold, text length, pad token); "
        "`tokenizer.json` and the processor files; `config.json` (the model's configuration).",
    ]
    if quantized:
        lines.append(
            f"- `{quantized['image_encoder']}`, `{quantized['query_decoder']}`: int8 (ONNX Runtime dynamic "
            "quantization, per-channel int8 weights; the activations get one range per call, so run one image and "
            "one expression per call for masks that do not depend on the rest of the call, as "
            "`ORTModelForReferringSegmentation` does)."
        )
    lines += [
        "",
        "## Run it with onnxruntime, numpy, Pillow and tokenizers (no torch)",
        "",
        "`pip install onnxruntime numpy pillow tokenizers`, then (`folder` is this folder, `photo.jpg` your image):",
        "",
        SNIPPET_START,
        "```python",
        snippet().rstrip("\n"),
        "```",
        SNIPPET_END,
        "",
        "`masks[i]` is the boolean mask of `texts[i]` at the image's size (logits resized bilinearly, then "
        "`sigmoid > threshold`), as the UniRES pipeline gives it. Images with an alpha channel: composite them on "
        "white first, as the UniRES processor does.",
        "",
        "## Run it with the UniRES package",
        "",
        "```python",
        "from unires.export import ORTModelForReferringSegmentation",
        "from modeling_unires import UniRESProcessor",
        "",
        "# provider=\"CUDAExecutionProvider\" with onnxruntime-gpu (prepared, not yet tested on a GPU)",
        'model = ORTModelForReferringSegmentation.from_pretrained("path/to/this/folder")',
        'processor = UniRESProcessor.from_pretrained("path/to/this/folder")',
        'inputs = processor(images=image, text=["the dog", "its left ear"])',
        "logits = model(**inputs).logits  # as UniRESModel's",
        "# or the pipeline: pipeline(\"referring-expression-segmentation\", model=model, processor=processor, "
        "fast_inference=False)",
        "```",
        "",
        "The evaluation harness reads the folder with `--model_type onnx`.",
        "",
    ]
    return "\n".join(lines)


def extract_snippet(readme: str) -> str:
    """The Python between the README's snippet markers (what the no-torch test runs)."""
    body = readme.split(SNIPPET_START, 1)[1].split(SNIPPET_END, 1)[0]
    return body.strip().removeprefix("```python").removesuffix("```").strip() + "\n"


__all__ = [
    "IMAGE_ENCODER_FILE",
    "ImageEncoderGraph",
    "ONNX_CONFIG_FILE",
    "QUERY_DECODER_FILE",
    "QueryDecoderGraph",
    "encoder_output_names",
    "export_onnx",
    "extract_snippet",
    "quantized_name",
    "readme_text",
    "snippet",
]
