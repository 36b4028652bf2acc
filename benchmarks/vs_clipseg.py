#!/usr/bin/env python
"""UniRES against transformers' CLIPSegForImageSegmentation (reduce_dim 64, ViT-B/16), both with random weights.

Two figures, timed in one alternating loop (UniRES@352, CLIPSeg@352, UniRES@480 with K expressions, repeat):
- images/s, one expression per image, UniRES@352 over CLIPSeg@352 (target >= 0.9);
- expressions/s with K = 8 expressions per image, UniRES@480 encoding each image once (`get_image_embeddings`,
  then one decoder pass over the K expressions) over CLIPSeg@352, which runs one full forward per
  (image, expression) pair (target >= 3).

CLIPSeg is the "rd64-refined" design (`use_complex_transposed_convolution=True`) with a ViT-B/16 vision tower at
352x352 and CLIP's text tower. On CPU the batch is 1 image (CLIPSeg: 1 pair per forward; expressions/s = pairs per
forward / seconds); on CUDA 32 images (CLIPSeg: 32 pairs per forward) in bf16.

    python benchmarks/vs_clipseg.py [--profile]
"""

import torch
from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

from modeling_unires import UniRESModel

from common import base_parser, for_inference, device_info, emit, median, paired_ratio, paired_timings, paper_config, \
    parse_args, profile_summary, rounded


def clipseg_model(image_size: int):
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  image_size=image_size, patch_size=16)
    config = CLIPSegConfig(vision_config=vision, reduce_dim=64, use_complex_transposed_convolution=True)
    return CLIPSegForImageSegmentation(config)


def main():
    parser = base_parser(__doc__)
    parser.add_argument("--batch", type=int, default=None, help="images per call; default 32 on CUDA, 1 on CPU")
    parser.add_argument("--expressions_per_image", type=int, default=8)
    parser.add_argument("--dtype", default=None, help="default bfloat16 on CUDA, float32 on CPU")
    args = parse_args(parser)
    cuda = args.device.startswith("cuda")
    batch = args.batch or (32 if cuda else 1)
    k = args.expressions_per_image
    repeats = args.repeats or (1 if args.quick else (10 if cuda else 3))
    dtype = getattr(torch, args.dtype or ("bfloat16" if cuda else "float32"))
    small, large = (64, 96) if args.quick else (352, 480)
    device = args.device

    torch.manual_seed(0)
    unires_small = for_inference(UniRESModel(paper_config(small)).to(dtype=dtype), device)
    unires_large = for_inference(UniRESModel(paper_config(large)).to(dtype=dtype), device)
    clipseg = clipseg_model(small).to(device, dtype).eval()
    length = unires_small.config.text_max_length
    vocab = unires_small.config.text_config.vocab_size

    def text(n):
        ids = torch.randint(0, vocab, (n, length), device=device)
        return ids, torch.ones_like(ids)

    pixels_small = torch.randn(batch, 3, small, small, device=device, dtype=dtype)
    pixels_large = torch.randn(batch, 3, large, large, device=device, dtype=dtype)
    ids_one, mask_one = text(batch)
    ids_k, mask_k = text(batch * k)
    indices_k = torch.arange(batch, device=device).repeat_interleave(k)

    def unires_352():
        unires_small(pixel_values=pixels_small, input_ids=ids_one, attention_mask=mask_one)

    def clipseg_352():  # one (image, expression) pair per row: CLIPSeg encodes the image for every expression
        clipseg(pixel_values=pixels_small, input_ids=ids_one, attention_mask=mask_one)

    def unires_480_k():
        embeddings = unires_large.get_image_embeddings(pixels_large)
        unires_large(image_embeddings=embeddings, input_ids=ids_k, attention_mask=mask_k, image_indices=indices_k)

    calls = {"unires_352": unires_352, "clipseg_352": clipseg_352, f"unires_480_{k}_expressions": unires_480_k}
    with torch.inference_mode():
        timings = paired_timings(calls, repeats, device)
        if args.profile:
            profile_summary(unires_352, device, f"UniRES@{small}, {batch} image(s) x 1 expression")
            profile_summary(clipseg_352, device, f"CLIPSeg@{small}, {batch} pair(s)")
            profile_summary(unires_480_k, device, f"UniRES@{large}, {batch} image(s) x {k} expressions")
    info = device_info(device)
    medians = {name: round(median(values), 5) for name, values in timings.items()}
    scaled = None if cuda else f"CPU: batch {batch} image(s) instead of 32, fp32"
    common_setup = dict(dtype=str(dtype), repeats=repeats, images=batch, scaled_down=scaled,
                        clipseg="CLIPSegForImageSegmentation, reduce_dim 64, refined decoder, ViT-B/16, random weights",
                        unires="paper size (ViT-B/16, 64+8 group tokens, 3+3 decoder layers), random weights")

    # images/s ratio = CLIPSeg seconds / UniRES seconds for the same images.
    emit("images_per_s_unires352_over_clipseg352",
         paired_ratio(timings["clipseg_352"], timings["unires_352"]), ">= 0.9",
         description=f"images/s, 1 expression per image: UniRES@{small} / CLIPSeg@{small}",
         images_per_s={"unires": batch / medians["unires_352"], "clipseg": batch / medians["clipseg_352"]},
         timings_s=rounded({n: timings[n] for n in ("unires_352", "clipseg_352")}), median_s=medians,
         setup=dict(image_size=small, **common_setup), device=info)

    # expressions/s: UniRES answers batch*k expressions per call, CLIPSeg batch (one forward per expression).
    name = f"unires_480_{k}_expressions"
    per_pair = [(batch * k / u) / (batch / c) for u, c in zip(timings[name], timings["clipseg_352"])]
    emit("expressions_per_s_unires480_k8_over_clipseg352", median(per_pair), ">= 3",
         description=f"expressions/s, {k} expressions per image encoded once: UniRES@{large} / CLIPSeg@{small} "
                     "(one forward per expression)",
         expressions_per_s={"unires": batch * k / medians[name], "clipseg": batch / medians["clipseg_352"]},
         timings_s=rounded({n: timings[n] for n in (name, "clipseg_352")}), median_s=medians,
         setup=dict(unires_image_size=large, clipseg_image_size=small, expressions_per_image=k, **common_setup),
         device=info)


if __name__ == "__main__":
    main()
