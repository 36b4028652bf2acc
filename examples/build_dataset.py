"""Build one of the MRES datasets and write it in the Hub layout (optionally pushing it).

    python examples/build_dataset.py mres-synth --out data/mres-synth --num_train 10000
    python examples/build_dataset.py refcoco-m --data_dir /data/refcocom --out data/refcocom
    python examples/build_dataset.py refcoco --config refcoco-unc --data_dir /data/refer --out org/refcoco --push

Every run reads the inputs again (a repaired file is seen), prints the summary line
"kept N, fixed N, skipped N" and writes rejects.jsonl into --out (with --push: --rejects, by
default ./rejects.jsonl).
"""

import argparse
import logging
import os
import sys
import tempfile

from dataset_scripts.cli import HelpFormatter, non_negative_int, positive_int, root_cause

# MRES-Synth's splits, spelled here so that --help needs no import of datasets (checked by the tests).
SYNTH_SPLITS = ("train", "validation", "test", "test_unseen")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("dataset", choices=["mres-synth", "refcoco-m", "refcoco"], help="what to build")
    parser.add_argument("--out", required=True, help="folder, or Hub repo id with --push")
    parser.add_argument("--push", action="store_true", help="--out is a Hub dataset repo id to push to")
    parser.add_argument("--data_dir", help="downloaded release (refcoco-m, refcoco)")
    parser.add_argument("--config", default="refcoco-unc", help="refcoco config: refcoco-unc, refcoco+-unc, refcocog-umd, refcocog-google")
    parser.add_argument("--image_dir", default=None, help="COCO train2014 folder, if not under --data_dir")
    parser.add_argument("--annotation_dir", default=None, help="CRIS layout: folder of {split}.json, if not annotations/ or anns/{dataset}/")
    parser.add_argument("--mask_dir", default=None, help="CRIS layout: folder of {segment_id}.png, if not masks/ or masks/{dataset}/")
    parser.add_argument("--image_size", type=positive_int, default=96, help="mres-synth: image side in pixels (>= 32)")
    parser.add_argument("--seed", type=int, default=0, help="mres-synth: base seed")
    for split in SYNTH_SPLITS:
        parser.add_argument(f"--num_{split}", type=non_negative_int, default=None,
                            help=f"mres-synth: images in {split} (0 omits the split; default: the config's)")
    parser.add_argument("--cache_dir", default=None, help="the builder's Arrow cache (default: the datasets cache)")
    parser.add_argument("--rejects", default=None, help="rejects file (default: rejects.jsonl in --out; with --push, in the working directory)")
    parser.add_argument("--max_shard_size", default="256MB", help="largest Parquet shard")
    args = parser.parse_args(argv)
    if args.dataset != "mres-synth" and not args.data_dir:
        parser.error(f"{args.dataset} needs --data_dir")
    _show_build_log()
    from datasets.exceptions import DatasetGenerationError

    try:
        build(args)
    except (ValueError, OSError, DatasetGenerationError) as error:
        # Bad data: one line, exit code 1. The builder's own message names the file and the item; datasets
        # wraps it in a DatasetGenerationError that names neither, so the innermost cause is shown.
        sys.exit(f"error: {root_cause(error)}")


def build(args):
    from dataset_scripts.publish import publish

    rejects = args.rejects or (os.path.abspath("rejects.jsonl") if args.push else os.path.join(args.out, "rejects.jsonl"))
    if args.dataset == "mres-synth":
        from dataset_scripts.mres_synth import build_mres_synth

        counts = {s: getattr(args, f"num_{s}") for s in SYNTH_SPLITS if getattr(args, f"num_{s}") is not None}
        with tempfile.TemporaryDirectory(prefix="mres-synth-") as staging:
            dataset = build_mres_synth(staging if args.push else args.out, image_size=args.image_size,
                                       num_images=counts, seed=args.seed, cache_dir=args.cache_dir,
                                       max_shard_size=args.max_shard_size, rejects_path=rejects)
            if args.push:
                print(publish(dataset, args.out, max_shard_size=args.max_shard_size))
        return
    from dataset_scripts.refcoco import RefCOCO
    from dataset_scripts.refcoco_m import RefCOCOm

    folders = {"image_dir": args.image_dir, "annotation_dir": args.annotation_dir, "mask_dir": args.mask_dir}
    extra = {key: value for key, value in folders.items() if value}
    if args.dataset == "refcoco-m":
        builder = RefCOCOm(data_dir=args.data_dir, cache_dir=args.cache_dir, rejects_path=rejects, **extra)
    else:
        builder = RefCOCO(config_name=args.config, data_dir=args.data_dir, cache_dir=args.cache_dir,
                          rejects_path=rejects, **extra)
    # the cache is keyed on the config, not on the files: rebuild so that a repaired input is read
    builder.download_and_prepare(download_mode="force_redownload")
    card = {"pretty_name": builder.info.config_name if args.dataset == "refcoco" else "RefCOCO_m",
            "description": builder.info.description, "citation": builder.info.citation,
            "homepage": builder.info.homepage, "license": "other"}
    print(publish(builder.as_dataset(), args.out, max_shard_size=args.max_shard_size, card_data=card))


def _show_build_log():
    """Show the builders' messages, among them the summary line, on stderr."""
    logging.basicConfig(format="%(message)s")
    logging.getLogger("dataset_scripts").setLevel(logging.INFO)


if __name__ == "__main__":
    main()
