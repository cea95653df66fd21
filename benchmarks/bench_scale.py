"""Scale rehearsal: the full recipe's data stages and post-training stages at the real size.

1. A synthetic release in the real formats and counts (12,047 train + 3,205 test JPEG-baseline
   DICOMs at 1024, 22 % positive with multi-region rows; an NIH label file of 112,120 rows with
   ``--nih-images`` PNGs rendered; see scale_release.py).
2. The config's DAG, from a forced dry run (scale_dag.py): the jobs that read or write kept
   model files (training, prediction, pseudo-labelling) are drawn, the jobs downstream of them
   are the stages after training, the others the data stages.
3. The data stages of configs/full.yaml on the release, through Snakemake (index, folds, repacks,
   NIH index, repack and overlap, the second round's NIH candidates).
4. Synthetic files, in the package's formats and at the config's sizes, for every output of a
   drawn job that a later stage reads (OOF maps of every kept member of both rounds, test maps,
   head and classifier probabilities, metrics, summaries, pseudo-label counts, benchmarks; see
   scale_release.py), then the stages after training through Snakemake on them.
5. One training fold of a small segmenter (the compound-scaled U-Net's B0 at 256 px) on the
   full-size index for ``--train-steps`` steps, writing its OOF maps for the whole held-out fold:
   the loader and the OOF writing at that size.

Per rule it prints wall time, peak resident memory (the job's process tree, from Snakemake's
benchmark files), disk written (the rule's outputs) and the rule's mem_mb in the full config;
the RATIO lines compare each figure with its target or budget, and the maps' stored size with
their raw size, in this same run. With ``--images N`` every count is scaled by N / 15,252; the
NIH rules' figures are also extrapolated to all 112,120 images from their cost per image.

    python benchmarks/bench_scale.py [--images 15252] [--nih-images 20000] [--workdir DIR]
                                     [--archs N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import scale_release
import yaml
from scale_dag import Job, dry_run, memory_by_rule, outputs_by_rule, plan, rules_of
from snakemake_run import ROOT, snakemake_command

from ptxseg.contracts.ensemble_spec import EnsembleSpec
from ptxseg.io import maps
from ptxseg.layout import RESULTS

FULL_CONFIG = ROOT / "configs" / "full.yaml"


# Targets of the issue at the full size: memory of the OOF search and of the report; time of the
# SIIM repack on this machine's 2 cores.
TARGETS = {"ensemble": ("peak_gib", 8.0), "report": ("peak_gib", 2.0)}
REPACK_TARGET_S = 600.0
GIB = 2**30


def snakemake(workdir: Path, config: Path, *args, cores: int = 2) -> None:
    command = snakemake_command(workdir, config, "--cores", cores, *args)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"snakemake failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")


def rule_rows(workdir: Path, jobs: list[Job], rules: list[str]) -> list[dict]:
    """Per rule of ``rules``: its jobs' benchmark files, its outputs' size, its mem_mb (all as the
    dry run's ``jobs`` name them)."""
    outputs, memory = outputs_by_rule(jobs), memory_by_rule(jobs)
    rows = []
    for rule in rules:
        tsvs = sorted((workdir / RESULTS.benchmarks_of(rule)).glob("*.tsv"))
        if not tsvs:
            continue
        frames = [pd.read_csv(t, sep="\t").iloc[-1] for t in tsvs]
        rows.append(
            {
                "rule": rule,
                "jobs": len(frames),
                "wall_s": sum(float(f["s"]) for f in frames),
                "peak_gib": max(float(f["max_rss"]) for f in frames) * 2**20 / GIB,
                "disk_gb": sum(
                    scale_release.file_size(workdir / p)
                    for p in outputs.get(rule, [])
                    if (workdir / p).exists()
                )
                / 1e9,
                "mem_mb": memory.get(rule, 0),
            }
        )
    return rows


TRAIN_FOLD = r"""
import json, sys
from pathlib import Path
from ptxseg.layout import Layout
from ptxseg.runtime.options import Runtime
from ptxseg.train.run import train_fold
from ptxseg.train.settings import FitSettings
results, size, steps = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
recipe, layout = json.loads(sys.argv[4]), Layout(sys.argv[1])
runtime = Runtime(device="cpu", num_workers=1, tta=("none", "hflip"), threads=2)
summary = train_fold(kind="segmenter", arch="scaled_unet", fold=0,
    folds_csv=layout.data("siim_folds.csv"), manifest_csv=layout.repack_manifest("siim", size),
    stats_json=layout.repack_stats("siim", size), size=size,
    settings=FitSettings.from_config(recipe, 0, runtime), options={"depth": 1.0, "width": 1.0},
    out_dir=results / "rehearsal_fold", state_path=results / "checkpoints/rehearsal_fold.pt")
print(json.dumps(summary))
"""


def measured(command: list[str]) -> tuple[float, float, str]:
    """Run ``command``; (seconds, peak resident GiB of its process tree, stdout)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        root = psutil.Process(process.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                pass
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = process.communicate()
    done.set()
    watcher.join()
    if process.returncode != 0:
        sys.exit(f"training fold failed:\n{err[-5000:]}")
    return time.perf_counter() - started, peak / GIB, out


def training_fold(results: Path, full: dict, steps: int, memory: dict[str, int]) -> dict:
    recipe = json.loads(json.dumps(full["segment"]["recipe"]))
    # One stage at 256 px: the recipe's progressive stages (to 1024) are not what this measures.
    recipe.update(epochs=1, batch_size=4, snapshots=0, steps_per_epoch=steps, stages=[])
    recipe["swa"] = {"enabled": False}
    recipe["schedule"] = {"name": "constant", "warmup_epochs": 0}
    from ptxseg.config import validate

    config = json.loads(json.dumps(full))
    config["segment"]["recipe"] = recipe
    config["ensemble"]["members"]["segment"] = ["best"]
    recipe = validate(config)["segment"]["recipe"]  # with the schema's defaults filled
    seconds, peak, out = measured(
        [sys.executable, "-c", TRAIN_FOLD, str(results), "256", str(steps), json.dumps(recipe)]
    )
    summary = json.loads(out.strip().splitlines()[-1])
    disk = scale_release.file_size(results / "rehearsal_fold")
    epoch = pd.read_csv(results / "rehearsal_fold" / "metrics.csv").iloc[0]
    trained = int(epoch["images"]) // recipe["batch_size"]  # fewer where the sampled epoch is short
    return {
        "rule": f"train_segmenter (scaled_unet B0, 256 px, {trained} steps, fold 0)",
        "jobs": 1,
        "wall_s": seconds,
        "peak_gib": peak,
        "disk_gb": disk / 1e9,
        "mem_mb": memory["train_segmenter"],
        "held_out": summary["images_held_out"],
    }


def checkpoint_plan(config: dict, drawn: list[Job]) -> dict[str, float]:
    """GB of kept model files the config writes: every model file among the training jobs'
    outputs in the dry run, at its architecture's state-dict size (the models are built,
    untrained), by stage; and the largest resume state one job holds while it runs (model,
    AdamW's two moments, the SWA copy: ~4 models)."""
    from ptxseg.config import validate
    from ptxseg.layout import model_member, round1_arch, training_job_of
    from ptxseg.models import build_model

    config = validate(json.loads(json.dumps(config)))
    sizes: dict[tuple[str, str], float] = {}
    plan: dict[str, float] = {}
    for path in (p for job in drawn for p in job.output if model_member(p) is not None):
        stage, name, _ = training_job_of(path)
        key = (stage, round1_arch(name))
        if key not in sizes:
            entry = config[stage]["archs"][key[1]] if stage != "pretrain" else {}
            model = build_model(key[1], 1, weights="none", **entry.get("options", {}))
            sizes[key] = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        plan[stage] = plan.get(stage, 0.0) + sizes[key] / 1e9
    plan["largest resume state"] = 4 * max(sizes.values(), default=0) / 1e9
    return plan


def print_table(rows: list[dict]) -> None:
    print(
        f"{'rule':58s} {'jobs':>4s} {'wall s':>9s} {'peak GiB':>9s} {'disk GB':>8s} {'mem_mb':>7s}"
    )
    for r in rows:
        print(
            f"{r['rule']:58s} {r['jobs']:4d} {r['wall_s']:9.1f} {r['peak_gib']:9.2f} "
            f"{r['disk_gb']:8.2f} {r['mem_mb'] or '-':>7}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=15_252, help="SIIM images (train + test)")
    parser.add_argument("--nih-images", type=int, default=20_000, help="at the full size")
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--archs",
        type=int,
        default=None,
        help="keep the first N architectures of each training stage (default: all of them)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ptxseg-scale-", dir=args.workdir))
    try:
        return rehearse(work, args)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def rehearse(work: Path, args) -> int:
    full = yaml.safe_load(FULL_CONFIG.read_text())
    seed = int(full["seed"])
    print(f"scale rehearsal in {work}: {args.images} SIIM images, machine {os.cpu_count()} cores")
    started = time.perf_counter()
    release = scale_release.write_release(
        work / "release", args.images, args.nih_images, seed, args.workers
    )
    print(
        f"synthetic release: {release.train} train + {release.test} test DICOMs, "
        f"{release.nih_rows} NIH label rows with {release.nih_images} PNGs, "
        f"{scale_release.file_size(release.root) / 1e9:.2f} GB in {time.perf_counter() - started:.0f} s"
    )
    config = json.loads(json.dumps(full))
    config["data"].update(
        source="files",
        stop_on_rejects=False,  # NIH label rows beyond the rendered images have no PNG
        siim={
            "train_dicom_dir": str(release.siim / "dicom-images-train"),
            "test_dicom_dir": str(release.siim / "dicom-images-test"),
            "train_rle_csv": str(release.siim / "train-rle.csv"),
        },
        nih={
            "image_dir": str(release.nih / "images"),
            "labels_csv": str(release.nih / "Data_Entry_2017.csv"),
        },
    )
    if args.archs:
        keep_archs(config, args.archs)
    config_path = scale_release.dump_config(config, work / "rehearsal.yaml")
    results_dir = work / "run"
    results_dir.mkdir()

    # What to run and what to draw: the config's own DAG (scale_dag).
    jobs = dry_run(results_dir, config_path)
    stages = plan(jobs)
    print(
        f"DAG of {len(jobs)} jobs: data {rules_of(stages.data)}; drawn {rules_of(stages.drawn)}; "
        f"after training {rules_of(stages.post)}"
    )
    data_outputs = [p for job in stages.data for p in job.output]
    snakemake(results_dir, config_path, *data_outputs, cores=args.workers)
    rows = rule_rows(results_dir, jobs, rules_of(stages.data))

    started = time.perf_counter()
    from ptxseg.config import validate

    outputs = scale_release.write_model_outputs(
        results_dir,
        stages.drawn_inputs(),
        validate(json.loads(json.dumps(config))),
        release.siim / "test-rle.csv",
        seed,
        args.workers,
    )
    print(
        f"synthetic model outputs of {len(stages.drawn)} jobs: {outputs['map_files']} map files, "
        f"{sum(outputs['files'].values())} files in all, in {time.perf_counter() - started:.0f} s"
    )
    for kind, count in outputs["files"].items():
        print(f"  {count:5d} {kind}")
    post_rules = rules_of(stages.post)
    post_outputs = [p for job in stages.post for p in job.output]
    snakemake(
        results_dir, config_path, *post_outputs, "--allowed-rules", *post_rules, cores=args.workers
    )
    rows += rule_rows(results_dir, jobs, post_rules)
    rows.append(
        training_fold(results_dir / "results", full, args.train_steps, memory_by_rule(jobs))
    )

    print()
    print_table(rows)
    report(rows, results_dir / "results", release, outputs, args, config, stages)
    return 0


def keep_archs(config: dict, n: int) -> None:
    """The first ``n`` architectures of each training stage (a count, for a machine or a search
    that cannot take them all; every lever of the recipe stays). Pretraining keeps those a kept
    classifier starts from as well."""
    for stage in ("classify", "segment"):
        config[stage]["archs"] = dict(list(config[stage]["archs"].items())[:n])
    seeds = [a for a, entry in config["classify"]["archs"].items() if entry.get("weights") == "nih"]
    pretrain = config["pretrain"]["archs"]
    config["pretrain"]["archs"] = [a for a in pretrain if a in pretrain[:n] or a in seeds]
    if config["pseudo_labels"].get("archs"):
        kept = config["segment"]["archs"]
        config["pseudo_labels"]["archs"] = [
            a for a in config["pseudo_labels"]["archs"] if a in kept
        ]


def report(rows, results: Path, release, outputs, args, config, stages) -> None:
    by_rule = {r["rule"]: r for r in rows}
    scale = (scale_release.REAL_TRAIN + scale_release.REAL_TEST) / args.images
    nih_scale = scale_release.REAL_NIH_ROWS / max(release.nih_images, 1)
    print()
    # Every job pays Python's and the libraries' start-up once; the cheapest job's time stands
    # for it, and only the rest grows with the images.
    start_up = min(r["wall_s"] / r["jobs"] for r in rows)
    if scale != 1 or nih_scale != 1:
        print(
            f"Extrapolated to the full size (linear per image above {start_up:.1f} s of start-up):"
        )
        for rule, factor, disk_factor in (
            ("repack_siim", scale, scale),
            ("repack_nih", nih_scale, nih_scale),
            # Every pass of the OOF search streams every OOF image's maps. (Not extrapolated:
            # exclude_siim_from_nih, whose few seconds below the full size are its start-up; its
            # full-size compare was measured apart, benchmarks/README.md.)
            ("ensemble", scale, scale),
        ):
            if rule in by_rule:
                r = by_rule[rule]
                seconds = start_up + (r["wall_s"] - start_up) * factor
                print(f"  {rule:24s} {seconds:8.0f} s  {r['disk_gb'] * disk_factor:7.1f} GB")
    stored = sum(
        scale_release.file_size(p)
        for p in list((results / "segment").rglob(f"*{'.h5'}"))
        + list((results / "predict").rglob("*.h5"))
    )
    raw = outputs["maps_raw_bytes"]
    sample = maps.read_rows(
        next((results / "segment").rglob(f"oof_best{maps.SUFFIX}")), slice(0, 64)
    )
    levels = np.bincount(sample.ravel(), minlength=256) / sample.size
    print(
        f"synthetic maps: {levels[0]:.1%} of pixels at level 0, {levels[:3].sum():.1%} at 0-2, "
        f"{levels[128:].sum():.2%} at 128 or more"
    )
    size = config["segment"]["size"]
    for kind, ratio in scale_release.compression_by_kind(results, size).items():
        print(
            f"  maps of {kind}, stored/raw: {ratio:.3f}: the full config's "
            f"{raw * scale / 1e9:.0f} GB of maps would take {raw * scale * ratio / 1e9:.1f} GB"
        )
    print()
    print(
        f"RATIO maps stored/raw: {stored / raw:.3f} ({stored / 1e9:.2f} GB for {raw / 1e9:.2f} GB of uint8 maps; "
        f"at the full size {stored * scale / 1e9:.1f} GB, target <= 20 GB)"
    )
    if "repack_siim" in by_rule:
        seconds = start_up + (by_rule["repack_siim"]["wall_s"] - start_up) * scale
        print(
            f"RATIO repack_siim time / 10 min target: {seconds / REPACK_TARGET_S:.2f} "
            f"({seconds:.0f} s for 15,252 images{'' if scale == 1 else ', extrapolated'})"
        )
    for rule, (key, limit) in TARGETS.items():
        if rule in by_rule:
            print(
                f"RATIO {rule} peak memory / {limit:g} GiB target: {by_rule[rule][key] / limit:.2f}"
            )
    for r in rows:
        if r["mem_mb"]:  # a rule with no resources of its own has none in the dry run
            print(
                f"RATIO {r['rule'].split()[0]} peak memory / its mem_mb: {r['peak_gib'] * GIB / 2**20 / r['mem_mb']:.2f}"
            )
    print()
    print("Checkpoints of the config (its DAG's kept model files, from the architectures' sizes):")
    for name, gb in checkpoint_plan(config, stages.drawn).items():
        print(f"  {name:24s} {gb:7.2f} GB")
    oof = EnsembleSpec.from_results(results).searched.oof
    print(
        f"OOF cascade {oof.cascade:.4f} at {oof.cascade_scored_at.label()} "
        f"(cross-fitted; in-sample {oof.cascade_in_sample:.4f}, "
        f"{oof.cascade_in_sample_at_size:.4f} at {oof.size} px; synthetic maps)"
    )


if __name__ == "__main__":
    sys.exit(main())
