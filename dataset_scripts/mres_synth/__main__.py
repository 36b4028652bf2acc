"""Command line: ``python -m dataset_scripts.mres_synth --output_dir DIR [--image_size 96 --num_train N ...]``.

Writes the Hub-layout folder (``data/*.parquet`` + ``README.md``) that
``datasets.load_dataset(DIR, streaming=True)`` reads, and prints the generation speed.
"""

from __future__ import annotations

import argparse
import time

from run_support.cli import HelpFormatter, non_negative_int, positive_int
from .builder import SPLITS, MRESSynthConfig, build_mres_synth


def main(argv=None) -> None:
    defaults = MRESSynthConfig(name="default")
    parser = argparse.ArgumentParser(prog="python -m dataset_scripts.mres_synth", description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--output_dir", required=True, help="folder to write (Parquet shards + dataset card)")
    parser.add_argument("--image_size", type=positive_int, default=defaults.image_size, help="image side in pixels (>= 32)")
    for split in SPLITS:
        parser.add_argument(f"--num_{split}", type=non_negative_int, default=getattr(defaults, f"num_{split}"),
                            help=f"images in {split} (0 omits the split)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="base seed: the same seed makes the same data")
    parser.add_argument("--min_objects", type=positive_int, default=defaults.min_objects, help="objects per scene, at least")
    parser.add_argument("--max_objects", type=positive_int, default=defaults.max_objects, help="objects per scene, at most")
    parser.add_argument("--cache_dir", default=None, help="Arrow cache of the builder (default: the datasets cache)")
    parser.add_argument("--max_shard_size", default="256MB", help="largest Parquet shard")
    args = parser.parse_args(argv)

    num_images = {split: getattr(args, f"num_{split}") for split in SPLITS}
    start = time.perf_counter()
    dataset = build_mres_synth(
        args.output_dir,
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
    print(f"wrote {total} images to {args.output_dir} in {seconds:.1f} s ({total / max(seconds, 1e-9):.0f} images/s, "
          "including Parquet writing; a cached build is reused)")


if __name__ == "__main__":
    main()
