r"""Build one of the MRES datasets and write it in the Hub layout (optionally pushing it).

    python examples/build_dataset.py mres-synth --output_dir data/mres-synth --num_train 10000
    python examples/build_dataset.py refcoco-m --data_dir /data/refcocom --output_dir data/refcocom
    python examples/build_dataset.py refcoco --config refcoco-unc --data_dir /data/refer \
        --push_to_hub --hub_dataset_id org/refcoco
    # your own folder: images + metadata.jsonl (or COCO annotations.json), one subfolder per split
    python examples/build_dataset.py own-data --data_dir my_folder --output_dir data/my_folder
    # the part and reasoning benchmarks, from their releases (cards state source, licence, counts, conventions)
    python examples/build_dataset.py instructpart --data_dir /data/InstructPart --config task --output_dir data/instructpart
    python examples/build_dataset.py groundingsuite --data_dir /data/GSEval --image_dir /data/coco --output_dir data/gseval
    python examples/build_dataset.py reasonseg --data_dir /data/ReasonSeg --output_dir data/reasonseg

Every run reads the inputs again (a repaired file is seen), prints the summary line
"kept N, fixed N, skipped N" and writes rejects.jsonl into --output_dir (without one: --rejects,
by default ./rejects.jsonl). With --push_to_hub, the login and the repo are checked before building. own-data and the
benchmarks refuse a malformed row instead of skipping it: the build stops with one line naming the file, the line
(or entry) and the key.
"""

import argparse
import logging
import os
import sys

from run_support.cli import HelpFormatter, non_negative_int, positive_int, refuse_missing_paths, root_cause

# MRES-Synth's splits, spelled here so that --help needs no import of datasets (checked by the tests).
SYNTH_SPLITS = ("train", "validation", "test", "test_unseen")
# --config of each builder that has several (the first is the default); spelled here for --help, as above.
CONFIGS = {
    "refcoco": ("refcoco-unc", "refcoco+-unc", "refcocog-umd", "refcocog-google"),
    "instructpart": ("task", "task_rewritten", "part_of_object", "all"),
    "groundingsuite": ("default", "label"),
    "reasonseg": ("default", "all_texts", "short", "long"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("dataset", choices=["mres-synth", "refcoco-m", "refcoco", "own-data", "instructpart",
                                            "groundingsuite", "reasonseg"], help="what to build")
    parser.add_argument("--output_dir", help="folder to write (optional with --push_to_hub: then a temporary one)")
    parser.add_argument("--push_to_hub", action="store_true", help="push the folder to the Hub dataset repo --hub_dataset_id")
    parser.add_argument("--hub_dataset_id", help="org/name of the Hub dataset repo (with --push_to_hub)")
    parser.add_argument("--hub_token", default=None, help="token with write access (default: the saved login)")
    parser.add_argument("--hub_private_repo", action="store_true", help="create the Hub repo private")
    parser.add_argument("--data_dir", help="downloaded release (refcoco-m, refcoco, instructpart: the folder of test/ and "
                                           "train/, groundingsuite: the folder of GroundingSuite-Eval.jsonl, reasonseg: "
                                           "the folder of train/ val/ test/), or your folder (own-data)")
    parser.add_argument("--config", default=None,
                        help="builder config: " + "; ".join(f"{name}: {', '.join(configs)}" for name, configs in CONFIGS.items())
                             + " (default: the first)")
    parser.add_argument("--image_dir", default=None, help="refcoco: COCO train2014 folder, if not under --data_dir; "
                                                          "groundingsuite: the folder image_path is relative to (holding "
                                                          "unlabeled2017/), if not --data_dir")
    parser.add_argument("--annotation_dir", default=None, help="CRIS layout: folder of {split}.json, if not annotations/ or anns/{dataset}/")
    parser.add_argument("--mask_dir", default=None, help="CRIS layout: folder of {segment_id}.png, if not masks/ or masks/{dataset}/")
    parser.add_argument("--train_size", type=int, choices=[200, 600, 1200, 1800], default=1800,
                        help="instructpart: the nested training subset read as train")
    parser.add_argument("--pretty_name", default=None, help="own-data: the dataset card's name (default: the folder's)")
    parser.add_argument("--license", default="other", help="own-data: the dataset card's licence (an SPDX id, or other)")
    parser.add_argument("--image_size", type=positive_int, default=96, help="mres-synth: image side in pixels (>= 32)")
    parser.add_argument("--seed", type=int, default=0, help="mres-synth: base seed")
    for split in SYNTH_SPLITS:
        parser.add_argument(f"--num_{split}", type=non_negative_int, default=None,
                            help=f"mres-synth: images in {split} (0 omits the split; default: the config's)")
    parser.add_argument("--cache_dir", default=None, help="the builder's Arrow cache (default: the datasets cache)")
    parser.add_argument("--rejects", default=None, help="rejects file (default: rejects.jsonl in --output_dir, else in the working directory)")
    parser.add_argument("--max_shard_size", default="256MB", help="largest Parquet shard")
    args = parser.parse_args(argv)
    if args.dataset != "mres-synth" and not args.data_dir:
        parser.error(f"{args.dataset} needs --data_dir")
    if not args.output_dir and not args.push_to_hub:
        parser.error("give --output_dir, --push_to_hub with --hub_dataset_id, or both")
    if args.push_to_hub and not args.hub_dataset_id:
        parser.error("--push_to_hub needs --hub_dataset_id org/name")
    if args.config is not None and args.config not in CONFIGS.get(args.dataset, ()):
        parser.error(f"--config {args.config}: {args.dataset} has "
                     + (f"the configs {', '.join(CONFIGS[args.dataset])}" if args.dataset in CONFIGS else "no configs"))
    # Inputs that must exist, named before any folder is written (a typo is a missing path, not a builder error).
    refuse_missing_paths(parser, local=[(option, getattr(args, option[2:]), "folder")
                                        for option in ("--data_dir", "--image_dir", "--annotation_dir", "--mask_dir")])
    _show_build_log()
    from datasets.exceptions import DatasetGenerationError

    from run_support.hub import HubPushError

    try:
        build(args)
    except (ValueError, OSError, DatasetGenerationError, HubPushError) as error:
        # Bad data: one line, exit code 1. The builder's own message names the file and the item; datasets
        # wraps it in a DatasetGenerationError that names neither, so the innermost cause is shown.
        sys.exit(f"error: {root_cause(error)}")


def build(args):
    from run_support.hub import check_push_access, repo_url
    from dataset_scripts.publish import publish

    rejects = args.rejects or os.path.join(args.output_dir or os.getcwd(), "rejects.jsonl")
    push = {}
    if args.push_to_hub:  # fail in seconds, before a build that may take hours
        repo_id = check_push_access(args.hub_dataset_id, args.output_dir, token=args.hub_token,
                                    private=args.hub_private_repo, repo_type="dataset", option="--hub_dataset_id")
        push = {"repo_id": repo_id, "token": args.hub_token, "private": args.hub_private_repo}
    if args.dataset == "mres-synth":
        from dataset_scripts.mres_synth import build_mres_synth

        counts = {s: getattr(args, f"num_{s}") for s in SYNTH_SPLITS if getattr(args, f"num_{s}") is not None}
        build_mres_synth(args.output_dir, image_size=args.image_size, num_images=counts, seed=args.seed,
                         cache_dir=args.cache_dir, max_shard_size=args.max_shard_size, rejects_path=rejects, **push)
        print(repo_url(push["repo_id"], "dataset") if push else args.output_dir)
        return
    if args.dataset in STRICT:
        print(build_strict(args, rejects, push))
        return
    from dataset_scripts.refcoco import RefCOCO
    from dataset_scripts.refcoco_m import RefCOCOm

    folders = {"image_dir": args.image_dir, "annotation_dir": args.annotation_dir, "mask_dir": args.mask_dir}
    extra = {key: value for key, value in folders.items() if value}
    if args.dataset == "refcoco-m":
        builder = RefCOCOm(data_dir=args.data_dir, cache_dir=args.cache_dir, rejects_path=rejects, **extra)
    else:
        builder = RefCOCO(config_name=args.config or CONFIGS["refcoco"][0], data_dir=args.data_dir,
                          cache_dir=args.cache_dir, rejects_path=rejects, **extra)
    # the cache is keyed on the config, not on the files: rebuild so that a repaired input is read
    builder.download_and_prepare(download_mode="force_redownload")
    card = {"pretty_name": builder.info.config_name if args.dataset == "refcoco" else "RefCOCO_m",
            "description": builder.info.description, "citation": builder.info.citation,
            "homepage": builder.info.homepage, "license": "other"}
    print(publish(builder.as_dataset(), args.output_dir, max_shard_size=args.max_shard_size, card_data=card, **push))


# The builders that refuse a malformed row (they never skip one): own-data and the benchmarks.
STRICT = ("own-data", "instructpart", "groundingsuite", "reasonseg")


def build_strict(args, rejects, push) -> str:
    """Build own-data or a benchmark and write / push it with its card (source, licence, counts; the benchmarks'
    metric conventions); the folder or repository URL written."""
    common = {"cache_dir": args.cache_dir, "max_shard_size": args.max_shard_size, "rejects_path": rejects, **push}
    if args.dataset == "own-data":
        from dataset_scripts.own_data import build_own_data

        return build_own_data(args.data_dir, args.output_dir, pretty_name=args.pretty_name, license=args.license,
                              **common)
    config = args.config or CONFIGS[args.dataset][0]
    if args.dataset == "instructpart":
        from dataset_scripts.instructpart import build_instructpart

        return build_instructpart(args.data_dir, args.output_dir, config_name=config, train_size=args.train_size,
                                  **common)
    if args.dataset == "groundingsuite":
        from dataset_scripts.groundingsuite import build_groundingsuite

        return build_groundingsuite(args.data_dir, args.output_dir, config_name=config, image_dir=args.image_dir,
                                    **common)
    from dataset_scripts.reasonseg import build_reasonseg

    return build_reasonseg(args.data_dir, args.output_dir, config_name=config, **common)


def _show_build_log():
    """Show the builders' messages, among them the summary line, on stderr."""
    logging.basicConfig(format="%(message)s")
    for name in ("dataset_scripts", "run_support"):  # the builders, and the reject log's summary line
        logging.getLogger(name).setLevel(logging.INFO)


if __name__ == "__main__":
    main()
