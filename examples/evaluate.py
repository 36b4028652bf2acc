#!/usr/bin/env python
r"""Score any text-to-mask model on an MRES split: object-only, part-only and object+part (the paper's Table 3).

    # UniRES (a folder or a Hub id) on MRES-Synth, beside two trivial baselines
    python examples/evaluate.py --model outputs/demo/model --dataset outputs/demo/data --split validation \\
        --baselines full_image largest_object_box --output results/unires.json
    # CLIPSeg and SAM 3 from the Hub on RefCOCO_m (the raw CRIS-layout release, or a published copy)
    python examples/evaluate.py --model CIDAS/clipseg-rd64-refined --model_type clipseg \\
        --dataset refcoco_m --data_dir /data/refcocom --split val --output results/clipseg.json
    python examples/evaluate.py --model facebook/sam3 --model_type sam3 --dataset refcoco_m --data_dir /data/refcocom \\
        --split val --output results/sam3.json
    # a model outside transformers: a function segment(image, expressions) -> masks (see unires/evaluation/segmenters)
    python examples/evaluate.py --model_type callable:my_wrapper.py:segment --dataset data/refcoco-m --split val
    # one table across models
    python examples/evaluate.py --compare results/unires.json results/clipseg.json results/sam3.json

Writes JSON (metrics, the dataset's identity: builder, config, split, counts, sha256 of the files and of the
annotations; every convention that changes a number) and a Markdown report beside it (.md). mIoU = gIoU (mean of
per-expression IoU), oIoU = cIoU (cumulative). The logic lives in `unires.evaluation` (harness, segmenters).
"""

import argparse
import json
import sys
from pathlib import Path

from dataset_scripts.cli import HelpFormatter

# "%(default).0s" prints nothing: it keeps the formatter from appending "(default: None)" after a default in words.
MODEL_TYPES_HELP = "unires, clipseg, sam3, pipeline, or callable:<module:fn> (module or path/to/file.py)"


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}: 0 would evaluate nothing")
    return value


def probability(text):
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add = parser.add_argument
    add("--model", default=None, help="checkpoint: Hub id or folder (not needed for callable:)")
    add("--model_type", default="unires", help=f"adapter: {MODEL_TYPES_HELP}")
    add("--name", default=None, help="name of the model in tables (default%(default).0s: --model)")
    add("--dataset", default=None,
        help="refcoco_m, refcoco, refcoco+, refcocog (raw release in --data_dir), mres-synth (folder in --data_dir), "
             "or the folder / Hub id of a published MRES-schema dataset")
    add("--data_dir", default=None, help="the downloaded release (refcoco_m: CRIS layout; refcoco*: REFER layout)")
    add("--dataset_config", default=None, help="raw RefCOCO family: builder config (default%(default).0s: refcoco-unc, "
                                               "refcoco+-unc, refcocog-umd)")
    add("--revision", default=None, help="Hub dataset revision, recorded in the result (default%(default).0s: main)")
    add("--cache_dir", default=None, help="builder cache for raw releases (default%(default).0s: the datasets cache)")
    add("--split", nargs="+", default=["validation"], help="split(s) (default: %(default)s; RefCOCO_m: val testA testB)")
    add("--max_images", type=positive_int, default=None, help="evaluate the first N images only (default%(default).0s: all)")
    add("--granularity", choices=["object", "part"], default=None, help="only this granularity (default%(default).0s: both)")
    add("--resolution", choices=["original", "input"], default="original",
        help="compare at each image's size (CRIS, the paper) or at the model's input size (LAVT)")
    add("--threshold", type=probability, default=None,
        help="probability > threshold is foreground (default%(default).0s: the adapter's: unires the config's 0.35, clipseg 0.35, "
             "sam3 0.5 on instance masks, callable 0.35)")
    add("--prec_comparison", choices=[">=", ">"], default=">=", help="Prec@X counts IoU >= X or > X (CRIS) "
                                                                    "")
    add("--empty_gt", choices=["one_if_both_empty", "zero"], default="one_if_both_empty",
        help="IoU of an empty prediction on an empty ground truth")
    add("--instance_rule", choices=["best", "union"], default="best",
        help="sam3: one mask from its instances: the highest-scoring one, or the union above --score_threshold "
             "")
    add("--score_threshold", type=probability, default=0.5, help="sam3 with --instance_rule union")
    add("--pipeline_task", default=None, help="pipeline: the task (default%(default).0s: referring-expression-segmentation for "
                                              "UniRES, else image-segmentation)")
    add("--baselines", nargs="*", default=[], choices=["full_image", "largest_object_box"],
        help="trivial baselines scored on the same rows (default%(default).0s: none)")
    add("--batch_size", type=positive_int, default=8, help="images per call")
    add("--device", default=None, help="cpu, cuda, ... (default%(default).0s: cuda when available)")
    add("--trust_remote_code", action="store_true", help="load a checkpoint's own code")
    add("--no_progress", action="store_true", help="no progress bar")
    add("--output", default=None, help="write the result as JSON here, and the Markdown report beside it (.md)")
    add("--compare", nargs="+", default=None, metavar="RESULT_JSON",
        help="print one table across these result files and exit")
    args = parser.parse_args(argv)
    if args.compare is None:
        if not args.dataset:
            parser.error("--dataset is required (or --compare RESULT_JSON ...)")
        if not args.model and not args.model_type.startswith("callable:"):
            parser.error(f"--model is required for --model_type {args.model_type}")
    return args


def main(argv=None):
    args = parse_args(argv)
    # Heavy imports after parsing: --help and argument errors answer at once.
    from unires.evaluation.harness import compare_table, markdown_report, run_evaluation

    if args.compare:
        results = [json.loads(Path(path).read_text()) for path in args.compare]
        print(compare_table(results))
        return results
    try:
        result = run_evaluation(
            args.model, args.model_type, args.dataset, args.split, data_dir=args.data_dir,
            dataset_config=args.dataset_config, revision=args.revision, cache_dir=args.cache_dir,
            resolution=args.resolution, threshold=args.threshold, prec_comparison=args.prec_comparison,
            empty_gt=args.empty_gt, batch_size=args.batch_size, max_images=args.max_images,
            granularity=args.granularity, device=args.device, label=args.name, progress=not args.no_progress,
            instance_rule=args.instance_rule, score_threshold=args.score_threshold, task=args.pipeline_task,
            trust_remote_code=args.trust_remote_code or None, baselines=args.baselines,
        )
    except (ValueError, OSError) as error:
        sys.exit(f"error: {error}")
    report = markdown_report(result)
    print(report)
    if args.output:
        path = Path(args.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))
        path.with_suffix(".md").write_text(report)
        print(f"written: {path} and {path.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
