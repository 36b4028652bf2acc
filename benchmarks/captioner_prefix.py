"""Dense captioner: captions per second for many boxes on one image vs one box (one shared image encoding).

    python benchmarks/captioner_prefix.py                      # tiny Qwen3-VL, CPU (and CUDA when present)
    python benchmarks/captioner_prefix.py --device cuda --model Qwen/Qwen3-VL-2B-Instruct --dtype bfloat16

Prints one JSON line per figure: the raw timings of each repeat (warm-up excluded; the three runs
interleaved, so that a busy machine slows them alike), their median,
captions per second, and the ratio of the many-box time to the one-box time (target on CPU with the
tiny model: 32 boxes take at most 4x the time of 1). The same boxes captioned without prefix sharing
(one full prompt, one image encoding per box) are timed as well, for the speed-up.
Every caption is forced to exactly ``--max_new_tokens`` tokens so that the runs do equal work.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from PIL import Image

from captioner import DenseCaptioner, load_captioner
import common  # noqa: F401  (puts tests/ on sys.path for tiny_models)
from tiny_models.captioner import build_tiny_model, build_tiny_processor


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(runs: dict, repeats: int, device: str) -> dict[str, list[float]]:
    """Seconds per repeat of each ``name -> (captioner, image, boxes)``, the runs interleaved so that a
    busy machine slows all of them alike; one warm-up each (kernels, caches) is not counted."""
    for captioner, image, boxes in runs.values():
        captioner.caption_boxes(image, boxes, "object")
    seconds = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (captioner, image, boxes) in runs.items():
            _synchronize(device)
            start = time.perf_counter()
            captioner.caption_boxes(image, boxes, "object")
            _synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def _boxes(count: int, width: int, height: int, seed: int = 0) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(count):
        w, h = rng.uniform(0.1, 0.6) * width, rng.uniform(0.1, 0.6) * height
        boxes.append([float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h)), float(w), float(h)])
    return boxes


def run(device: str, args) -> None:
    if args.model:
        model, processor = load_captioner(args.model, torch_dtype=args.dtype)
    else:  # the tiny Qwen3-VL, its image processor sized so that the image takes --image_tokens tokens
        processor = build_tiny_processor()
        pixels = args.image_tokens * 32 * 32  # one token per 32x32 pixels (16-pixel patches, 2x2 merge)
        processor.image_processor.size = {"shortest_edge": pixels, "longest_edge": pixels}
        model = build_tiny_model(processor)
    model.to(device)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (args.image_height, args.image_width, 3), dtype=np.uint8))
    boxes = _boxes(args.boxes, args.image_width, args.image_height)
    forced = {"min_new_tokens": args.max_new_tokens}
    shared = DenseCaptioner(model, processor, max_new_tokens=args.max_new_tokens, generation_kwargs=forced, progress_threshold=10**9)
    unshared = DenseCaptioner(model, processor, max_new_tokens=args.max_new_tokens, generation_kwargs=forced, progress_threshold=10**9,
                              share_image_prefix=False)
    prefix = processor(text=[shared.prefix_text], images=[image], return_tensors="pt", **shared.image_kwargs)
    image_tokens = int((prefix["input_ids"] == getattr(processor, "image_token_id", -1)).sum())
    common = {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu", "model": args.model or "tiny Qwen3-VL",
              "image_tokens": image_tokens, "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
              "torch_threads": torch.get_num_threads()}
    runs = {"1 box": (shared, image, boxes[:1]), f"{args.boxes} boxes": (shared, image, boxes),
            f"{args.boxes} boxes, no prefix sharing": (unshared, image, boxes)}
    timings = _time(runs, args.repeats, device)
    medians = {}
    for name, seconds in timings.items():
        count = len(runs[name][2])
        medians[name] = statistics.median(seconds)
        print(json.dumps({"figure": name, **common, "boxes": count, "seconds": [round(s, 5) for s in seconds],
                          "median_s": round(medians[name], 5), "captions_per_s": round(count / medians[name], 2)}), flush=True)
    many = f"{args.boxes} boxes"
    print(json.dumps({"figure": f"time of {args.boxes} boxes / time of 1 box", **common,
                      "ratio": round(medians[many] / medians["1 box"], 3), "target": "<= 4 (CPU, tiny model)"}), flush=True)
    print(json.dumps({"figure": f"speed-up of prefix sharing at {args.boxes} boxes", **common,
                      "ratio": round(medians[f"{many}, no prefix sharing"] / medians[many], 3)}), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu, cuda, or both when omitted (cuda only when present).")
    parser.add_argument("--model", default=None, help="A captioner (base or adapter); default: the tiny Qwen3-VL built from a config.")
    parser.add_argument("--dtype", default=None, help="Weights dtype for --model (e.g. bfloat16).")
    parser.add_argument("--boxes", type=int, default=32, help="Boxes on the one image.")
    parser.add_argument("--image_tokens", type=int, default=256, help="Tokens of the image (tiny model only).")
    parser.add_argument("--image_width", type=int, default=640)
    parser.add_argument("--image_height", type=int, default=480)
    parser.add_argument("--max_new_tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7, help="Timed repeats after one warm-up; the median is reported.")
    args = parser.parse_args(argv)
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        torch.manual_seed(0)
        run(device, args)


if __name__ == "__main__":
    main()
