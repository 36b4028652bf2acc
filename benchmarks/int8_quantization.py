#!/usr/bin/env python
"""int8 UniRES on the CPU (`from_pretrained(..., quantization_config=TorchAoConfig(...))`) against fp32.

Three figures (issue 23):
- mask IoU of the int8 model's predictions against the fp32 model's, mean over the expressions of MRES-Synth
  `validation` (target >= 0.98), with the demo model (`--model`, default `outputs/demo/model`, its data beside it);
- the change of mIoU against the ground truth, int8 minus fp32, in points, objects and parts together (target: at
  most 0.5 points either way, i.e. |change| <= 0.5);
- the speed-up of int8 over fp32 on the paper-size model (random weights) at 480x480, one forward with 8
  expressions on one image (target >= 1.5), timed alternately as every figure here.

`--scheme` names a choice of `modeling_unires.quantization_unires.quantization_config`: `int8` (default) is
dynamic int8 activations x per-row int8 weights on PyTorch's prepacked CPU kernel (`quantized::linear_dynamic`,
oneDNN), applied through `TorchAoConfig(Int8PrepackedLinearConfig())`; `int8-torchao` is torchao's
`Int8DynamicActivationInt8WeightConfig` (the "int8" before: 0.96x in eager mode, 1.53x compiled); `int8-weights`
quantizes the weights only. With `--compile`, both models of the speed figure run under `torch.compile` (torchao's
kernels are fused by inductor; compiling takes minutes on a small CPU). Without a demo model (or with `--quick`) a
random tiny model and a few generated images stand in: the accuracy figures then mean nothing.

    python benchmarks/int8_quantization.py --threads 1 [--model outputs/demo/model --data outputs/demo/data]
"""

import os
import tempfile

import numpy as np
import torch
from common import (
    base_parser,
    device_info,
    emit,
    median,
    paired_ratio,
    paired_timings,
    paper_config,
    parse_args,
    profile_summary,
    repo_path,
    rounded,
)


def load(folder, scheme):
    from transformers import AutoModel, AutoProcessor

    import modeling_unires  # noqa: F401  (registers UniRES)
    from modeling_unires.quantization_unires import quantization_config

    model = AutoModel.from_pretrained(folder, quantization_config=quantization_config(scheme)).eval()
    return model, AutoProcessor.from_pretrained(folder)


def stand_in_model_and_data(folder):
    """A random tiny model and a few MRES-Synth images, for --quick or when no demo model exists."""
    from modeling_unires.testing_utils import tiny_model_and_processor
    from unires.demo import build_demo_data

    model, processor = tiny_model_and_processor(seed=0)
    model.save_pretrained(os.path.join(folder, "model"))
    processor.save_pretrained(os.path.join(folder, "model"))
    build_demo_data(os.path.join(folder, "data"), num_train=2, num_eval=3, seed=0)
    return os.path.join(folder, "model"), os.path.join(folder, "data")


class Recorder:
    """The evaluator's UniRES predictor, keeping every predicted mask (in order) for the int8-vs-fp32 IoU."""

    def __init__(self, model, processor, threshold):
        from unires.evaluation.segmenters import UniRESSegmenter

        self.predict = UniRESSegmenter(model, processor, threshold=threshold)
        self.masks = []

    def __call__(self, rows, texts, size_of):
        predictions = self.predict(rows, texts, size_of)
        self.masks.extend(np.asarray(mask, dtype=bool) for row in predictions for mask in row)
        return predictions


def accuracy(model_folder, data_folder, scheme, max_images):
    from dataset_scripts.load import load_mres_dataset
    from unires.evaluation.evaluator import evaluate_predictor
    from unires.evaluation.metrics import MRESMetricOptions

    rows = load_mres_dataset([data_folder], "validation")
    results = {}
    for name in ("none", scheme):
        model, processor = load(model_folder, name)
        options = MRESMetricOptions(threshold=model.config.mask_threshold)
        recorder = Recorder(model, processor, options.threshold)
        with torch.inference_mode():
            metrics = evaluate_predictor(recorder, rows, options=options, input_size=model.config.image_size,
                                         max_images=max_images, progress=False).compute()
        results[name] = (metrics, recorder.masks)
    (fp32_metrics, fp32_masks), (int8_metrics, int8_masks) = results["none"], results[scheme]
    ious = []
    for a, b in zip(fp32_masks, int8_masks):
        union = np.logical_or(a, b).sum()
        ious.append(1.0 if union == 0 else np.logical_and(a, b).sum() / union)
    return np.asarray(ious), fp32_metrics, int8_metrics


def overall_miou(metrics):
    """mIoU over every expression, objects and parts together (the metrics give it per granularity)."""
    groups = [metrics[g] for g in ("object", "part") if g in metrics and metrics[g].get("count")]
    return sum(g["mIoU"] * g["count"] for g in groups) / sum(g["count"] for g in groups)


def main():
    parser = base_parser(__doc__)
    parser.add_argument("--model", default="outputs/demo/model")
    parser.add_argument("--data", default=None, help="MRES-Synth folder (default: the model folder's ../data)")
    parser.add_argument("--scheme", default="int8", choices=("int8", "int8-torchao", "int8-weights"))
    parser.add_argument("--max_images", type=int, default=None, help="validation images (default: all)")
    parser.add_argument("--expressions", type=int, default=8)
    parser.add_argument("--compile", action="store_true", help="time both models under torch.compile")
    parser.add_argument("--skip_accuracy", action="store_true")
    args = parse_args(parser)
    if args.device != "cpu":
        raise SystemExit("int8 here is the CPU option: run with --device cpu")
    repeats = args.repeats or (1 if args.quick else 5)
    info = device_info(args.device)
    scratch = tempfile.mkdtemp(prefix="bench-int8-")

    # ---------------------------------------------------------------- accuracy (demo model, MRES-Synth validation)
    if not args.skip_accuracy:
        model_folder = repo_path(args.model)
        data_folder = args.data or os.path.join(os.path.dirname(model_folder), "data")
        stand_in = args.quick or not (os.path.isdir(model_folder) and os.path.isdir(data_folder))
        if stand_in:
            model_folder, data_folder = stand_in_model_and_data(scratch)
        ious, fp32_metrics, int8_metrics = accuracy(model_folder, data_folder, args.scheme, args.max_images)
        which = "random tiny model (stand-in: the figure means nothing)" if stand_in else model_folder
        setup = {"model": which, "data": data_folder, "split": "validation", "expressions": len(ious),
                 "scheme": args.scheme, "threshold": fp32_metrics.get("options", {}).get("threshold", "config")}
        emit("int8_mask_iou_vs_fp32", float(ious.mean()), ">= 0.98",
             description=f"int8 ({args.scheme}) vs fp32 predictions, mean mask IoU, MRES-Synth validation",
             min_iou=float(ious.min()), p05_iou=float(np.percentile(ious, 5)), setup=setup, device=info)
        change = overall_miou(int8_metrics) - overall_miou(fp32_metrics)
        emit("int8_miou_change_points", abs(change), "<= 0.5",
             description="|mIoU(int8) - mIoU(fp32)| in points, MRES-Synth validation (objects and parts)",
             signed_change=change, miou_fp32=overall_miou(fp32_metrics), miou_int8=overall_miou(int8_metrics),
             fp32={g: fp32_metrics[g]["mIoU"] for g in ("object", "part") if g in fp32_metrics},
             int8={g: int8_metrics[g]["mIoU"] for g in ("object", "part") if g in int8_metrics},
             setup=setup, device=info)

    # ---------------------------------------------------------------- speed (paper-size model, 480x480)
    from modeling_unires import UniRESModel

    size = 64 if args.quick else 480
    folder = os.path.join(scratch, f"paper{size}")
    torch.manual_seed(0)
    UniRESModel(paper_config(size)).save_pretrained(folder)
    from modeling_unires.quantization_unires import quantization_config

    fp32 = UniRESModel.from_pretrained(folder).eval()
    int8 = UniRESModel.from_pretrained(folder, quantization_config=quantization_config(args.scheme)).eval()
    if args.compile:
        fp32, int8 = torch.compile(fp32), torch.compile(int8)
    k = args.expressions
    pixels = torch.randn(1, 3, size, size)
    ids = torch.randint(0, fp32.config.text_config.vocab_size, (k, fp32.config.text_max_length))
    mask = torch.ones_like(ids)
    indices = torch.zeros(k, dtype=torch.long)

    def run(model):
        return lambda: model(pixel_values=pixels, input_ids=ids, attention_mask=mask, image_indices=indices)

    with torch.inference_mode():
        # Compiled models recompile once more on their second call: two warm-up calls then.
        timings = paired_timings({"fp32": run(fp32), "int8": run(int8)}, repeats, args.device,
                                 warmup=2 if args.compile else 1)
        if args.profile:
            profile_summary(run(fp32), args.device, f"fp32, paper size @{size}, {k} expressions")
            profile_summary(run(int8), args.device, f"int8 ({args.scheme}), paper size @{size}, {k} expressions")
    emit("int8_speedup_paper480_8_expressions", paired_ratio(timings["fp32"], timings["int8"]), ">= 1.5",
         description=f"forward of 1 image + {k} expressions, paper-size model @{size}: fp32 s / int8 s "
                     f"({args.scheme}{', compiled' if args.compile else ''})",
         timings_s=rounded(timings), median_s={n: round(median(v), 5) for n, v in timings.items()},
         setup={"image_size": size, "expressions": k, "scheme": args.scheme, "compiled": args.compile,
                "repeats": repeats,
                "model": "paper size (ViT-B/16, 64+8 group tokens, 3+3 decoder layers), random weights"},
         device=info)


if __name__ == "__main__":
    main()
