"""GPU training throughput: bf16 + channels_last against fp32 (TF32), with the EfficientNet preset.

For a machine with an NVIDIA GPU. For each architecture and size: images/s of the training step as
the training loop runs it (``gpu_memory.training_step``: the recipe's optimiser, loss, drop path,
EMA update), fp32 with TF32 tensor cores against bf16 autocast + channels_last, and the model FLOP
utilisation (achieved FLOP/s over the GPU's dense peak at that precision; FLOPs per image counted
with torch.utils.flop_counter, backward taken as twice the forward). ``--preset efficientnet`` (the
default) trains under the EfficientNet paper's process (``recipe: {preset: efficientnet}``: RMSProp,
drop path 0.2 where the encoder has stochastic depth, BatchNorm momentum, EMA of the weights);
``--preset none`` under the segment stage's defaults. Then whether the data loader keeps up: real
``DataLoader`` workers decoding, augmenting and normalising repacked PNGs at each size, images/s for
each worker count against the bf16 step rate. On a machine without a GPU it says so and exits 0.

    python benchmarks/bench_gpu.py [--sizes 512 1024] [--archs unet_resnet34 unet_efficientnet_b4]
        [--batch 16 8] [--steps 15] [--preset efficientnet] [--workers 1 4 8 16] [--json out.json]
        [--cudnn-benchmark]

Training jobs run with deterministic algorithms and without cuDNN's autotuner (``train.run``);
``--cudnn-benchmark`` lets cuDNN time its kernels per shape first (slower to start: about 40 s
per architecture and size on an H200), the rate a tuned run would reach.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import torch
from bench_loader import make_images  # the loader benchmark's repacked phantoms
from gpu_memory import training_step
from torch.utils.data import DataLoader, RandomSampler
from torch.utils.flop_counter import FlopCounterMode

from ptxseg.config import validate
from ptxseg.data.datasets import RepackedImages
from ptxseg.data.transforms import DEFAULT_AUGMENT, build_augment
from ptxseg.recipes import recipe_for
from ptxseg.train.settings import FitSettings, Runtime

# Dense peak FLOP/s by GPU name (the vendors' datasheets, SXM parts; bf16 tensor cores, fp32 as
# TF32 tensor cores, which the fp32 runs here allow).
PEAKS = {
    "H100": {"bf16": 989e12, "fp32": 494e12},
    "H200": {"bf16": 989e12, "fp32": 494e12},
    "A100": {"bf16": 312e12, "fp32": 156e12},
}


def settings_for(arch: str, batch: int, preset: str, bf16: bool) -> FitSettings:
    """The segment recipe of ``arch`` as a config with ``preset`` would train it."""
    recipe = {"batch_size": batch, **({"preset": preset} if preset != "none" else {})}
    config = validate(
        {
            "data": {"source": "demo"},
            "segment": {"archs": {arch: {"weights": "none"}}, "recipe": recipe},
        }
    )
    runtime = Runtime(device="cuda", amp=bf16, channels_last=bf16)
    return FitSettings.from_config(recipe_for(config, "segment", arch), config["seed"], runtime)


def flops_per_image(arch: str, settings: FitSettings, size: int) -> float:
    model, _ = training_step(arch, {}, settings, size, 1, "segmenter")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 1, size, size, device="cuda"))
    return 3.0 * counter.get_total_flops()  # forward + backward (about twice the forward)


def throughput(arch: str, settings: FitSettings, size: int, steps: int) -> float:
    _, step = training_step(arch, {}, settings, size, 1, "segmenter")
    for _ in range(5):  # cudnn's autotuning and the optimiser's state
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return settings.batch_size * steps / (time.perf_counter() - start)


def loader_rates(size: int, batch: int, workers: list[int], seconds: float = 4.0) -> dict:
    """Images/s through a DataLoader with each worker count (training's dataset and augment)."""
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        images, masks = make_images(Path(tmp), 32, size)
        dataset = RepackedImages(
            [str(k) for k in range(32)],
            images,
            mean=0.5,
            std=0.25,
            masks=masks,
            augment=build_augment(DEFAULT_AUGMENT),
        )
        for count in workers:
            # Drawn with replacement, so that a pass holds enough batches to keep every worker
            # busy (a pass over the 32 images alone is 32 / batch batches: 4 at 1024 px).
            draws = RandomSampler(dataset, replacement=True, num_samples=batch * max(count, 1) * 16)
            loader = DataLoader(
                dataset,
                batch_size=batch,
                sampler=draws,
                num_workers=count,
                pin_memory=True,
                persistent_workers=count > 0,
                prefetch_factor=4 if count > 0 else None,
            )
            seen, start, first = 0, None, True
            while True:
                for item in loader:
                    if first:  # the workers' start-up is not the steady rate
                        first, start = False, time.perf_counter()
                        continue
                    seen += len(item["image"])
                    if time.perf_counter() - start >= seconds:
                        break
                if start is not None and time.perf_counter() - start >= seconds:
                    break
            rates[count] = seen / (time.perf_counter() - start)
            del loader
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 8], help="one per size")
    parser.add_argument("--archs", nargs="+", default=["unet_resnet34", "unet_efficientnet_b4"])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--preset", default="efficientnet", choices=["efficientnet", "none"])
    cpus = os.cpu_count() or 1
    parser.add_argument(
        "--workers", type=int, nargs="+", default=sorted({1, 4, max(1, cpus // 2), cpus})
    )
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--cudnn-benchmark", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU visible: this benchmark needs one (skipped)")
        return 0
    if len(args.batch) != len(args.sizes):
        parser.error("--batch takes one batch size per --sizes entry")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    if not args.cudnn_benchmark:
        torch.use_deterministic_algorithms(True, warn_only=True)  # as training jobs run
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAKS.items() if k in name), None)
    print(
        f"{name}, {cpus} CPU cores; preset {args.preset}; torch {torch.__version__}; "
        f"cudnn.benchmark {args.cudnn_benchmark}"
    )
    results = {
        "gpu": name,
        "cpus": cpus,
        "preset": args.preset,
        "cudnn_benchmark": args.cudnn_benchmark,
        "runs": [],
        "loader": [],
    }
    best_bf16 = {}
    for size, batch in zip(args.sizes, args.batch, strict=True):
        for arch in args.archs:
            fp32_settings = settings_for(arch, batch, args.preset, bf16=False)
            bf16_settings = settings_for(arch, batch, args.preset, bf16=True)
            per_image = flops_per_image(arch, fp32_settings, size)
            rates = {
                "fp32": throughput(arch, fp32_settings, size, args.steps),
                "bf16": throughput(arch, bf16_settings, size, args.steps),
            }
            torch.cuda.empty_cache()
            best_bf16[size] = max(best_bf16.get(size, 0.0), rates["bf16"])
            print(
                f"{arch} at {size}px, batch {batch}, {per_image / 1e9:.1f} GFLOP per image "
                f"(train step); drop path {bf16_settings.drop_path_rate}, "
                f"EMA {bf16_settings.ema_decay}, optimiser {bf16_settings.optimiser}"
            )
            for label, key in (("fp32 (TF32)", "fp32"), ("bf16 + channels_last", "bf16")):
                mfu = rates[key] * per_image / peak[key] if peak else float("nan")
                print(f"  {label:22s} {rates[key]:8.1f} images/s   MFU {mfu:.1%}")
                results["runs"].append(
                    {
                        "arch": arch,
                        "size": size,
                        "batch": batch,
                        "precision": key,
                        "images_per_s": rates[key],
                        "gflop_per_image": per_image / 1e9,
                        "mfu": mfu,
                        "drop_path": bf16_settings.drop_path_rate,
                        "ema": bf16_settings.ema_decay,
                    }
                )
            print(f"  RATIO bf16 + channels_last vs fp32: {rates['bf16'] / rates['fp32']:.2f}x")
    for size, batch in zip(args.sizes, args.batch, strict=True):
        rates = loader_rates(size, batch, args.workers)
        need = best_bf16[size]
        enough = [count for count, rate in rates.items() if rate >= need]
        for count, rate in rates.items():
            results["loader"].append({"size": size, "workers": count, "images_per_s": rate})
        print(
            f"loader at {size}px: "
            + ", ".join(f"{count} workers {rate:.0f}/s" for count, rate in rates.items())
            + f"; the fastest bf16 step takes {need:.0f} images/s: "
            + (
                f"keeps up from {min(enough)} workers"
                if enough
                else f"does NOT keep up with {max(rates)} workers"
            )
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    return 0 if np.isfinite([r["images_per_s"] for r in results["runs"]]).all() else 1


if __name__ == "__main__":
    sys.exit(main())
