"""Does data loading keep up with training? Loader images/s per worker against train-step images/s.

For each architecture: one DataLoader worker's rate of decode + augment + normalise of repacked
512px PNGs (the training pipeline's own dataset and default augmentation), and the model's
training-step rate (forward + backward + optimiser) on this machine's device. The ratio printed
is (loader rate per worker) / (step rate): the number of workers needed is about 1 / ratio.

    python benchmarks/bench_loader.py [--size 512] [--batch 8] [--archs unet_resnet34 ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
import torch

from ptxseg.data.datasets import RepackedImages
from ptxseg.data.phantom import render_chest
from ptxseg.data.repack import Normalisation, normalise_histogram, resize_image, resize_mask
from ptxseg.data.transforms import DEFAULT_AUGMENT, build_augment
from ptxseg.io.png import write_png
from ptxseg.models import build_model, get_spec, model_names


def make_images(folder: Path, count: int, size: int) -> tuple[list[Path], list[Path]]:
    images, masks = [], []
    for k in range(count):
        chest = render_chest(np.random.default_rng(k), 1024, pneumothorax_regions=k % 2)
        mask = (
            np.logical_or.reduce(chest.pneumothorax)
            if chest.pneumothorax
            else np.zeros((1024, 1024), bool)
        )
        images.append(folder / f"{k}.png")
        masks.append(folder / f"{k}_mask.png")
        write_png(
            images[-1], resize_image(normalise_histogram(chest.image, Normalisation("clahe")), size)
        )
        write_png(masks[-1], resize_mask(mask, size))
    return images, masks


def loader_rate(dataset: RepackedImages, seconds: float = 5.0) -> float:
    """Items per second from one worker (this process), over repeated passes."""
    dataset.reseed(0)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        dataset[count % len(dataset)]
        count += 1
    return count / (time.perf_counter() - start)


def step_rate(arch: str, size: int, batch: int, device: torch.device, steps: int = 3) -> float:
    model = build_model(arch, 1).to(device).train()
    optimiser = torch.optim.AdamW(model.parameters())
    x = torch.randn(batch, 1, size, size, device=device)
    y = (
        torch.rand(batch, 1, size, size, device=device)
        if get_spec(arch).kind == "segmenter"
        else torch.rand(batch, 1, device=device)
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    times = []
    for _ in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss_fn(model(x), y).backward()
        optimiser.step()
        optimiser.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return batch / min(times[1:])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--archs", nargs="+", default=model_names())
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        images, masks = make_images(Path(tmp), 24, args.size)
        augment = build_augment(DEFAULT_AUGMENT)
        segmentation = RepackedImages(
            [str(k) for k in range(24)], images, mean=0.5, std=0.25, masks=masks, augment=augment
        )
        classification = RepackedImages(
            [str(k) for k in range(24)],
            images,
            mean=0.5,
            std=0.25,
            labels=np.zeros(24),
            augment=augment,
        )
        rates = {"segmenter": loader_rate(segmentation), "classifier": loader_rate(classification)}
    print(
        f"loader, one worker, {args.size}px decode + augment + normalise: "
        f"{rates['segmenter']:.1f} images/s with masks, {rates['classifier']:.1f} without"
    )
    print(f"train steps on {device} ({torch.get_num_threads()} threads), batch {args.batch}:")
    for arch in args.archs:
        kind = get_spec(arch).kind
        step = step_rate(arch, args.size, args.batch, device)
        ratio = rates[kind] / step
        print(
            f"  {arch:22s} {step:7.1f} images/s  RATIO loader per worker / step: {ratio:6.2f}  "
            f"(workers needed: {max(1, int(np.ceil(1 / ratio)))})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
