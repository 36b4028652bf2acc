"""Turn image rows (one per image, many referents) into training samples (one per sentence)."""

from __future__ import annotations

import zlib
from typing import Any, Optional

import PIL.Image
from datasets import Dataset, Image, IterableDataset, List, Value

from .features import FLAT_FEATURES, GRANULARITIES, sentences_of
from .masks import decode_mask

_SENTENCE_MODES = ("all", "one")
_IMAGE = Image()
# Rows per batch of the streaming flatten: each batch holds its decoded images until its samples are read, so a
# small one bounds memory (datasets' default of 1000 would keep 1000 decoded images alive).
STREAMING_BATCH_SIZE = 16
# With decode_masks=True, `mask` and `parent_mask` are (height, width) bool arrays instead of RLE.
DECODED_MASK_FEATURE = List(List(Value("bool")))


def choose_sentence_index(num_sentences: int, referent_id: str, seed: int) -> int:
    """Deterministic sentence choice from ``seed`` and ``referent_id`` (stable across runs and machines)."""
    return zlib.crc32(f"{seed}:{referent_id}".encode("utf-8")) % num_sentences


def _decoded(rle, name: str):
    """A mask as a read-only bool array (read-only: the samples of one referent share it)."""
    array = decode_mask(rle, name=name)
    array.flags.writeable = False
    return array


def _flatten_batch(
    batch: dict[str, list],
    granularity: Optional[str],
    sentences: str,
    seed: int,
    decode_images: bool = False,
    decode_masks: bool = False,
) -> dict[str, list]:
    out: dict[str, list[Any]] = {name: [] for name in FLAT_FEATURES}
    for row in range(len(batch["image_id"])):
        referents = batch["referents"][row] or []
        image = batch["image"][row]
        if decode_images and not isinstance(image, PIL.Image.Image):
            image = _IMAGE.decode_example(image)  # once per row: the row's samples share it
        masks_by_id = {ref["referent_id"]: ref["mask"] for ref in referents}
        decoded: dict[str, Any] = {}  # decode_masks: once per referent (a parent's too), shared by its samples

        def mask_of(referent_id):
            if not decode_masks:
                return masks_by_id[referent_id]
            if referent_id not in decoded:
                name = f"mask of image {batch['image_id'][row]!r} referent {referent_id!r}"
                decoded[referent_id] = _decoded(masks_by_id[referent_id], name)
            return decoded[referent_id]
        for ref in referents:
            if granularity is not None and ref["granularity"] != granularity:
                continue
            texts = sentences_of(ref)
            if not texts:
                continue
            if sentences == "one":
                texts = [texts[choose_sentence_index(len(texts), ref["referent_id"], seed)]]
            mask = mask_of(ref["referent_id"])
            parent_mask = mask_of(ref["parent_id"]) if ref["parent_id"] in masks_by_id else None
            for text in texts:
                out["image"].append(image)
                out["image_id"].append(batch["image_id"][row])
                out["referent_id"].append(ref["referent_id"])
                out["sentence"].append(text)
                out["granularity"].append(ref["granularity"])
                out["category"].append(ref["category"])
                out["object_category"].append(ref["object_category"])
                out["mask"].append(mask)
                out["parent_mask"].append(parent_mask)
                out["width"].append(batch["width"][row])
                out["height"].append(batch["height"][row])
    return out


def flatten_referents(
    dataset: Dataset | IterableDataset,
    granularity: Optional[str] = None,
    sentences: str = "all",
    seed: int = 0,
    decode_masks: bool = False,
    **map_kwargs: Any,
) -> Dataset | IterableDataset:
    """Expand rows of :data:`~dataset_scripts.features.MRES_FEATURES` into one sample per sentence.

    Works on map-style and streaming datasets alike (returns the same kind it gets). Each
    sample has the columns of :data:`~dataset_scripts.features.FLAT_FEATURES`: ``image``,
    ``image_id``, ``referent_id``, ``sentence``, ``granularity``, ``category``,
    ``object_category``, ``mask`` (COCO RLE), ``parent_mask`` (the parent object's RLE for a
    part whose object is annotated in the row, else None), ``width``, ``height``.

    Args:
        dataset: rows with the MRES schema.
        granularity: keep only ``"object"`` or ``"part"`` referents; ``None`` keeps both.
        sentences: ``"all"`` gives one sample per sentence; ``"one"`` one sample per referent,
            the sentence chosen deterministically from ``seed`` and the referent id.
        seed: seed of the sentence choice for ``sentences="one"``.
        decode_masks: give ``mask`` and ``parent_mask`` as read-only ``(height, width)`` bool arrays instead of
            RLE (a bad RLE raises ``ValueError`` naming its image and referent). Streaming decodes each referent's
            mask once and its samples share the array; map-style decodes on access (``with_transform``).
        **map_kwargs: passed to ``dataset.map`` (e.g. ``num_proc``, ``batch_size``; streaming: rows per batch,
            default :data:`STREAMING_BATCH_SIZE`).

    Streaming decodes each image once: the samples of one row share one PIL image (copy it before changing it in
    place), and the samples of one referent share its RLE dict.
    """
    if granularity is not None and granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be None or one of {GRANULARITIES}, got {granularity!r}")
    if sentences not in _SENTENCE_MODES:
        raise ValueError(f"sentences must be one of {_SENTENCE_MODES}, got {sentences!r}")
    if not isinstance(dataset, (Dataset, IterableDataset)):
        raise TypeError(f"flatten_referents expects a datasets.Dataset or IterableDataset, got {type(dataset)}")
    kwargs = dict(granularity=granularity, sentences=sentences, seed=seed)
    if isinstance(dataset, IterableDataset):
        if dataset.column_names is None:
            raise ValueError(
                "flatten_referents needs a streaming dataset with known features (the MRES schema); this one has "
                "none: pass features=MRES_FEATURES when building it, or call .cast(MRES_FEATURES)"
            )
        # The input rows arrive decoded (one PIL image per row, shared by the row's samples), and the output is
        # declared typed with FLAT_FEATURES, so that `datasets` passes the samples through as they are instead
        # of re-encoding every nested example and decoding its image once per sentence.
        map_kwargs.setdefault("batch_size", STREAMING_BATCH_SIZE)
        features = FLAT_FEATURES.copy()
        if decode_masks:
            features["mask"] = features["parent_mask"] = DECODED_MASK_FEATURE
        return dataset.map(
            _flatten_batch, batched=True, fn_kwargs=dict(kwargs, decode_images=True, decode_masks=decode_masks),
            remove_columns=list(dataset.column_names), features=features, **map_kwargs,
        )
    # Map-style: the samples are written to Arrow, so pass image bytes through untouched (decoding then
    # re-encoding every image would be slow and could change the bytes); they are decoded on access.
    raw = dataset.cast_column("image", Image(decode=False))
    flat_raw = FLAT_FEATURES.copy()
    flat_raw["image"] = Image(decode=False)
    flat = raw.map(
        _flatten_batch, batched=True, fn_kwargs=kwargs, remove_columns=list(dataset.column_names), features=flat_raw,
        **map_kwargs,
    )
    flat = flat.cast_column("image", Image())
    return flat.with_transform(_decode_sample_masks) if decode_masks else flat


def _decode_sample_masks(batch: dict[str, list]) -> dict[str, list]:
    """Map-style ``decode_masks``: the RLE columns of the rows read, decoded."""
    for column, what in (("mask", "mask"), ("parent_mask", "parent mask")):
        batch[column] = [
            None if rle is None else _decoded(rle, f"{what} of image {image_id!r} referent {referent_id!r}")
            for rle, image_id, referent_id in zip(batch[column], batch["image_id"], batch["referent_id"])
        ]
    return batch
