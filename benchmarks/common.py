"""What every benchmark script shares: the paper-size config, paired timing, device facts and the JSON line.

Timing rule: the two sides of a ratio are timed in one process, alternately (A B A B ...), after one untimed
warm-up call of each, and the ratio is the median of the per-pair ratios, so that a load that drifts during the
run (the CPU figures come from a machine shared with other jobs) cancels out of it. Raw seconds are printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable, Mapping

import torch

# The tiny-model builders live with the tests (tests/tiny_models), not in the wheel: the `--quick` runs use them. The
# repository root goes on the path with tests/, so that our packages win over tests/' folders of the same names.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[1:1] = [path for path in (_ROOT, os.path.join(_ROOT, "tests")) if path not in sys.path]

# The paper's model (ViT-B/16 towers, 64 + 8 group tokens, 3 + 3 decoder layers; the rest are UniRESConfig
# defaults). `image_size` is set per figure.
PAPER_TEXT_CONFIG = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                         max_position_embeddings=77)


def paper_config(image_size: int):
    from modeling_unires import UniRESConfig

    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  image_size=image_size, patch_size=16)
    return UniRESConfig(vision_config=vision, text_config=dict(PAPER_TEXT_CONFIG), num_low_group_tokens=64,
                        num_high_group_tokens=8, decoder_stage1_layers=3, decoder_stage2_layers=3)


def for_inference(model, device):
    """`model` in eval mode on `device`, with the inference-only layers where the pipeline and the app use them (a
    CPU): the figures are those of what users run."""
    from modeling_unires import enable_fast_inference

    model = model.to(device).eval()
    return enable_fast_inference(model) if torch.device(device).type == "cpu" else model


def repo_path(path: str) -> str:
    """`path` as the README's commands mean it: relative to the repository root, whatever the working directory
    (`make bench` runs each script from benchmarks/)."""
    return path if os.path.isabs(path) else os.path.abspath(os.path.join(os.path.dirname(__file__), "..", path))


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# "wall": time.perf_counter. "cpu": time.process_time, the CPU seconds of this process (all its threads), which
# other jobs competing for the cores do not inflate; `parse_args` picks it on a CPU run with one torch thread.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = "wall"


def clock_name() -> str:
    return _clock


def now(device) -> float:
    """A reading of the benchmark clock, after the device has finished its queued work."""
    synchronize(device)
    return CLOCKS[_clock]()


def time_call(fn: Callable[[], object], device) -> float:
    start = now(device)
    fn()
    return now(device) - start


def paired_timings(fns: Mapping[str, Callable[[], object]], repeats: int, device, warmup: int = 1) -> dict:
    """Seconds of each call, `repeats` times, alternating between the calls; warm-up calls are not timed."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronize(device)
    timings = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            timings[name].append(time_call(fn, device))
    return timings


def median(values) -> float:
    return float(statistics.median(values))


def paired_ratio(numerators, denominators) -> float:
    """Median over repeats of numerator[i] / denominator[i] (values timed next to each other)."""
    return median([a / b for a, b in zip(numerators, denominators)])


def meets(value: float, target: str) -> bool:
    """`target` is "<= x" or ">= x"."""
    operator, bound = target.split()
    return value <= float(bound) if operator == "<=" else value >= float(bound)


def emit(figure: str, value: float, target: str | None, **fields) -> dict:
    """Print one figure as a JSON line (the runner collects these) and return it."""
    record = {"figure": figure, "value": round(float(value), 4), "target": target,
              "met": None if target is None else meets(value, target), "clock": _clock}
    record.update(fields)
    print(json.dumps(record, default=_json_default), flush=True)
    return record


def _json_default(value):
    if isinstance(value, float):
        return round(value, 6)
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def rounded(timings: Mapping[str, list]) -> dict:
    return {name: [round(t, 5) for t in values] for name, values in timings.items()}


def device_info(device) -> dict:
    """Where a figure came from: enough to tell two runs' machines apart."""
    import transformers

    info = {
        "device": str(device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_name(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=default_device(), help="default: cuda when present, else cpu")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per side (default: per script)")
    parser.add_argument("--quick", action="store_true",
                        help="smallest sizes, 1 repeat: checks that the script runs, the numbers mean nothing")
    parser.add_argument("--profile", action="store_true",
                        help="also print a torch.profiler (or cProfile) summary of the measured calls to stderr")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's). On a CPU shared with other jobs, 1 avoids the "
                             "OpenMP spin-waits that make small operations several times slower")
    parser.add_argument("--clock", choices=("auto", "wall", "cpu"), default="auto",
                        help="what the timings count: wall-clock seconds, or this process's CPU seconds (immune to "
                             "other jobs' load; meaningful with one thread). auto: cpu on a CPU run with --threads 1, "
                             "else wall")
    return parser


def parse_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, then apply `--threads` (before any model is built) and `--clock`."""
    global _clock
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    on_cpu = torch.device(args.device).type == "cpu"
    if args.clock == "auto":
        _clock = "cpu" if on_cpu and torch.get_num_threads() == 1 else "wall"
    else:
        if args.clock == "cpu" and not on_cpu:
            raise SystemExit("--clock cpu counts this process's CPU seconds: it cannot time a CUDA device")
        _clock = args.clock
    return args


def profile_summary(fn: Callable[[], object], device, title: str, row_limit: int = 15) -> None:
    """torch.profiler table of one call of `fn`, sorted by self time, on stderr."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.device(device).type == "cuda" else [])
    with profile(activities=activities, record_shapes=False) as prof:
        fn()
        synchronize(device)
    sort = "self_device_time_total" if torch.device(device).type == "cuda" else "self_cpu_time_total"
    print(f"\n=== profile: {title} ===", file=sys.stderr)
    print(prof.key_averages().table(sort_by=sort, row_limit=row_limit), file=sys.stderr, flush=True)
