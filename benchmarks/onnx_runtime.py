#!/usr/bin/env python
"""UniRES exported to ONNX (`unires.export`) and run by ONNX Runtime, against eager PyTorch, side by side in one run.

Eager PyTorch is the model as the pipeline runs it on a CPU (`enable_fast_inference`); ONNX Runtime is
`ORTModelForReferringSegmentation` on the CPU execution provider (fp32 graphs, default graph optimisations). For the
demo model (`unires.demo.DEMO_CONFIG`, 96x96) and the paper-size model at 480x480 (random weights), at 1 thread and at
all cores (`--threads N`: only N), each pair timed alternately (benchmarks/common.py):

- `onnx_encoder_speedup_*`: the image encoder, eager seconds / ONNX Runtime seconds (one image);
- `onnx_decoder_speedup_*_k{1,8,16}`: decoding K expressions against one encoded image, eager / ONNX Runtime
  (per expression the same ratio; target >= 1.5);
- `onnx_pipeline_16_over_1_*`: the referring-expression-segmentation pipeline on one 640x480 image, 16 expressions
  / 1, with the ONNX Runtime model (target <= 2); the eager pipeline's ratio beside it. The pipeline runs the ONNX
  Runtime model with `fast_inference=False` and the fast post-processing set by hand (what the pipeline would do if
  it skipped `enable_fast_inference` for a model that is not a `UniRESModel`);
- `onnx_images_per_s_unires352_over_clipseg352_*`: UniRES@352 over transformers' CLIPSegForImageSegmentation (rd64,
  ViT-B/16) at 352, both exported with `torch.onnx.export(dynamo=True)` and run by ONNX Runtime, one image and one
  expression per call (target >= 0.9); the eager ratio beside it;
- `onnx_int8_*`: ONNX Runtime dynamic int8 (per-channel weights; one image and one expression per call) against the
  fp32 graphs: decoding speed-up for 16 expressions and mask agreement (IoU at the model's threshold and at each
  expression's median probability: a random model's probabilities sit near 0.5, where every mask is full at 0.35).

Exports are cached under `--export_dir` (keyed by the model, its size and the export code), so a second run times
only. `--profile` prints ONNX Runtime's per-operator time of the decoder (16 expressions) on stderr.

    python benchmarks/onnx_runtime.py [--quick] [--threads 1] [--profile]
"""

import hashlib
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import common
from common import base_parser, device_info, emit, for_inference, median, paired_ratio, paired_timings, \
    paper_config, parse_args, repo_path, rounded

warnings.filterwarnings("ignore")

EXPRESSIONS = [
    "the red car on the left", "left wheel of the blue bus", "the window of the small house", "the big green tree",
    "the right ear of the brown dog", "the yellow door of the car", "the roof of the house", "the front wheel",
    "the small blue bus", "the green car", "the left window", "the dog on the right", "the tail of the dog",
    "the chimney of the house", "the headlight of the red car", "the big yellow house",
]
EXPORT_CODE = ("modeling_unires/modeling_unires.py", "unires/export/onnx_export.py",
               "unires/export/onnx_quantization.py")


def tokenizer():
    from modeling_unires import build_clip_tokenizer
    from tiny_models.unires import TINY_SENTENCES

    return build_clip_tokenizer(TINY_SENTENCES + EXPRESSIONS, vocab_size=1200, model_max_length=17)


def unires_model(kind: str, quick: bool):
    """`(model, processor, description)`: random weights, the tokenizer above (speed does not depend on either)."""
    from modeling_unires import UniRESConfig, UniRESImageProcessor, UniRESModel, UniRESProcessor
    from tiny_models.unires import tiny_config
    from unires.demo import DEMO_CONFIG

    tok = tokenizer()
    if quick:
        config = tiny_config(tok, image_size={"demo": 32, "paper480": 48, "paper352": 32}[kind],
                             pixel_decoder_channels=4 if kind == "demo" else 0)
        description = "tiny (--quick)"
    elif kind == "demo":
        config, description = UniRESConfig(**DEMO_CONFIG).fit_to_tokenizer(tok), "DEMO_CONFIG, random weights"
    else:
        size = 480 if kind == "paper480" else 352
        config = paper_config(size).fit_to_tokenizer(tok)
        description = f"paper size @{size} (ViT-B/16, 64+8 group tokens, 3+3 decoder layers), random weights"
    torch.manual_seed(0)
    model = UniRESModel(config).eval()
    processor = UniRESProcessor(UniRESImageProcessor(size=config.image_size, mask_threshold=config.mask_threshold),
                                tok, text_max_length=config.text_max_length)
    return model, processor, description


def cache_key(name: str, config_json: str) -> str:
    digest = hashlib.sha256(config_json.encode())
    for path in EXPORT_CODE:
        digest.update(Path(repo_path(path)).read_bytes())
    return f"{name}-{digest.hexdigest()[:12]}"


def exported_unires(kind: str, model, processor, export_dir: Path, quick: bool, opset: int = 18) -> tuple:
    """The export folder of `model` (made once per model and export code) and the seconds it took (0: cached)."""
    from unires.export.onnx_export import export_onnx

    folder = export_dir / cache_key(f"{kind}{'-quick' if quick else ''}-opset{opset}", model.config.to_json_string())
    if (folder / "onnx_config.json").is_file() and json.loads((folder / "onnx_config.json").read_text())["quantized"]:
        return folder, 0.0
    start = time.perf_counter()
    export_onnx(model, processor, folder, quantize="int8", opset=opset)
    return folder, time.perf_counter() - start


def clipseg(size: int, quick: bool):
    if quick:
        from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

        small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2)
        config = CLIPSegConfig(vision_config=dict(small, image_size=size, patch_size=8), text_config=small,
                               projection_dim=32, reduce_dim=16, extract_layers=[1, 2], decoder_num_attention_heads=2,
                               decoder_intermediate_size=32)
        torch.manual_seed(0)
        return CLIPSegForImageSegmentation(config).eval(), "tiny CLIPSeg (--quick)"
    from vs_clipseg import clipseg_model

    torch.manual_seed(0)
    return clipseg_model(size).eval(), "CLIPSegForImageSegmentation, reduce_dim 64, refined decoder, ViT-B/16, random"


class ClipSegLogits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values, input_ids, attention_mask):
        return self.model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask).logits


def exported_clipseg(model, size: int, export_dir: Path, quick: bool) -> tuple:
    """CLIPSeg at one (image, expression) pair per call (transformers' CLIPSeg squeezes a batch of one, so the batch
    is fixed), by the same exporter."""
    path = export_dir / (cache_key(f"clipseg{size}" + ("-quick" if quick else ""), model.config.to_json_string())
                         + ".onnx")
    if path.is_file():
        return path, 0.0
    start = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    example = clipseg_inputs(model, size)
    with torch.no_grad():
        program = torch.onnx.export(ClipSegLogits(model), tuple(example.values()), dynamo=True, verbose=False,
                                    input_names=list(example), output_names=["logits"])
    program.save(str(path))
    return path, time.perf_counter() - start


def clipseg_inputs(model, size: int) -> dict:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.text_config.vocab_size, (1, 17), generator=generator)
    return {"pixel_values": torch.randn(1, 3, size, size, generator=generator), "input_ids": ids,
            "attention_mask": torch.ones_like(ids)}


def session_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


def ort_model(folder, threads: int, quantized: bool = False):
    from unires.export import ORTModelForReferringSegmentation

    return ORTModelForReferringSegmentation.from_pretrained(folder, session_options=session_options(threads),
                                                            quantized=quantized)


def set_clock(threads: int, choice: str) -> None:
    """benchmarks/common.py's clock rule, per thread count: CPU seconds at 1 thread (under `--clock auto`)."""
    common._clock = choice if choice != "auto" else ("cpu" if threads == 1 else "wall")


def text_inputs(processor, count: int) -> dict:
    inputs = processor(text=[EXPRESSIONS[i % len(EXPRESSIONS)] for i in range(count)])
    return {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"],
            "image_indices": torch.zeros(count, dtype=torch.long)}


def photo(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((640, 480), Image.BILINEAR)


def pipelines(model, processor, ort):
    """The eager pipeline (as a user gets it on a CPU) and the same pipeline over the ONNX Runtime model."""
    from transformers import pipeline

    import modeling_unires
    from modeling_unires.image_processing_unires_fast import use_fast_image_processor

    eager = pipeline(modeling_unires.PIPELINE_TASK, model=model, processor=processor)
    onnx = pipeline(modeling_unires.PIPELINE_TASK, model=ort, processor=processor, fast_inference=False)
    onnx.processor = use_fast_image_processor(onnx.processor)
    return eager, onnx


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    union = (a | b).sum(1)
    return np.where(union > 0, (a & b).sum(1) / np.maximum(union, 1), 1.0)


def int8_agreement(fp32, int8, processor, threshold: float) -> dict:
    """Mask agreement of the int8 graphs with the fp32 ones on 4 images x 8 expressions."""
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)).resize((200 + 40 * i, 160))
              for i in range(4)]
    inputs = processor(images=images, text=[EXPRESSIONS[2 * i : 2 * i + 8] for i in range(4)])
    a = fp32(**inputs).logits.sigmoid().numpy()
    b = int8(**inputs).logits.sigmoid().numpy()
    median_probability = np.median(a.reshape(len(a), -1), axis=1)[:, None, None]
    at_threshold, at_median = iou(a > threshold, b > threshold), iou(a > median_probability, b > median_probability)
    return {"mean_iou_at_threshold": float(at_threshold.mean()), "min_iou_at_threshold": float(at_threshold.min()),
            "mean_iou_at_median": float(at_median.mean()), "min_iou_at_median": float(at_median.min()),
            "max_abs_probability_difference": float(np.abs(a - b).max()), "threshold": threshold,
            "expressions": int(len(a))}


def ort_profile(folder, threads: int, feeds: dict, title: str) -> None:
    """ONNX Runtime's own profile of the query decoder: seconds per operator type, on stderr."""
    import sys

    import onnxruntime as ort

    import tempfile

    options = session_options(threads)
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(prefix="ort-profile-"), "query_decoder")
    session = ort.InferenceSession(str(Path(folder) / "query_decoder.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    for _ in range(3):
        session.run(None, feeds)
    trace_path = Path(session.end_profiling())
    trace = json.loads(trace_path.read_text())
    trace_path.unlink()
    per_op = {}
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            per_op[op] = per_op.get(op, 0) + event["dur"] / 3e6
    total = sum(per_op.values())
    print(f"\n=== ONNX Runtime profile: {title} ({total * 1e3:.1f} ms per call in kernels) ===", file=sys.stderr)
    for op, seconds in sorted(per_op.items(), key=lambda item: -item[1])[:15]:
        print(f"{op:>28s} {seconds * 1e3:9.2f} ms {100 * seconds / total:5.1f}%", file=sys.stderr)


def measure_unires(kind, thread_counts, args, export_dir, info_base):
    model, processor, description = unires_model(kind, args.quick)
    folder, export_seconds = exported_unires(kind, model, processor, export_dir, args.quick, args.opset)
    eager = for_inference(model, "cpu")
    size = model.config.image_size
    pixels = processor(images=photo())["pixel_values"]
    repeats = args.repeats or (1 if args.quick else 3)
    tag = "demo" if kind == "demo" else "paper480"
    setup = dict(model=description, image_size=size, export_dir=str(folder), export_seconds=round(export_seconds, 1),
                 runtime=f"onnxruntime CPUExecutionProvider, fp32 graphs (opset {args.opset}), ORT_ENABLE_ALL",
                 repeats=repeats,
                 eager="PyTorch with enable_fast_inference (what the pipeline runs on a CPU)")
    if model.config.pixel_decoder_channels:
        setup["pixel_branch"] = ("eager decoding recomputes the pixel branch's convolutions from pixel_values (its "
                                 "API); ONNX Runtime reads the encoder's pixel_features")
    for threads in thread_counts:
        torch.set_num_threads(threads)
        set_clock(threads, args.clock)
        ort = ort_model(folder, threads)
        int8 = ort_model(folder, threads, quantized=True)
        info = {**info_base, "torch_threads": threads, "ort_intra_op_threads": threads}
        suffix = f"{tag}_{threads}t"
        with torch.inference_mode():
            embeddings = eager.get_image_embeddings(pixels)
            encoded = ort.encode_images(pixels)
            calls = {"eager_encoder": lambda: eager.get_image_embeddings(pixels),
                     "ort_encoder": lambda: ort.encode_images(pixels)}
            for k in (1, 8, 16):
                text = text_inputs(processor, k)
                calls[f"eager_decode_{k}"] = (lambda text=text: eager(image_embeddings=embeddings,
                                                                      pixel_values=pixels, **text))
                calls[f"ort_decode_{k}"] = (lambda text=text: ort(**{**encoded, **text}))
            text16 = text_inputs(processor, 16)
            encoded_int8 = int8.encode_images(pixels)
            calls["ort_int8_decode_16"] = lambda: int8(**{**encoded_int8, **text16})
            timings = paired_timings(calls, repeats, "cpu")
            eager_pipe, ort_pipe = pipelines(model, processor, ort)
            image = photo(1)
            pipe_calls = {f"{side}_pipeline_{k}": (lambda pipe=pipe, k=k: pipe(image, EXPRESSIONS[:k]))
                          for side, pipe in (("eager", eager_pipe), ("ort", ort_pipe)) for k in (1, 16)}
            pipe_timings = paired_timings(pipe_calls, repeats, "cpu")
            if args.profile:
                feeds = {name: value.numpy() if hasattr(value, "numpy") else value
                         for name, value in {**encoded, **text16}.items()}
                ort_profile(folder, threads, feeds, f"query decoder, {kind}, 16 expressions, {threads} thread(s)")
        medians = {name: round(median(values), 5) for name, values in {**timings, **pipe_timings}.items()}
        emit(f"onnx_encoder_speedup_{suffix}", paired_ratio(timings["eager_encoder"], timings["ort_encoder"]), None,
             description=f"image encoder, eager seconds / ONNX Runtime seconds, {kind}, {threads} thread(s)",
             timings_s=rounded({n: timings[n] for n in ("eager_encoder", "ort_encoder")}), median_s=medians,
             setup=setup, device=info)
        for k in (1, 8, 16):
            emit(f"onnx_decoder_speedup_{suffix}_k{k}",
                 paired_ratio(timings[f"eager_decode_{k}"], timings[f"ort_decode_{k}"]), ">= 1.5",
                 description=f"query decoder, {k} expression(s) on one encoded image, eager / ONNX Runtime, {kind}, "
                             f"{threads} thread(s)",
                 per_expression_ms={"eager": 1e3 * medians[f"eager_decode_{k}"] / k,
                                    "ort": 1e3 * medians[f"ort_decode_{k}"] / k},
                 timings_s=rounded({n: timings[n] for n in (f"eager_decode_{k}", f"ort_decode_{k}")}),
                 setup=setup, device=info)
        emit(f"onnx_pipeline_16_over_1_{suffix}",
             paired_ratio(pipe_timings["ort_pipeline_16"], pipe_timings["ort_pipeline_1"]), "<= 2",
             description=f"pipeline on one 640x480 image, 16 expressions / 1, ONNX Runtime model, {kind}, "
                         f"{threads} thread(s)",
             eager_ratio=paired_ratio(pipe_timings["eager_pipeline_16"], pipe_timings["eager_pipeline_1"]),
             ort_over_eager={k: paired_ratio(pipe_timings[f"ort_pipeline_{k}"], pipe_timings[f"eager_pipeline_{k}"])
                             for k in (1, 16)},
             timings_s=rounded(pipe_timings), median_s=medians, setup=setup, device=info)
        emit(f"onnx_int8_decoder_speedup_{suffix}_k16",
             paired_ratio(timings["ort_decode_16"], timings["ort_int8_decode_16"]), None,
             description=f"query decoder, 16 expressions on one encoded image, ONNX Runtime fp32 (one call) / int8 "
                         f"(one call per expression), {kind}, {threads} thread(s)",
             timings_s=rounded({n: timings[n] for n in ("ort_decode_16", "ort_int8_decode_16")}), setup=setup,
             device=info)
    agreement = int8_agreement(ort, int8, processor, model.config.mask_threshold)
    emit(f"onnx_int8_mask_iou_{tag}", agreement["mean_iou_at_median"], None,
         description=f"ONNX Runtime int8 vs fp32 masks, mean IoU at each expression's median fp32 probability, {kind}",
         agreement=agreement, setup=setup, device=info_base)


def measure_vs_clipseg(thread_counts, args, export_dir, info_base):
    size = 32 if args.quick else 352
    model, processor, description = unires_model("paper352", args.quick)
    folder, export_seconds = exported_unires("paper352", model, processor, export_dir, args.quick, args.opset)
    rival, rival_description = clipseg(size, args.quick)
    rival_size = rival.config.vision_config.image_size
    rival_path, rival_seconds = exported_clipseg(rival, rival_size, export_dir, args.quick)
    eager = for_inference(model, "cpu")
    repeats = args.repeats or (1 if args.quick else 3)
    pixels = torch.randn(1, 3, model.config.image_size, model.config.image_size)
    text = text_inputs(processor, 1)
    rival_inputs = clipseg_inputs(rival, rival_size)
    rival_feeds = {name: value.numpy() for name, value in rival_inputs.items()}
    import onnxruntime

    for threads in thread_counts:
        torch.set_num_threads(threads)
        set_clock(threads, args.clock)
        ort = ort_model(folder, threads)
        rival_session = onnxruntime.InferenceSession(str(rival_path), session_options(threads),
                                                     providers=["CPUExecutionProvider"])
        with torch.inference_mode():
            check = float(np.abs(rival_session.run(None, rival_feeds)[0].reshape(-1)
                                 - rival(**rival_inputs).logits.numpy().reshape(-1)).max())
            calls = {"ort_unires": lambda: ort(pixel_values=pixels, **text),
                     "ort_clipseg": lambda: rival_session.run(None, rival_feeds),
                     "eager_unires": lambda: eager(pixel_values=pixels, **text),
                     "eager_clipseg": lambda: rival(**rival_inputs)}
            timings = paired_timings(calls, repeats, "cpu")
        info = {**info_base, "torch_threads": threads, "ort_intra_op_threads": threads}
        emit(f"onnx_images_per_s_unires352_over_clipseg352_{threads}t",
             paired_ratio(timings["ort_clipseg"], timings["ort_unires"]), ">= 0.9",
             description=f"images/s, 1 expression per image, both on ONNX Runtime: UniRES@{size} / CLIPSeg@{size}, "
                         f"{threads} thread(s)",
             eager_ratio=paired_ratio(timings["eager_clipseg"], timings["eager_unires"]),
             ort_speedup={"unires": paired_ratio(timings["eager_unires"], timings["ort_unires"]),
                          "clipseg": paired_ratio(timings["eager_clipseg"], timings["ort_clipseg"])},
             timings_s=rounded(timings), median_s={n: round(median(v), 5) for n, v in timings.items()},
             setup=dict(unires=description, clipseg=rival_description, image_size=size, repeats=repeats,
                        export_seconds={"unires": round(export_seconds, 1), "clipseg": round(rival_seconds, 1)},
                        clipseg_onnx_max_abs_logit_difference=check,
                        exporter="torch.onnx.export(dynamo=True) for both"),
             device=info)


def main():
    parser = base_parser(__doc__)
    parser.add_argument("--export_dir", default="outputs/benchmarks/onnx_exports",
                        help="where the exports are cached (relative to the repository root)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset of the UniRES exports (23: fused "
                        "Attention, about 10-15%% faster decoding on a CPU; needs a recent ONNX Runtime)")
    parser.add_argument("--models", nargs="+", choices=("demo", "paper480", "clipseg352"),
                        default=("demo", "paper480", "clipseg352"))
    args = parse_args(parser)
    if not args.device.startswith("cpu"):
        print("onnx_runtime.py times the CPU execution provider: running on the CPU")
    all_cores = os.cpu_count() or 1
    thread_counts = [args.threads] if args.threads else sorted({1, all_cores})
    if args.quick and not args.threads:
        thread_counts = [1]
    export_dir = Path(repo_path(args.export_dir))
    import onnxruntime

    info_base = {**device_info("cpu"), "onnxruntime": onnxruntime.__version__}
    for kind in ("demo", "paper480"):
        if kind in args.models:
            measure_unires(kind, thread_counts, args, export_dir, info_base)
    if "clipseg352" in args.models:
        measure_vs_clipseg(thread_counts, args, export_dir, info_base)


if __name__ == "__main__":
    main()
