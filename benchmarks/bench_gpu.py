"""GPU training throughput of unet_resnet34 at 512: bf16 + channels_last against fp32.

For a machine with an NVIDIA GPU (written for an H100). Prints images/s for both settings, the
model FLOP utilisation (achieved FLOP/s over the GPU's dense peak for that precision; FLOPs per
image counted with torch.utils.flop_counter, backward taken as twice the forward), and whether
the data loader keeps up with the bf16 step rate on this machine's CPU cores. On a machine
without a GPU it says so and exits with status 0.

    python benchmarks/bench_gpu.py [--batch 32] [--steps 20] [--size 512]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch
from torch.utils.flop_counter import FlopCounterMode

from ptxseg.models import build_model

# Dense peak FLOP/s by GPU name (bf16 tensor cores; fp32 is TF32 tensor cores where allowed).
PEAKS = {
    "H100": {"bf16": 989e12, "fp32": 494e12},
    "H200": {"bf16": 989e12, "fp32": 494e12},
    "A100": {"bf16": 312e12, "fp32": 156e12},
}


def flops_per_image(size: int) -> float:
    model = build_model("unet_resnet34", 1)
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 1, size, size))
    return 3.0 * counter.get_total_flops()  # forward + backward (about twice the forward)


def throughput(batch: int, size: int, steps: int, bf16: bool) -> float:
    device = torch.device("cuda")
    model = build_model("unet_resnet34", 1).to(device).train()
    x = torch.randn(batch, 1, size, size, device=device)
    y = (torch.rand(batch, 1, size, size, device=device) > 0.9).float()
    if bf16:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), fused=True)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss_fn(logits.float(), y).backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU visible: this benchmark needs one (skipped)")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAKS.items() if k in name), None)
    per_image = flops_per_image(args.size)
    fp32 = throughput(args.batch, args.size, args.steps, bf16=False)
    bf16 = throughput(args.batch, args.size, args.steps, bf16=True)
    print(
        f"{name}: unet_resnet34 at {args.size}px, batch {args.batch}, {per_image / 1e9:.1f} GFLOP per image (train step)"
    )
    for label, rate, key in (("fp32 (TF32)", fp32, "fp32"), ("bf16 + channels_last", bf16, "bf16")):
        mfu = f"{rate * per_image / peak[key]:.1%}" if peak else "n/a (unknown GPU peak)"
        print(f"  {label:22s} {rate:8.1f} images/s   MFU {mfu}")
    print(f"RATIO bf16 + channels_last vs fp32: {bf16 / fp32:.2f}x")
    sys.path.insert(0, os.path.dirname(__file__))
    import tempfile
    from pathlib import Path

    from bench_loader import loader_rate, make_images  # the same loader measurement as on the CPU

    from ptxseg.data.datasets import RepackedImages
    from ptxseg.data.transforms import DEFAULT_AUGMENT, build_augment

    with tempfile.TemporaryDirectory() as tmp:
        images, masks = make_images(Path(tmp), 16, args.size)
        dataset = RepackedImages(
            [str(k) for k in range(16)],
            images,
            mean=0.5,
            std=0.25,
            masks=masks,
            augment=build_augment(DEFAULT_AUGMENT),
        )
        per_worker = loader_rate(dataset, 3.0)
    workers = os.cpu_count() or 1
    print(
        f"loader: {per_worker:.1f} images/s per worker x {workers} cores = {per_worker * workers:.0f} images/s; "
        f"{'keeps up with' if per_worker * workers >= bf16 else 'does NOT keep up with'} bf16 training "
        f"({bf16:.0f} images/s; needs {bf16 / per_worker:.0f} workers)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
