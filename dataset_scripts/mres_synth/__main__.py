"""Command line: ``python -m dataset_scripts.mres_synth --out DIR [--image-size 96 --num-train N ...]``.

Writes the Hub-layout folder (``data/*.parquet`` + ``README.md``) that
``datasets.load_dataset(DIR, streaming=True)`` reads, and prints the generation speed.
"""

from __future__ import annotations

import argparse
import time

from .builder import SPLITS, MRESSynthConfig, build_mres_synth


def main(argv=None) -> None:
    defaults = MRESSynthConfig(name="default")
    parser = argparse.ArgumentParser(prog="python -m dataset_scripts.mres_synth", description=__doc__)
    parser.add_argument("--out", required=True, help="folder to write (Parquet shards + dataset card)")
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    for split in SPLITS:
        flag = "--num-" + split.replace("_", "-")
        parser.add_argument(flag, type=int, default=getattr(defaults, f"num_{split}"), help=f"images in {split}")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--min-objects", type=int, default=defaults.min_objects)
    parser.add_argument("--max-objects", type=int, default=defaults.max_objects)
    parser.add_argument("--cache-dir", default=None, help="Arrow cache of the builder (default: datasets cache)")
    parser.add_argument("--max-shard-size", default="256MB")
    args = parser.parse_args(argv)

    num_images = {split: getattr(args, f"num_{split}") for split in SPLITS}
    start = time.perf_counter()
    dataset = build_mres_synth(
        args.out,
        image_size=args.image_size,
        num_images=num_images,
        seed=args.seed,
        cache_dir=args.cache_dir,
        max_shard_size=args.max_shard_size,
        min_objects=args.min_objects,
        max_objects=args.max_objects,
    )
    seconds = time.perf_counter() - start
    total = sum(len(ds) for ds in dataset.values())
    print(f"wrote {total} images to {args.out} in {seconds:.1f} s ({total / max(seconds, 1e-9):.0f} images/s, "
          "including Parquet writing; a cached build is reused)")


if __name__ == "__main__":
    main()
