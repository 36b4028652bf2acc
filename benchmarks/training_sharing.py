#!/usr/bin/env python
"""Training referents/s with 8 referents per image encoding vs 1, paper-size model (target >= 3).

A training step is forward with labels (BCE + Dice), backward, gradient clipping and an AdamW step. Shared: each
image is encoded once and its K = 8 referents are decoded against that encoding (`image_indices`); unshared: one
referent per image. The ratio is referents/s shared over referents/s unshared.

CUDA default: 480x480, 64 referents per step on both sides (8 images x 8 referents vs 64 images x 1), bf16 autocast.
CPU default, scaled down to fit the time budget: 224x224, 8 referents per step on both sides (1 image x 8 vs
8 images x 1), fp32 (a ViT-B/16 training step at 480x480 costs tens of seconds per image there). Both sides take
the same number of referents per step, so the optimizer's per-step cost weighs the same on both.

    python benchmarks/training_sharing.py [--image_size 480 --images_shared 8 --images_unshared 64]
"""

import torch

from modeling_unires import UniRESModel

from common import base_parser, device_info, emit, median, paired_ratio, paired_timings, paper_config, \
    parse_args, profile_summary, rounded


def make_step(model, optimizer, images, referents_per_image, size, device, autocast_dtype):
    config = model.config
    n = images * referents_per_image
    inputs = dict(
        pixel_values=torch.randn(images, 3, size, size, device=device),
        input_ids=torch.randint(0, config.text_config.vocab_size, (n, config.text_max_length), device=device),
        image_indices=torch.arange(images, device=device).repeat_interleave(referents_per_image),
        labels=(torch.rand(n, size, size, device=device) > 0.8).float(),
    )
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])

    def step():
        with torch.autocast(torch.device(device).type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main():
    parser = base_parser(__doc__)
    parser.add_argument("--image_size", type=int, default=None, help="default 480 on CUDA, 224 on CPU")
    parser.add_argument("--referents_per_image", type=int, default=8)
    parser.add_argument("--images_shared", type=int, default=None, help="default 8 on CUDA, 1 on CPU")
    parser.add_argument("--images_unshared", type=int, default=None, help="default 64 on CUDA, 8 on CPU")
    args = parse_args(parser)
    cuda = args.device.startswith("cuda")
    size = args.image_size or (64 if args.quick else (480 if cuda else 224))
    k = args.referents_per_image
    images_shared = args.images_shared or (8 if cuda else 1)
    images_unshared = args.images_unshared or (64 if cuda else 8)
    repeats = args.repeats or (1 if args.quick else (5 if cuda else 2))
    autocast_dtype = torch.bfloat16 if cuda else None

    torch.manual_seed(0)
    model = UniRESModel(paper_config(size)).to(args.device).train()
    # A learning rate of 0 keeps both sides on the same weights; AdamW still does all of its work.
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=5e-4, fused=True)
    shared = make_step(model, optimizer, images_shared, k, size, args.device, autocast_dtype)
    unshared = make_step(model, optimizer, images_unshared, 1, size, args.device, autocast_dtype)
    timings = paired_timings({"shared": shared, "unshared": unshared}, repeats, args.device)
    if args.profile:
        profile_summary(shared, args.device, f"training step, {images_shared} image(s) x {k} referents at {size}px")
        profile_summary(unshared, args.device, f"training step, {images_unshared} images x 1 referent at {size}px")

    referents_shared, referents_unshared = images_shared * k, images_unshared
    per_pair = [(referents_shared / s) / (referents_unshared / u) for s, u in zip(timings["shared"], timings["unshared"])]
    medians = {name: median(values) for name, values in timings.items()}
    scaled = None if cuda and size == 480 and referents_shared == referents_unshared == 64 else (
        f"CPU budget: {size}x{size}, {referents_shared} referents per shared step ({images_shared} image(s) x {k}) "
        f"and {referents_unshared} per unshared step ({images_unshared} images x 1), fp32; the paper setting is "
        "480x480 with 64 referents per step on both sides")
    emit("training_referents_per_s_k8_over_k1", median(per_pair), ">= 3",
         description=f"training referents/s, {k} referents per image encoding / 1 referent per image encoding",
         referents_per_s={"shared": referents_shared / medians["shared"],
                          "unshared": referents_unshared / medians["unshared"]},
         step_time_ratio=paired_ratio(timings["shared"], timings["unshared"]),
         timings_s=rounded(timings), median_s={n: round(v, 5) for n, v in medians.items()},
         setup=dict(image_size=size, referents_per_image=k, images_shared=images_shared,
                    images_unshared=images_unshared, repeats=repeats,
                    precision="bf16 autocast" if autocast_dtype else "fp32",
                    step="forward + BCE/Dice loss + backward + clip_grad_norm + AdamW", scaled_down=scaled),
         device=device_info(args.device))


if __name__ == "__main__":
    main()
