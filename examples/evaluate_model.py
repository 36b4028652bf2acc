#!/usr/bin/env python
r"""Score any text-to-mask model on an MRES split: object-only, part-only and object+part (the paper's Table 3).

    # UniRES (a folder or a Hub id) on MRES-Synth, beside the two trivial baselines
    python examples/evaluate_model.py --model outputs/demo/model --dataset outputs/demo/data --split validation \\
        --baselines full_image largest_object_box --output results/unires.json
    # CLIPSeg and SAM 3 from the Hub on RefCOCO_m (the raw CRIS-layout release, or a published copy)
    python examples/evaluate_model.py --model CIDAS/clipseg-rd64-refined --model_type clipseg \\
        --dataset refcoco_m --data_dir /data/refcocom --split val --output results/clipseg.json
    python examples/evaluate_model.py --model facebook/sam3 --model_type sam3 --dataset refcoco_m --data_dir /data/refcocom \\
        --split val --output results/sam3.json
    # the part and reasoning benchmarks, each read from its own release; their own metric conventions beside ours
    python examples/evaluate_model.py --model org/unires --dataset instructpart --data_dir /data/InstructPart \\
        --dataset_config part_of_object --output results/instructpart.json
    python examples/evaluate_model.py --model org/unires --dataset groundingsuite --data_dir /data/GSEval
    python examples/evaluate_model.py --model org/unires --dataset reasonseg --data_dir /data/ReasonSeg --split val test
    # your own folder (metadata.jsonl or COCO annotations.json; one subfolder per split), built on the fly
    python examples/evaluate_model.py --model outputs/finetuned --dataset my_folder --split validation
    # a model outside transformers: a function segment(image, expressions) -> masks (see unires/evaluation/segmenters)
    python examples/evaluate_model.py --model_type callable:my_wrapper.py:segment --dataset data/refcoco-m --split val
    # one table across models
    python examples/evaluate_model.py --compare results/unires.json results/clipseg.json results/sam3.json

Writes JSON (metrics, the dataset's identity: builder, config, split, counts, sha256 of the files and of the
annotations; every convention that changes a number; for InstructPart, GroundingSuite-Eval and ReasonSeg that
benchmark's own metric conventions beside ours, from `unires.evaluation.conventions`) and a Markdown report beside it
(.md). mIoU = gIoU (mean of per-expression IoU), oIoU = cIoU (cumulative). A malformed row of a raw release or of your
own folder stops the run with one line naming the file, the line and the key. The logic lives in `unires.evaluation` (harness, segmenters); the
adapters and the options each takes are listed once, in `unires.evaluation.registry`. An option the chosen adapter
does not take is refused (--instance_rule is sam3's, not clipseg's).

Named evaluate_model.py, not evaluate.py: a script's folder comes first on sys.path, so an examples/evaluate.py
would shadow the `evaluate` library for every script run from examples/.
"""

import argparse
import json
import sys
from pathlib import Path

from run_support.cli import HelpFormatter, argument_error, probability, refuse_missing_paths, root_cause
from run_support.sources import unfinished_engine_run
from unires.evaluation.registry import BASELINES, CALLABLE_PREFIX, MODEL_TYPES, adapter_of, foreign_options

# The adapters' options as this command line spells them (the registry names each adapter's keyword options).
ADAPTER_FLAGS = {"threshold": "--threshold", "instance_rule": "--instance_rule",
                 "score_threshold": "--score_threshold", "task": "--pipeline_task",
                 "trust_remote_code": "--trust_remote_code", "device": "--device"}


class ArgumentParser(argparse.ArgumentParser):
    """Argument errors in one line plus a one-line usage, as the path errors (the full usage is forty lines)."""

    def error(self, message):
        argument_error(self, message)


def adapter_options(args) -> dict:
    """The adapter options given on the command line, as the loader's keywords (unset ones left out)."""
    values = {"threshold": args.threshold, "instance_rule": args.instance_rule,
              "score_threshold": args.score_threshold, "task": args.pipeline_task,
              "trust_remote_code": args.trust_remote_code or None, "device": args.device}
    return {key: value for key, value in values.items() if value is not None}


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}: 0 would evaluate nothing")
    return value


# --dataset names that are not folders (unires.evaluation.dataset_identity's SHORTHANDS and ALIASES, spelled here so
# that the command line is checked before that package's imports; a test keeps the two equal).
DATASET_SHORTHANDS = ("refcoco_m", "refcoco", "refcoco+", "refcocog", "mres-synth", "refcoco-m", "refcocom",
                      "mres_synth", "instructpart", "groundingsuite", "reasonseg", "own_data", "gseval",
                      "groundingsuite-eval", "own-data")
# The split a benchmark reports, when --split is not given (every other dataset: validation).
DEFAULT_SPLITS = {"instructpart": ["test"], "groundingsuite": ["test"], "gseval": ["test"],
                  "groundingsuite-eval": ["test"], "reasonseg": ["val"]}


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add = parser.add_argument
    add("--model", default=None,
        help="checkpoint: Hub id or folder; not for callable: and the baselines (default%(default).0s: none)")
    add("--model_type", default="unires", help=f"adapter: {', '.join(MODEL_TYPES)} (callable: a module or "
                                                 "path/to/file.py, then :function)")
    add("--name", default=None, help="name of the model in tables (default%(default).0s: --model)")
    add("--dataset", default=None,
        help="refcoco_m, refcoco, refcoco+, refcocog, instructpart, groundingsuite (gseval), reasonseg, own_data (raw "
             "release in --data_dir), mres-synth (folder in --data_dir), a folder of your own data (metadata.jsonl or "
             "COCO annotations.json, built on the fly), or the folder / Hub id of a published MRES-schema dataset")
    add("--data_dir", default=None, help="the downloaded release (refcoco_m: CRIS layout; refcoco*: REFER layout; "
                                         "instructpart: the folder of test/ and train/; groundingsuite: the folder of "
                                         "GroundingSuite-Eval.jsonl and the unlabeled2017 images; reasonseg: the "
                                         "folder of train/ val/ test/; own_data: your folder)")
    add("--dataset_config", default=None,
        help="raw release: builder config (default%(default).0s: refcoco-unc, refcoco+-unc, refcocog-umd; instructpart: "
             "task, task_rewritten, part_of_object, all; groundingsuite: default (caption), label; reasonseg: default "
             "(first text), all_texts, short, long)")
    add("--revision", default=None, help="Hub dataset revision, recorded in the result (default%(default).0s: main)")
    add("--cache_dir", default=None, help="builder cache for raw releases (default%(default).0s: the datasets cache)")
    add("--split", nargs="+", default=None,
        help="split(s) (default%(default).0s: instructpart and groundingsuite test, reasonseg val, else validation; "
             "RefCOCO_m: val testA testB)")
    add("--max_images", type=positive_int, default=None, help="evaluate the first N images only (default%(default).0s: all)")
    add("--granularity", choices=["object", "part"], default=None, help="only this granularity (default%(default).0s: both)")
    add("--resolution", choices=["original", "input"], default="original",
        help="compare at each image's size (CRIS, the paper) or at the model's input size (LAVT)")
    add("--threshold", type=probability, default=None,
        help="probability > threshold is foreground (default%(default).0s: the adapter's: unires the config's 0.35, clipseg 0.35, "
             "sam3 0.5 on instance masks, promptable_concept the pipeline's own (SAM 3 0.5), callable 0.35)")
    add("--prec_comparison", choices=[">=", ">"], default=">=", help="Prec@X counts IoU >= X or > X (CRIS) "
                                                                    "")
    add("--empty_gt", choices=["one_if_both_empty", "zero"], default="one_if_both_empty",
        help="IoU of an empty prediction on an empty ground truth")
    add("--instance_rule", choices=["best", "union"], default=None,
        help="sam3, promptable_concept: one mask from its instances: the highest-scoring one, or the union above --score_threshold "
             "(default%(default).0s: best)")
    add("--score_threshold", type=probability, default=None,
        help="sam3, promptable_concept with --instance_rule union (default%(default).0s: 0.5)")
    add("--pipeline_task", default=None, help="pipeline: the task (default%(default).0s: referring-expression-segmentation for "
                                              "UniRES, else image-segmentation)")
    add("--baselines", nargs="*", default=[], choices=BASELINES,
        help="trivial baselines scored on the same rows (default%(default).0s: none)")
    add("--batch_size", type=positive_int, default=8, help="images per call")
    add("--device", default=None, help="cpu, cuda, ... (default%(default).0s: cuda when available; not for callable, "
                                       "which places its own model)")
    add("--trust_remote_code", action="store_true", help="unires, pipeline: load a checkpoint's own code")
    add("--no_progress", action="store_true", help="no progress bar")
    add("--output", default=None, help="write the result as JSON here, and the Markdown report beside it (.md)")
    add("--compare", nargs="+", default=None, metavar="RESULT_JSON",
        help="print one table across these result files and exit")
    args = parser.parse_args(argv)
    if args.compare is not None:
        refuse_missing_paths(parser, local=[("--compare", path, "result file") for path in args.compare])
        return args
    if not args.dataset:
        parser.error("--dataset is required (or --compare RESULT_JSON ...)")
    if args.split is None:
        args.split = list(DEFAULT_SPLITS.get(args.dataset.lower(), ["validation"]))
    refuse_foreign_options(parser, args)
    is_callable = args.model_type.startswith(CALLABLE_PREFIX)
    wrapper = args.model_type[len(CALLABLE_PREFIX):].rpartition(":")[0] if is_callable else ""
    refuse_missing_paths(
        parser,
        local_or_hub=[("--model", args.model if adapter_of(args.model_type).needs_model else None, "model"),
                      ("--dataset", None if args.dataset.lower() in DATASET_SHORTHANDS else args.dataset, "dataset")],
        local=[("--data_dir", args.data_dir, "folder"),
               ("--model_type", wrapper if wrapper.endswith(".py") else None, "wrapper file")],
    )
    return args


def refuse_foreign_options(parser, args) -> None:
    """An unknown --model_type, a missing or needless --model, and an option the chosen adapter does not take are
    argument errors naming them: a silently ignored --instance_rule would put a number under the wrong rule."""
    try:
        adapter = adapter_of(args.model_type)
        refusal = foreign_options(args.model_type, adapter_options(args), ADAPTER_FLAGS, "--model_type")
    except ValueError as error:
        parser.error(f"--model_type: {error}")
    if refusal:
        parser.error(refusal)
    if adapter.model_type == "callable" and not args.model_type[len(CALLABLE_PREFIX):]:
        parser.error("--model_type callable needs the function: callable:<module:fn> (e.g. "
                     "callable:my_wrapper.py:segment)")
    if adapter.needs_model and not args.model:
        parser.error(f"--model is required for --model_type {args.model_type}")
    if adapter.baseline and args.model:
        parser.error(f"--model: --model_type {args.model_type} is a baseline and loads no model")


def refuse_unfinished_run(args) -> None:
    """A data-engine folder whose run has not finished is refused (exit 1): it holds part of the data at best."""
    folder = args.data_dir if args.dataset.lower() in DATASET_SHORTHANDS else args.dataset
    if folder and unfinished_engine_run(folder):
        sys.exit(f"error: {folder} is a data-engine run that has not finished (it has no stats.json yet): its shards "
                 "may still be appearing, so a score would cover part of the data. Evaluate it once the run has "
                 "ended; rerun the engine's command to finish a stopped run.")


def read_results(paths) -> list:
    """The result files of --compare, each refused in one line when it is not JSON."""
    results = []
    for path in paths:
        try:
            results.append(json.loads(Path(path).read_text()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            sys.exit(f"error: --compare: {path} is not a readable result file ({error})")
    return results


def main(argv=None):
    args = parse_args(argv)
    if args.compare:
        results = read_results(args.compare)
    else:
        refuse_unfinished_run(args)
    # Heavy imports after the checks: --help, argument errors and missing files answer at once.
    from unires.evaluation.harness import compare_table, markdown_report, run_evaluation

    if args.compare:
        try:
            print(compare_table(results, sources=args.compare))
        except ValueError as error:  # not a result of this harness
            sys.exit(f"error: --compare: {error}")
        return results
    try:
        result = run_evaluation(
            args.model, args.model_type, args.dataset, args.split, data_dir=args.data_dir,
            dataset_config=args.dataset_config, revision=args.revision, cache_dir=args.cache_dir,
            resolution=args.resolution, threshold=args.threshold, prec_comparison=args.prec_comparison,
            empty_gt=args.empty_gt, batch_size=args.batch_size, max_images=args.max_images,
            granularity=args.granularity, label=args.name, progress=not args.no_progress, baselines=args.baselines,
            **adapter_options(args),
        )
    except (ValueError, OSError) as error:
        sys.exit(f"error: {error}")
    except Exception as error:  # a builder's error that datasets wrapped: its own message names the file and item
        cause = root_cause(error)
        if cause is error or not isinstance(cause, (ValueError, OSError)):
            raise
        sys.exit(f"error: {cause}")
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
