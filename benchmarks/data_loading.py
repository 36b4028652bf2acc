#!/usr/bin/env python
"""Data figures on MRES-Synth built in a temporary folder: streaming loader speed and Parquet bytes per mask.

- `loader_flatten_over_bare` (target >= 0.8): samples/s of `load_mres_dataset(..., streaming=True)` +
  `dataset_scripts.flatten.flatten_referents(..., decode_masks=True)` (one sample per sentence, each with its image
  and mask decoded, as a training loop would read them; the loader decodes each image and each referent's mask once
  and the samples share them; the loop checks the image is decoded RGB rather than copying it per sentence) over a bare loop that reads the same Parquet shards with pyarrow and decodes each
  image's bytes once (PIL) and each referent's RLE once (pycocotools), producing the same number of samples. The
  line also gives `ratio_rle_decoded_per_sample`: the RLE samples (`decode_masks=False`), each decoded by the loop
  with `decode_mask` and each image converted to RGB (a copy), once per sentence (the loop this figure used first).
- `loader_collator_over_bare` (target >= 0.8): referents/s of streaming rows + `unires.training.MRESTrainingCollator`
  (every referent of each image, so that it decodes every RLE; resizing and normalising by the processor included)
  over the same bare loop counting referents.
- `parquet_over_png_bytes_per_mask` (target <= 0.5): bytes of the mask columns (`referents.mask.counts` and
  `.size`, compressed, read from the Parquet footer) of `dataset_scripts.publish`'s output per mask, over the same
  masks written as PNG files (8-bit 0/255, the CRIS/RefCOCO_m layout; 1-bit PNG is reported beside it).

    python benchmarks/data_loading.py [--images 200 --image_size 96] [--profile]
"""

import glob
import io
import os
import tempfile

import numpy as np
import pyarrow.parquet as pq
from PIL import Image
from pycocotools import mask as mask_utils

from dataset_scripts.flatten import flatten_referents
from dataset_scripts.load import load_mres_dataset
from dataset_scripts.masks import decode_mask
from dataset_scripts.mres_synth import build_mres_synth

from common import base_parser, device_info, emit, median, paired_ratio, paired_timings, parse_args, rounded

MASK_COLUMNS = ("referents.list.element.mask.counts", "referents.list.element.mask.size.list.element")


def build(folder, images, image_size):
    counts = {"train": images, "validation": 0, "test": 0, "test_unseen": 0}
    build_mres_synth(os.path.join(folder, "data"), image_size=image_size, num_images=counts,
                     cache_dir=os.path.join(folder, "cache"))
    return sorted(glob.glob(os.path.join(folder, "data", "**", "train-*.parquet"), recursive=True))


def bare_loop(files, count_sentences: bool) -> int:
    """Decode every image once and every RLE once, straight from the Parquet shards."""
    samples = 0
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(columns=["image", "referents"]):
            for row in batch.to_pylist():
                Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")
                for referent in row["referents"]:
                    rle = referent["mask"]
                    mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
                    samples += len(referent["sentences"]) if count_sentences else 1
    return samples


def flatten_loop(folder) -> int:
    samples = 0
    for sample in flatten_referents(load_mres_dataset([folder], "train", streaming=True), decode_masks=True):
        # Decoded (load() decodes a lazy image, a no-op once done) and RGB; the samples of one image share it, so
        # a convert("RGB") here would copy the image once per sentence, which the bare loop does once per image.
        image = sample["image"]
        image.load()
        if image.mode != "RGB":
            image.convert("RGB")
        if sample["mask"].shape != (sample["height"], sample["width"]):
            raise RuntimeError(f"sample {samples}: a {sample['mask'].shape} mask for a {sample['image'].size} image")
        samples += 1
    return samples


def flatten_rle_loop(folder) -> int:
    """The RLE samples, each mask decoded by the loop (once per sentence)."""
    samples = 0
    for sample in flatten_referents(load_mres_dataset([folder], "train", streaming=True)):
        sample["image"].convert("RGB")
        decode_mask(sample["mask"])
        samples += 1
    return samples


def collator_loop(folder, collator, batch_size=4) -> int:
    referents, rows = 0, []
    for row in load_mres_dataset([folder], "train", streaming=True):
        rows.append(row)
        if len(rows) == batch_size:
            referents += len(collator(rows)["image_indices"])
            rows = []
    if rows:
        referents += len(collator(rows)["image_indices"])
    return referents


def png_bytes(mask: np.ndarray, mode: str) -> int:
    buffer = io.BytesIO()
    image = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
    (image.convert("1") if mode == "1" else image).save(buffer, format="PNG")
    return buffer.tell()


def storage_figure(files, image_size, info):
    parquet_bytes = 0
    for path in files:
        metadata = pq.ParquetFile(path).metadata
        for group in range(metadata.num_row_groups):
            row_group = metadata.row_group(group)
            for column in range(row_group.num_columns):
                if row_group.column(column).path_in_schema in MASK_COLUMNS:
                    parquet_bytes += row_group.column(column).total_compressed_size
    masks, png_l, png_1 = 0, 0, 0
    for path in files:
        for referents in pq.read_table(path, columns=["referents"]).column("referents").to_pylist():
            for referent in referents:
                mask = decode_mask(referent["mask"])
                masks += 1
                png_l += png_bytes(mask, "L")
                png_1 += png_bytes(mask, "1")
    per_mask = {"parquet": parquet_bytes / masks, "png_8bit": png_l / masks, "png_1bit": png_1 / masks}
    emit(f"parquet_over_png_bytes_per_mask_{image_size}px", per_mask["parquet"] / per_mask["png_8bit"], "<= 0.5",
         description=f"bytes per mask: publish()'s Parquet mask columns / 8-bit PNG files ({image_size}x{image_size})",
         ratio_vs_png_1bit=round(per_mask["parquet"] / per_mask["png_1bit"], 4),
         bytes_per_mask={k: round(v, 1) for k, v in per_mask.items()},
         setup=dict(masks=masks, image_size=image_size, parquet_columns=list(MASK_COLUMNS),
                    png="PIL defaults, one file per mask, file system block overhead not counted"),
         device=info)


def main():
    parser = base_parser(__doc__)
    parser.add_argument("--images", type=int, default=None, help="MRES-Synth train images (default 200)")
    parser.add_argument("--image_size", type=int, default=96, help="the demo's size; loader figures use it")
    parser.add_argument("--storage_sizes", type=int, nargs="+", default=[96, 480])
    args = parse_args(parser)
    images = args.images or (20 if args.quick else 200)
    repeats = args.repeats or (1 if args.quick else 3)
    info = device_info("cpu")
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        folder = os.path.join(tmp, str(args.image_size))
        files = build(folder, images, args.image_size)
        data_folder = os.path.join(folder, "data")

        counts = {}

        def record(name, fn):
            def run():
                counts[name] = fn()
            return run

        timings = paired_timings({"flatten": record("flatten", lambda: flatten_loop(data_folder)),
                                  "flatten_rle": record("flatten_rle", lambda: flatten_rle_loop(data_folder)),
                                  "bare": record("bare", lambda: bare_loop(files, True))}, repeats, "cpu")
        if not counts["flatten"] == counts["flatten_rle"] == counts["bare"]:
            raise RuntimeError(f"the loader gave {counts['flatten']} and {counts['flatten_rle']} samples, the bare "
                               f"loop {counts['bare']}")
        emit("loader_flatten_over_bare", paired_ratio(timings["bare"], timings["flatten"]), ">= 0.8",
             description="samples/s: streaming load_mres_dataset + flatten_referents(decode_masks=True) (every "
                         "sample's image and mask decoded, once per image and referent) / bare pyarrow + PIL + "
                         "pycocotools loop (each image and RLE decoded once)",
             ratio_rle_decoded_per_sample=round(paired_ratio(timings["bare"], timings["flatten_rle"]), 4),
             samples_per_s={n: counts[n] / median(v) for n, v in timings.items()}, samples=counts["bare"],
             timings_s=rounded(timings), setup=dict(images=images, image_size=args.image_size, repeats=repeats),
             device=info)

        from modeling_unires import UniRESImageProcessor, UniRESProcessor, build_clip_tokenizer
        from unires.training import MRESTrainingCollator
        from unires.training.scratch import all_sentences

        rows = load_mres_dataset([data_folder], "train")
        tokenizer = build_clip_tokenizer(all_sentences(rows), vocab_size=1200, model_max_length=17)
        processor = UniRESProcessor(UniRESImageProcessor(size=args.image_size), tokenizer, text_max_length=17)
        collator = MRESTrainingCollator(processor, referents_per_image=10_000)
        timings = paired_timings({"collator": record("collator", lambda: collator_loop(data_folder, collator)),
                                  "bare": record("bare", lambda: bare_loop(files, False))}, repeats, "cpu")
        if counts["collator"] != counts["bare"]:
            raise RuntimeError(f"the collator gave {counts['collator']} referents, the bare loop {counts['bare']}")
        emit("loader_collator_over_bare", paired_ratio(timings["bare"], timings["collator"]), ">= 0.8",
             description="referents/s: streaming load_mres_dataset + MRESTrainingCollator (all referents, batches "
                         "of 4 images, processor resize/normalise included) / bare decoding loop",
             samples_per_s={n: counts[n] / median(v) for n, v in timings.items()}, samples=counts["bare"],
             timings_s=rounded(timings), setup=dict(images=images, image_size=args.image_size, repeats=repeats),
             device=info)
        if args.profile:
            import cProfile
            import pstats
            import sys

            for name, fn in (("flatten", lambda: flatten_loop(data_folder)),
                             ("collator", lambda: collator_loop(data_folder, collator))):
                profiler = cProfile.Profile()
                profiler.runcall(fn)
                print(f"\n=== cProfile: {name} loop ===", file=sys.stderr)
                pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(15)

        for size in args.storage_sizes:
            storage_files = files if size == args.image_size else build(os.path.join(tmp, str(size)), images, size)
            storage_figure(storage_files, size, info)


if __name__ == "__main__":
    main()
