"""Peak GPU memory of one training step of every model a config trains, at its sizes and batches.

For each pretraining, classifier and segmenter job of the config (both rounds, every progressive
stage, the training crop where the stage has one), as the training loop runs it: the model built
with the recipe's regularisation (drop path, dropout, head), bf16 autocast and channels_last as
``train`` sets them, the recipe's optimiser, one forward + backward + optimiser step at the
stage's batch, the EMA update where the recipe keeps one; then one evaluation batch (twice the
training batch, whole images at the stage's size, no gradients). Prints a table and writes it as
CSV, with the GPU's memory beside it, so a config's batches are known to fit before a cluster run.
Untrained weights: the memory does not depend on them. Needs a CUDA GPU.

    python benchmarks/gpu_memory.py [--config configs/full.yaml] [--csv out.csv]
"""

from __future__ import annotations

import argparse
import csv
import gc
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch
import yaml

from ptxseg.config import validate
from ptxseg.data.nih import pretraining_findings
from ptxseg.models import build_model, get_spec, set_batchnorm_momentum
from ptxseg.models.outputs import as_float
from ptxseg.recipes import recipe_for, segmenter_names, segmenter_recipe
from ptxseg.runtime.precision import autocast
from ptxseg.train.loop import ema_average
from ptxseg.train.losses import build_loss, segmenter_loss
from ptxseg.train.schedules import build_optimiser
from ptxseg.train.settings import FitSettings, Runtime

GIB = 2**30


def jobs(config: dict):
    """(stage, name, arch, options, settings, train size, eval size, outputs, loss kind)."""
    runtime = Runtime(amp=config["train"]["amp"], channels_last=config["train"]["channels_last"])

    def settings(recipe):
        return FitSettings.from_config(recipe, config["seed"], runtime)

    findings = len(pretraining_findings(config["pretrain"]["exclude_findings"]))
    nih = config["repack"]["nih_size"]
    for arch in config["pretrain"]["archs"]:
        s = settings(recipe_for(config, "pretrain", arch))
        yield "pretrain", arch, arch, {}, s, nih, nih, findings, "multilabel"
    for arch, entry in config["classify"]["archs"].items():
        s = settings(recipe_for(config, "classify", arch))
        size = config["classify"]["size"]
        yield "classify", arch, arch, entry.get("options") or {}, s, size, size, 1, "classifier"
    for name in segmenter_names(config):
        arch = name.removesuffix("-round2")
        options = config["segment"]["archs"][arch].get("options") or {}
        plan = settings(segmenter_recipe(config, name)).stage_plan(config["segment"]["size"])
        for k, (size, s) in enumerate(plan):
            crop = s.crop["size"] if s.crop else size
            yield f"segment stage {k + 1}", name, arch, options, s, crop, size, 1, "segmenter"


def training_step(arch, options, s: FitSettings, size: int, outputs: int, kind: str):
    """The model (on the GPU) and a function running one training step on a random batch of
    ``size`` px as the training loop does: autocast and channels_last from ``s.runtime``, the
    recipe's loss and optimiser, then the EMA update where the recipe keeps one."""
    device = torch.device("cuda")
    has_drop_path = get_spec(arch).has_drop_path(options)
    model = build_model(arch, outputs, **{**options, **s.model_options(has_drop_path)})
    set_batchnorm_momentum(model, s.bn_momentum)
    memory_format = torch.channels_last if s.runtime.channels_last else torch.contiguous_format
    model = model.to(device).to(memory_format=memory_format).train()
    optimiser = build_optimiser(
        model.parameters(), s.optimiser, s.lr, s.weight_decay, rmsprop=s.rmsprop
    )
    ema = ema_average(model, s.ema_decay, s.ema_warmup) if s.ema_decay is not None else None
    loss_fn = (
        segmenter_loss(s.loss, s.head_weight)
        if kind == "segmenter"
        else build_loss(kind=kind, **s.loss)
    )
    x = torch.randn(s.batch_size, 1, size, size, device=device)
    x = x.contiguous(memory_format=memory_format)
    if kind == "segmenter":
        y = (torch.rand(s.batch_size, 1, size, size, device=device) > 0.95).float()
    else:
        y = (torch.rand(s.batch_size, outputs, device=device) > 0.5).float()

    def step() -> None:
        with autocast(device, s.runtime.amp):
            output = model(x)
        loss_fn(as_float(output), y).backward()
        if s.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update_parameters(model)

    return model, step


def one_job(arch, options, s: FitSettings, train_size, eval_size, outputs, kind) -> dict:
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model, step = training_step(arch, options, s, train_size, outputs, kind)
    times = []
    for _ in range(3):  # the first step allocates the optimiser's state; the peak is reached by 2
        torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    train_peak = torch.cuda.max_memory_allocated()
    train_reserved = torch.cuda.max_memory_reserved()
    del step
    gc.collect()
    model.eval()
    torch.cuda.reset_peak_memory_stats()
    device = torch.device("cuda")
    memory_format = torch.channels_last if s.runtime.channels_last else torch.contiguous_format
    with torch.no_grad(), autocast(device, s.runtime.amp):
        z = torch.randn(s.eval_batch_size, 1, eval_size, eval_size, device=device)
        model(z.contiguous(memory_format=memory_format))
    torch.cuda.synchronize()
    eval_peak = torch.cuda.max_memory_allocated()
    del model, z
    return {
        "train_peak_gib": train_peak / GIB,
        "train_reserved_gib": train_reserved / GIB,
        "eval_peak_gib": eval_peak / GIB,
        "step_s": min(times[1:]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/full.yaml")
    parser.add_argument("--csv", default=None)
    parser.add_argument(
        "--only", nargs="+", help="only the jobs whose 'job model' has one of these"
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU visible: this measurement needs one (skipped)")
        return 0
    raw = yaml.safe_load(Path(args.config).read_text())
    raw["data"] = {"source": "demo"}  # the data paths play no part in a model's memory
    config = validate(raw)
    torch.use_deterministic_algorithms(True, warn_only=True)  # as training jobs run
    total = torch.cuda.get_device_properties(0).total_memory
    name = torch.cuda.get_device_name()
    print(f"{name}, {total / GIB:.1f} GiB; {args.config}, amp {config['train']['amp']}")
    rows = []
    header = f"{'job':18s} {'model':28s} {'batch':>5s} {'train px':>8s} {'eval px':>7s}"
    print(f"{header} {'train GiB':>9s} {'reserved':>8s} {'eval GiB':>8s} {'step s':>7s}  share")
    for stage, name_, arch, options, s, train_size, eval_size, outputs, kind in jobs(config):
        if args.only and not any(word in f"{stage} {name_}" for word in args.only):
            continue
        try:
            figures = one_job(arch, options, s, train_size, eval_size, outputs, kind)
        except torch.cuda.OutOfMemoryError as error:
            figures = {"error": f"out of memory: {str(error)[:120]}"}
            torch.cuda.empty_cache()
        row = {
            "gpu": name,
            "gpu_gib": round(total / GIB, 1),
            "job": stage,
            "model": name_,
            "batch": s.batch_size,
            "eval_batch": s.eval_batch_size,
            "train_size": train_size,
            "eval_size": eval_size,
            "ema": s.ema_decay is not None,
            "drop_path": s.drop_path_rate,
            **figures,
        }
        rows.append(row)
        if "error" in figures:
            print(f"{stage:18s} {name_:28s} {figures['error']}")
            continue
        worst = max(figures["train_reserved_gib"], figures["eval_peak_gib"])
        print(
            f"{stage:18s} {name_:28s} {s.batch_size:5d} {train_size:8d} {eval_size:7d} "
            f"{figures['train_peak_gib']:9.2f} {figures['train_reserved_gib']:8.2f} "
            f"{figures['eval_peak_gib']:8.2f} {figures['step_s']:7.3f}  "
            f"{worst * GIB / total:.0%}"
        )
    if args.csv:
        fields = sorted({key for row in rows for key in row}, key=list(rows[0]).index)
        fields += [k for k in sorted({k for r in rows for k in r}) if k not in fields]
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
