"""Build one of the MRES datasets and write it in the Hub layout (optionally pushing it).

    python examples/build_dataset.py mres-synth --out data/mres-synth --num-train 10000
    python examples/build_dataset.py refcoco-m --data-dir /data/refcocom --out data/refcocom
    python examples/build_dataset.py refcoco --config refcoco-unc --data-dir /data/refer --out org/refcoco --push

Every run reads the inputs again (a repaired file is seen), prints the summary line
"kept N, fixed N, skipped N" and writes rejects.jsonl into --out (with --push: --rejects, by
default ./rejects.jsonl).
"""

import argparse
import logging
import os
import tempfile

from dataset_scripts.mres_synth import SPLITS, build_mres_synth
from dataset_scripts.publish import publish
from dataset_scripts.refcoco import RefCOCO
from dataset_scripts.refcoco_m import RefCOCOm


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=["mres-synth", "refcoco-m", "refcoco"])
    parser.add_argument("--out", required=True, help="folder, or Hub repo id with --push")
    parser.add_argument("--push", action="store_true", help="--out is a Hub dataset repo id to push to")
    parser.add_argument("--data-dir", help="downloaded release (refcoco-m, refcoco)")
    parser.add_argument("--config", default="refcoco-unc", help="refcoco config: refcoco-unc, refcoco+-unc, refcocog-umd, refcocog-google")
    parser.add_argument("--image-dir", default=None, help="COCO train2014 folder, if not under --data-dir")
    parser.add_argument("--annotation-dir", default=None, help="CRIS layout: folder of {split}.json, if not annotations/ or anns/{dataset}/")
    parser.add_argument("--mask-dir", default=None, help="CRIS layout: folder of {segment_id}.png, if not masks/ or masks/{dataset}/")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    for split in SPLITS:
        parser.add_argument("--num-" + split.replace("_", "-"), type=int, default=None)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--rejects", default=None, help="rejects file (default: rejects.jsonl in --out; with --push, in the working directory)")
    parser.add_argument("--max-shard-size", default="256MB")
    args = parser.parse_args(argv)
    _show_build_log()
    rejects = args.rejects or (os.path.abspath("rejects.jsonl") if args.push else os.path.join(args.out, "rejects.jsonl"))

    if args.dataset == "mres-synth":
        counts = {s: getattr(args, f"num_{s}") for s in SPLITS if getattr(args, f"num_{s}") is not None}
        local = tempfile.mkdtemp(prefix="mres-synth-") if args.push else args.out
        dataset = build_mres_synth(local, image_size=args.image_size,
                                   num_images=counts, seed=args.seed, cache_dir=args.cache_dir,
                                   max_shard_size=args.max_shard_size, rejects_path=rejects)
        if args.push:
            print(publish(dataset, args.out, max_shard_size=args.max_shard_size))
        return
    if not args.data_dir:
        parser.error(f"{args.dataset} needs --data-dir")
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
