"""UniRES on ONNX Runtime: the two exported graphs behind `UniRESModel`'s interface.

    from unires.export import ORTModelForReferringSegmentation
    model = ORTModelForReferringSegmentation.from_pretrained("unires-onnx")          # CPU execution provider
    inputs = processor(images=image, text=["the dog", "its left ear"])
    logits = model(**inputs).logits                                                   # UniRESModel's logits

Follows optimum's `ORTModel` conventions where they fit: `from_pretrained(folder_or_hub_id, provider=...,
session_options=..., provider_options=...)`, `.providers`, `.device`, `save_pretrained`, and `config` (the model's
`UniRESConfig`). `forward` takes what `UniRESModel.forward` takes at inference (`pixel_values` or `image_embeddings`,
`input_ids`, `attention_mask`, `image_indices`; `original_sizes` accepted and unused) and returns a `UniRESOutput`
whose `logits` (and `image_embeddings` on request) are torch tensors; `get_image_embeddings(pixel_values)` encodes
images once, as the PyTorch model's does. So the processor, `post_process_masks`, the pipeline (with
`fast_inference=False`) and the evaluation harness (`--model_type onnx`) use it as they use the PyTorch model.

Inputs are checked before ONNX Runtime sees them: a wrong shape, count, dtype or index raises `ValueError` naming the
input and what the graphs take.

int8 graphs (`quantized=True`, written by `examples/export.py --quantize int8`) quantize their activations with one
range per call (ONNX's `DynamicQuantizeLinear`), so a batch would make each mask depend on the rest of the call: the
runtime then runs each image, and each expression against its own image alone (`isolate_calls`, on by default for
int8 and off for fp32, whose graphs compute every image and expression on its own rows).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from modeling_unires.input_checks_unires import resolve_image_indices

from .onnx_export import IMAGE_ENCODER_FILE, ONNX_CONFIG_FILE, QUERY_DECODER_FILE

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
TEXT_INPUTS = ("input_ids", "attention_mask", "image_indices")


def _as_numpy(value, name: str, kind: str) -> np.ndarray:
    """A torch tensor, numpy array or nested list as a numpy array of `kind` ("float" or "int"), dtype checked."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.float()
        value = value.numpy()
    array = np.asarray(value)
    if kind == "float":
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"{name} must be floating point, got dtype {array.dtype}")
        return np.ascontiguousarray(array, dtype=np.float32)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.int64)


def _shape_text(shape) -> str:
    """A shape as Python writes a tuple: `(3,)`, `(2, 17)`."""
    return str(tuple(int(d) for d in shape))


class ORTModelForReferringSegmentation:
    """UniRES's image encoder and query decoder as two ONNX Runtime sessions (see the module's docstring)."""

    main_input_name = "pixel_values"
    export_files = (IMAGE_ENCODER_FILE, QUERY_DECODER_FILE)

    def __init__(
        self,
        image_encoder,
        query_decoder,
        config,
        onnx_config: dict,
        model_save_dir: Optional[Union[str, os.PathLike]] = None,
        quantized: bool = False,
        isolate_calls: Optional[bool] = None,
    ):
        self.image_encoder = image_encoder
        self.query_decoder = query_decoder
        self.config = config
        self.onnx_config = onnx_config
        self.model_save_dir = Path(model_save_dir) if model_save_dir is not None else None
        self.quantized = bool(quantized)
        if isolate_calls not in (None, True, False):
            raise ValueError(f"isolate_calls={isolate_calls!r} is invalid: expected True, False or None")
        self.isolate_calls = self.quantized if isolate_calls is None else isolate_calls
        self.encoder_outputs = [output.name for output in image_encoder.get_outputs()]
        self.decoder_inputs = {graph_input.name: graph_input for graph_input in query_decoder.get_inputs()}
        expected = [*self.encoder_outputs, *TEXT_INPUTS]
        if sorted(self.decoder_inputs) != sorted(expected):
            raise ValueError(
                f"the query decoder's inputs {sorted(self.decoder_inputs)} are not the image encoder's outputs plus "
                f"{list(TEXT_INPUTS)}: {sorted(expected)}"
            )
        pixel_input = image_encoder.get_inputs()[0]
        self._pixel_shape = tuple(pixel_input.shape)  # ('num_images', 3, S, S)
        self._embedding_shape = tuple(self.decoder_inputs["image_embeddings"].shape)  # ('num_images', T, H)
        self._text_length = self.decoder_inputs["input_ids"].shape[1]
        self.vocab_size = int(config.text_config.vocab_size)

    # ------------------------------------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        model_id: Union[str, os.PathLike],
        *,
        provider: str = CPU_PROVIDER,
        providers: Optional[Sequence[str]] = None,
        provider_options: Optional[dict] = None,
        session_options=None,
        quantized: bool = False,
        isolate_calls: Optional[bool] = None,
        revision: Optional[str] = None,
        cache_dir: Optional[str] = None,
        token: Optional[Union[bool, str]] = None,
        local_files_only: bool = False,
    ) -> "ORTModelForReferringSegmentation":
        """
        Load an export folder (or a Hub repository holding one) written by `export_onnx` / `examples/export.py`.

        `provider` is the ONNX Runtime execution provider (`"CPUExecutionProvider"`, tested;
        `"CUDAExecutionProvider"`, prepared and untested here), `providers` a list of them in order of preference
        (instead of `provider`), `provider_options` the options of `provider`, `session_options` an
        `onnxruntime.SessionOptions` (threads, graph optimisation level). `quantized=True` loads the int8 graphs
        (`*_quantized.onnx`). `isolate_calls`: see the module's docstring (default: on for int8 only).
        """
        import onnxruntime as ort

        folder = Path(model_id)
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(
                str(model_id), revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only,
                allow_patterns=["*.json", "*.onnx", "*.txt", "*.md", "*.py"],
            ))
        config_path = folder / ONNX_CONFIG_FILE
        if not config_path.is_file():
            raise OSError(f"{folder} holds no {ONNX_CONFIG_FILE}: it is not a UniRES ONNX export (examples/export.py)")
        onnx_config = json.loads(config_path.read_text())
        files = [onnx_config["image_encoder"]["file"], onnx_config["query_decoder"]["file"]]
        if quantized:
            if not onnx_config.get("quantized"):
                raise OSError(f"{folder} holds no int8 graphs: export with --quantize int8")
            files = [onnx_config["quantized"]["image_encoder"], onnx_config["quantized"]["query_decoder"]]
        for file_name in files:
            if not (folder / file_name).is_file():
                raise OSError(f"{folder} lacks {file_name}")
        if providers is None:
            providers = [provider]
        providers = list(providers)
        available = ort.get_available_providers()
        missing = [name for name in providers if name not in available]
        if missing:
            raise ValueError(
                f"execution provider(s) {missing} are not available in this onnxruntime (available: {available}); "
                "for CUDA install onnxruntime-gpu"
            )
        if provider_options is not None:
            provider_options = [provider_options if index == 0 else {} for index in range(len(providers))]
        sessions = [
            ort.InferenceSession(str(folder / file_name), sess_options=session_options, providers=providers,
                                 provider_options=provider_options)
            for file_name in files
        ]
        from modeling_unires import UniRESConfig

        config = UniRESConfig.from_pretrained(folder)
        return cls(*sessions, config, onnx_config, model_save_dir=folder, quantized=quantized,
                   isolate_calls=isolate_calls)

    def save_pretrained(self, save_directory: Union[str, os.PathLike]) -> Path:
        """Copy the export (graphs, configs, processor files, README) to `save_directory`."""
        if self.model_save_dir is None:
            raise ValueError("this model was not loaded from a folder: nothing to copy")
        save_directory = Path(save_directory)
        if save_directory.resolve() != self.model_save_dir.resolve():
            shutil.copytree(self.model_save_dir, save_directory, dirs_exist_ok=True)
        return save_directory

    # ------------------------------------------------------------------------------------------------ what a model is

    @property
    def providers(self) -> list[str]:
        return self.query_decoder.get_providers()

    @property
    def device(self) -> torch.device:
        """Where the outputs are returned: CUDA with the CUDA execution provider, else the CPU (as optimum)."""
        return torch.device("cuda:0") if self.providers[0] == CUDA_PROVIDER else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def to(self, device):
        """No-op where `device` is where the sessions run (`Pipeline` moves its model); else `ValueError`."""
        if device is not None and torch.device(device).type != self.device.type:
            raise ValueError(
                f"this model runs on {self.providers[0]}: load it with the provider of {device} instead of moving it"
            )
        return self

    def eval(self):
        return self

    def can_generate(self) -> bool:
        return False

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def __repr__(self) -> str:
        kind = "int8" if self.quantized else "fp32"
        return f"{type(self).__name__}({self.model_save_dir}, {kind}, providers={self.providers})"

    # ------------------------------------------------------------------------------------------------ inference

    def get_image_embeddings(self, pixel_values) -> torch.Tensor:
        """`(num_images, tokens, hidden)` image embeddings, as `UniRESModel.get_image_embeddings`."""
        return self._to_torch(self.encode_images(pixel_values)["image_embeddings"])

    def encode_images(self, pixel_values) -> dict:
        """Everything the query decoder reads of the images, as numpy arrays by graph name (`image_embeddings`, and
        `pixel_features` for a model with the pixel branch)."""
        pixels = self._check_pixel_values(pixel_values)
        return self._run_encoder(pixels, self.encoder_outputs)

    def forward(
        self,
        pixel_values=None,
        input_ids=None,
        attention_mask=None,
        image_embeddings=None,
        image_indices=None,
        original_sizes=None,
        pixel_features=None,
        output_image_embeddings: bool = False,
        return_dict: Optional[bool] = None,
    ):
        """
        The logits of `UniRESModel.forward` for the same inputs: `pixel_values` (encoded here) or `image_embeddings`
        (from `get_image_embeddings`; a model with the pixel branch also reads `pixel_values`, or `pixel_features`
        from `encode_images`), `input_ids` and `attention_mask` `(num_expressions, text_length)`, `image_indices`
        (default: the identity when the counts match, or every expression on the single image). Returns a
        `UniRESOutput` (a tuple with `return_dict=False`).
        """
        from modeling_unires import UniRESOutput

        if input_ids is None:
            raise ValueError("`input_ids` (the tokenised expressions) are required")
        if pixel_values is None and image_embeddings is None:
            raise ValueError("Pass `pixel_values` or `image_embeddings`")
        encoded = self._encoded(pixel_values, image_embeddings, pixel_features)
        num_images = encoded["image_embeddings"].shape[0]
        ids = self._check_text(input_ids, attention_mask)
        indices = self._check_image_indices(image_indices, num_images, ids["input_ids"].shape[0])
        logits = self._decode(encoded, ids, indices)
        output = UniRESOutput(
            logits=self._to_torch(logits),
            image_embeddings=self._to_torch(encoded["image_embeddings"]) if output_image_embeddings else None,
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()

    def _encoded(self, pixel_values, image_embeddings, pixel_features) -> dict:
        if image_embeddings is None:
            return self.encode_images(pixel_values)
        encoded = {"image_embeddings": self._check_image_embeddings(image_embeddings)}
        num_images = encoded["image_embeddings"].shape[0]
        if "pixel_features" in self.encoder_outputs:
            if pixel_features is not None:
                encoded["pixel_features"] = self._check_pixel_features(pixel_features, num_images)
            elif pixel_values is not None:
                pixels = self._check_pixel_values(pixel_values)
                if pixels.shape[0] != num_images:
                    raise ValueError(
                        f"pixel_values hold {pixels.shape[0]} images but image_embeddings {num_images}: pass the "
                        "images the embeddings were computed from"
                    )
                encoded["pixel_features"] = self._run_encoder(pixels, ["pixel_features"])["pixel_features"]
            else:
                raise ValueError(
                    "This model has a pixel branch (config.pixel_decoder_channels="
                    f"{self.config.pixel_decoder_channels}): pass `pixel_values` (or `pixel_features` from "
                    "encode_images) together with `image_embeddings`"
                )
        return encoded

    def _run_encoder(self, pixels: np.ndarray, outputs: list[str]) -> dict:
        if self.isolate_calls and pixels.shape[0] > 1:
            parts = [self.image_encoder.run(outputs, {"pixel_values": pixels[i : i + 1]}) for i in range(len(pixels))]
            return {name: np.concatenate([part[k] for part in parts]) for k, name in enumerate(outputs)}
        return dict(zip(outputs, self.image_encoder.run(outputs, {"pixel_values": pixels})))

    def _decode(self, encoded: dict, ids: dict, indices: np.ndarray) -> np.ndarray:
        if not self.isolate_calls:
            return self.query_decoder.run(["logits"], {**encoded, **ids, "image_indices": indices})[0]
        logits = []
        zero = np.zeros(1, dtype=np.int64)
        for row, image in enumerate(indices.tolist()):
            feeds = {name: value[image : image + 1] for name, value in encoded.items()}
            feeds.update({name: value[row : row + 1] for name, value in ids.items()})
            logits.append(self.query_decoder.run(["logits"], {**feeds, "image_indices": zero})[0])
        return np.concatenate(logits)

    def _to_torch(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        return tensor if self.device.type == "cpu" else tensor.to(self.device)

    # ------------------------------------------------------------------------------------------------ input checks

    def _check_pixel_values(self, pixel_values) -> np.ndarray:
        pixels = _as_numpy(pixel_values, "pixel_values", "float")
        expected = self._pixel_shape
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != tuple(expected[1:]) or pixels.shape[0] == 0:
            raise ValueError(
                f"pixel_values has shape {_shape_text(pixels.shape)}, but the exported image encoder takes "
                f"(num_images >= 1, {', '.join(str(d) for d in expected[1:])}): resize with the export's processor "
                f"(config.image_size={self.config.image_size})"
            )
        return pixels

    def _check_image_embeddings(self, image_embeddings) -> np.ndarray:
        embeddings = _as_numpy(image_embeddings, "image_embeddings", "float")
        expected = self._embedding_shape
        if embeddings.ndim != 3 or tuple(embeddings.shape[1:]) != tuple(expected[1:]) or embeddings.shape[0] == 0:
            raise ValueError(
                f"image_embeddings has shape {_shape_text(embeddings.shape)}, but the query decoder takes "
                f"(num_images >= 1, {expected[1]}, {expected[2]}): pass what get_image_embeddings returns"
            )
        return embeddings

    def _check_pixel_features(self, pixel_features, num_images: int) -> np.ndarray:
        features = _as_numpy(pixel_features, "pixel_features", "float")
        expected = tuple(self.decoder_inputs["pixel_features"].shape)
        if features.ndim != 4 or tuple(features.shape[1:]) != expected[1:] or features.shape[0] != num_images:
            raise ValueError(
                f"pixel_features has shape {_shape_text(features.shape)}, expected ({num_images}, "
                f"{', '.join(str(d) for d in expected[1:])}) for {num_images} image(s)"
            )
        return features

    def _check_text(self, input_ids, attention_mask) -> dict:
        ids = _as_numpy(input_ids, "input_ids", "int")
        length = self._text_length
        if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] != length:
            raise ValueError(
                f"input_ids has shape {_shape_text(ids.shape)}, but the query decoder takes (num_expressions >= 1, "
                f"{length}): tokenise with the export's processor (padding to text_max_length={length})"
            )
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            bad = int(ids.max()) if ids.max() >= self.vocab_size else int(ids.min())
            raise ValueError(f"input_ids hold token id {bad}, outside the vocabulary of {self.vocab_size} tokens")
        mask = np.ones_like(ids) if attention_mask is None else _as_numpy(attention_mask, "attention_mask", "int")
        if mask.shape != ids.shape:
            raise ValueError(
                f"attention_mask has shape {_shape_text(mask.shape)} but input_ids {_shape_text(ids.shape)}: give "
                "one mask row per expression"
            )
        return {"input_ids": ids, "attention_mask": mask}

    def _check_image_indices(self, image_indices, num_images: int, num_expressions: int) -> np.ndarray:
        """The model's own rule and errors (`modeling_unires.input_checks_unires`), as the graph's int64 array."""
        return resolve_image_indices(image_indices, num_images, num_expressions, "cpu").numpy()


__all__ = ["CPU_PROVIDER", "CUDA_PROVIDER", "ORTModelForReferringSegmentation"]
