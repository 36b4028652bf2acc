#!/usr/bin/env python
"""bf16 vs fp32, SDPA vs eager, gradient checkpointing: agreement, speed and memory ratios.

Builds a UniRES of the paper's size class (ViT-B/16 vision tower at 480×480, CLIP text
tower, 64 + 8 group tokens; random weights: agreement and speed do not depend on training)
and prints, measured in one run on one device:
- how far SDPA logits are from eager ones (fp32), and bf16 autocast from fp32;
- how often the thresholded masks agree (IoU of bf16 vs fp32 masks);
- training-step throughput of bf16 autocast over fp32;
- peak memory of a training step with gradient checkpointing over without.

    python benchmarks/precision_memory.py --device cuda --batch_images 8 --referents 4
"""

import argparse
import time

import torch

from modeling_unires import UniRESModel

from common import paper_config


def batch(config, images, referents, device):
    size, length = config.image_size, config.text_max_length
    n = images * referents
    return dict(
        pixel_values=torch.randn(images, 3, size, size, device=device),
        input_ids=torch.randint(0, config.text_config.vocab_size, (n, length), device=device),
        attention_mask=torch.ones(n, length, dtype=torch.long, device=device),
        image_indices=torch.arange(images, device=device).repeat_interleave(referents),
        labels=(torch.rand(n, size, size, device=device) > 0.9).float(),
    )


def train_step(model, inputs, dtype):
    with torch.autocast(device_type=inputs["pixel_values"].device.type, dtype=dtype, enabled=dtype != torch.float32):
        loss = model(**inputs).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return loss


def seconds_per_step(model, inputs, dtype, repeats):
    train_step(model, inputs, dtype)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        loss = train_step(model, inputs, dtype)
    torch.cuda.synchronize()
    assert torch.isfinite(loss), f"non-finite loss {loss} in {dtype}"
    return (time.perf_counter() - start) / repeats


def peak_memory(model, inputs):
    torch.cuda.reset_peak_memory_stats()
    train_step(model, inputs, torch.bfloat16)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch_images", type=int, default=8)
    parser.add_argument("--referents", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not args.device.startswith("cuda") or not torch.cuda.is_available():
        raise SystemExit("this benchmark measures a CUDA device; none is available here")
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    config = paper_config(480)
    model = UniRESModel(config).to(args.device)
    inputs = batch(config, args.batch_images, args.referents, args.device)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
          f"{args.batch_images} images x {args.referents} expressions at {config.image_size}px")

    eval_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    model.eval()
    with torch.no_grad():
        model.config._attn_implementation = "eager"
        for module in model.modules():
            if hasattr(module, "config") and module is not model:
                module.config._attn_implementation = "eager"
        eager = model(**eval_inputs).logits
        for module in model.modules():
            if hasattr(module, "config"):
                module.config._attn_implementation = "sdpa"
        sdpa = model(**eval_inputs).logits
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = model(**eval_inputs).logits.float()
    mask32, mask16 = sdpa.sigmoid() > 0.35, bf16.sigmoid() > 0.35
    iou = ((mask32 & mask16).sum((1, 2)) / (mask32 | mask16).sum((1, 2)).clamp(min=1)).float()
    print(f"max |sdpa - eager| logits (fp32): {(sdpa - eager).abs().max().item():.2e}")
    print(f"max |bf16 - fp32| logits: {(bf16 - sdpa).abs().max().item():.3f} "
          f"(logit std {sdpa.std().item():.3f}); mask IoU bf16 vs fp32: mean {iou.mean().item():.4f}, "
          f"min {iou.min().item():.4f}")

    model.train()
    fp32 = seconds_per_step(model, inputs, torch.float32, args.repeats)
    bf16_time = seconds_per_step(model, inputs, torch.bfloat16, args.repeats)
    print(f"train step fp32 {fp32 * 1e3:.1f} ms, bf16 {bf16_time * 1e3:.1f} ms: bf16 speed-up {fp32 / bf16_time:.2f}x")

    plain = peak_memory(model, inputs)
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    checkpointed = peak_memory(model, inputs)
    checkpointed_time = seconds_per_step(model, inputs, torch.bfloat16, args.repeats)
    print(f"peak memory bf16 step: {plain / 2**30:.2f} GiB, with gradient checkpointing {checkpointed / 2**30:.2f} GiB "
          f"(ratio {checkpointed / plain:.2f}); step time ratio {checkpointed_time / bf16_time:.2f}x")


if __name__ == "__main__":
    main()
