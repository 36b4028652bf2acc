r"""Build one of the MRES datasets and write it in the Hub layout (optionally pushing it).

    python examples/build_dataset.py mres-synth --output_dir data/mres-synth --num_train 10000
    python examples/build_dataset.py refcoco-m --data_dir /data/refcocom --output_dir data/refcocom
    python examples/build_dataset.py refcoco --config refcoco-unc --data_dir /data/refer \
        --push_to_hub --hub_dataset_id org/refcoco

Every run reads the inputs again (a repaired file is seen), prints the summary line
"kept N, fixed N, skipped N" and writes rejects.jsonl into --output_dir (without one: --rejects,
by default ./rejects.jsonl). With --push_to_hub, the login and the repo are checked before building.
"""

import argparse
import logging
import os
import sys

from run_support.cli import HelpFormatter, non_negative_int, positive_int, refuse_missing_paths, root_cause

# MRES-Synth's splits, spelled here so that --help needs no import of datasets (checked by the tests).
SYNTH_SPLITS = ("train", "validation", "test", "test_unseen")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("dataset", choices=["mres-synth", "refcoco-m", "refcoco"], help="what to build")
    parser.add_argument("--output_dir", help="folder to write (optional with --push_to_hub: then a temporary one)")
    parser.add_argument("--push_to_hub", action="store_true", help="push the folder to the Hub dataset repo --hub_dataset_id")
    parser.add_argument("--hub_dataset_id", help="org/name of the Hub dataset repo (with --push_to_hub)")
    parser.add_argument("--hub_token", default=None, help="token with write access (default: the saved login)")
    parser.add_argument("--hub_private_repo", action="store_true", help="create the Hub repo private")
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
    parser.add_argument("--rejects", default=None, help="rejects file (default: rejects.jsonl in --output_dir, else in the working directory)")
    parser.add_argument("--max_shard_size", default="256MB", help="largest Parquet shard")
    args = parser.parse_args(argv)
    if args.dataset != "mres-synth" and not args.data_dir:
        parser.error(f"{args.dataset} needs --data_dir")
    if not args.output_dir and not args.push_to_hub:
        parser.error("give --output_dir, --push_to_hub with --hub_dataset_id, or both")
    if args.push_to_hub and not args.hub_dataset_id:
        parser.error("--push_to_hub needs --hub_dataset_id org/name")
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
    print(publish(builder.as_dataset(), args.output_dir, max_shard_size=args.max_shard_size, card_data=card, **push))


def _show_build_log():
    """Show the builders' messages, among them the summary line, on stderr."""
    logging.basicConfig(format="%(message)s")
    for name in ("dataset_scripts", "run_support"):  # the builders, and the reject log's summary line
        logging.getLogger(name).setLevel(logging.INFO)


if __name__ == "__main__":
    main()
