#!/usr/bin/env python
"""Post-processing per mask: `post_process_masks` of 16 expressions on one 640x480 image (target <= 0.5 ms per mask).

Masks and scores (as the pipeline and the app ask for them), from logits at the demo model's input size (96x96) and
the paper's (480x480). Timed alternately with two references, per mask:
- `copy`: one copy of the full-size float map of every mask (`torch.clone`), the "cost of a copy" the issue names;
- `probability_path`: the path post-processing had before (resize, sigmoid over every pixel, `> threshold`, scores
  from the probabilities), whose masks the new one reproduces bit for bit (tests/modeling_unires/test_post_processing.py).

    python benchmarks/post_processing.py --threads 1 [--profile]
"""

import torch
import torch.nn.functional as F

from modeling_unires import UniRESImageProcessorFast

from common import base_parser, device_info, emit, median, paired_ratio, paired_timings, parse_args, \
    profile_summary, rounded


def probability_path(logits, size, threshold):
    """The former `post_process_masks` inner loop, for one size (masks and scores)."""
    probabilities = F.interpolate(logits[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    probabilities = probabilities.sigmoid_()
    binary = probabilities > threshold
    area = binary.view(torch.uint8).sum(dim=(1, 2), dtype=torch.int32)
    inside = F.threshold(probabilities, threshold, 0.0).sum(dim=(1, 2)) / area.clamp(min=1)
    scores = torch.where(area > 0, inside, probabilities.amax(dim=(1, 2))).tolist()
    return list(binary.numpy()), scores


def main():
    parser = base_parser(__doc__)
    parser.add_argument("--expressions", type=int, default=16)
    args = parse_args(parser)
    repeats = args.repeats or (1 if args.quick else 15)
    n = args.expressions
    size = (48, 64) if args.quick else (480, 640)
    processor = UniRESImageProcessorFast(size=96)  # what the pipeline and the app use on a CPU
    info = device_info(args.device)
    for logit_size in (96, 480):
        generator = torch.Generator().manual_seed(0)
        # Smooth logits with masks of a few percent to a third of the image, as a trained model gives.
        coarse = torch.randn(n, 1, 6, 8, generator=generator) * 4 - 3
        logits = F.interpolate(coarse, size=(logit_size, logit_size), mode="bicubic", align_corners=False)[:, 0]
        logits = logits.to(args.device)
        full = torch.empty(n, *size, device=args.device)

        calls = {
            "post_process_masks": lambda: processor.post_process_masks(logits, [size], return_scores=True),
            "copy": lambda: full.clone(),
            "probability_path": lambda: probability_path(logits, size, processor.mask_threshold),
        }
        timings = paired_timings(calls, repeats, args.device)
        if args.profile:
            profile_summary(calls["post_process_masks"], args.device, f"post_process_masks, {n} masks, {logit_size}²")
        per_mask_ms = {name: [1000 * t / n for t in values] for name, values in timings.items()}
        emit(f"post_processing_ms_per_mask_logits{logit_size}", median(per_mask_ms["post_process_masks"]), "<= 0.5",
             description=f"post_process_masks, ms per {size[1]}x{size[0]} mask with its score ({n} masks, logits "
                         f"{logit_size}x{logit_size})",
             over_copy=paired_ratio(timings["post_process_masks"], timings["copy"]),
             speedup_over_probability_path=paired_ratio(timings["probability_path"], timings["post_process_masks"]),
             median_ms_per_mask={k: round(median(v), 4) for k, v in per_mask_ms.items()},
             timings_s=rounded(timings),
             setup=dict(masks=n, mask_size=size, logit_size=logit_size, repeats=repeats, scores=True,
                        fraction_inside=float((logits > -0.619).float().mean())),
             device=info)


if __name__ == "__main__":
    main()
