"""File-level training functions, one per rule: paths and plain values in, models and tables out.

``pretrain_nih`` trains a NIH ChestX-ray14 findings classifier; ``train_fold`` trains a
pneumothorax classifier or segmenter on the SIIM folds other than ``fold`` and writes its
out-of-fold (OOF) predictions on ``fold``: classifier probabilities in a CSV, segmenter maps as
uint8 map files (``ptxseg.io.maps``; one per kept model: best, SWA, snapshots), in the order of
``oof_ids.csv``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ptxseg.data.datasets import RepackedImages
from ptxseg.data.nih import pretraining_findings
from ptxseg.data.repack import read_manifest, read_stats
from ptxseg.data.transforms import build_augment
from ptxseg.io import atomic, maps
from ptxseg.models import build_model, get_spec
from ptxseg.recipes import member_names
from ptxseg.runtime import checkpoint
from ptxseg.runtime.device import pick_device, seed_everything
from ptxseg.runtime.options import Runtime
from ptxseg.runtime.predict import quantise_probabilities
from ptxseg.train.kept import remove_training_state
from ptxseg.train.loop import FitSettings, Members, fit
from ptxseg.train.metrics import SegmentationScores, classification_metrics
from ptxseg.train.schedules import ScheduleSpec
from ptxseg.train.tasks import classification_task, segmentation_task

log = logging.getLogger(__name__)


def settings_from_recipe(recipe: dict, seed: int, runtime: Runtime) -> FitSettings:
    schedule = recipe["schedule"]
    swa = recipe["swa"]
    return FitSettings(
        epochs=recipe["epochs"],
        batch_size=recipe["batch_size"],
        lr=recipe["optimiser"]["lr"],
        optimiser=recipe["optimiser"]["name"],
        weight_decay=recipe["optimiser"]["weight_decay"],
        schedule=ScheduleSpec(
            name=schedule["name"],
            warmup_epochs=schedule["warmup_epochs"],
            cycle_epochs=schedule["cycle_epochs"],
            cycle_mult=schedule["cycle_mult"],
            min_lr=schedule["min_lr"],
            plateau_patience=schedule["plateau_patience"],
            plateau_factor=schedule["plateau_factor"],
            mode=recipe["monitor_mode"],
        ),
        snapshots=recipe["snapshots"],
        swa_start=swa["start_epoch"] - 1 if swa["enabled"] else None,
        swa_lr=swa["lr"],
        grad_clip=recipe["grad_clip"],
        accumulate=recipe["accumulate"],
        steps_per_epoch=recipe["steps_per_epoch"],
        sampling=recipe["sampling"]["mode"],
        sampling_start=recipe["sampling"]["start"],
        sampling_end=recipe["sampling"]["end"],
        monitor=recipe["monitor"],
        monitor_mode=recipe["monitor_mode"],
        seed=seed,
        amp=runtime.amp,
        channels_last=runtime.channels_last,
        num_workers=runtime.num_workers,
    )


def _members(out_dir: Path, names: list[str], state: Path) -> Members:
    return Members(
        best=out_dir / "model_best.pt",
        swa=out_dir / "model_swa.pt" if "swa" in names else None,
        snapshots=[out_dir / f"model_{n}.pt" for n in names if n.startswith("snapshot")],
        metrics_csv=out_dir / "metrics.csv",
        state=state,
    )


def _check_size(arch: str, size: int) -> None:
    spec = get_spec(arch)
    if size < spec.min_size or size % spec.size_multiple:
        raise ValueError(
            f"model {arch!r} needs inputs of at least {spec.min_size} pixels and a multiple of "
            f"{spec.size_multiple}; the config gives {size}"
        )


def _prepare(runtime: Runtime, seed: int) -> torch.device:
    torch.set_num_threads(max(1, runtime.threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    seed_everything(seed)
    return pick_device(runtime.device)


def _siim_split(
    folds_csv,
    manifest_csv,
    repack_root,
    stats_json,
    size,
    fold,
    with_masks,
    augment,
    input_size=None,
):
    folds = pd.read_csv(folds_csv, dtype={"image_id": str})
    if fold not in set(folds["fold"]):
        raise ValueError(f"fold {fold} is not in {folds_csv} (folds: {sorted(set(folds['fold']))})")
    manifest = read_manifest(manifest_csv)
    manifest = manifest[(manifest["size"] == size) & (manifest["split"] == "train")].set_index(
        "image_id"
    )
    missing = sorted(set(folds["image_id"]) - set(manifest.index))
    if missing:
        raise ValueError(
            f"{manifest_csv}: no {size}px image for {len(missing)} fold image(s), e.g. {missing[0]}"
        )
    mean, std = read_stats(stats_json, size)
    root = Path(repack_root)

    def dataset(rows: pd.DataFrame, train: bool) -> RepackedImages:
        entries = manifest.loc[rows["image_id"]]
        return RepackedImages(
            rows["image_id"].tolist(),
            [root / p for p in entries["image"]],
            mean=mean,
            std=std,
            masks=[root / p for p in entries["mask"]] if with_masks else None,
            labels=None if with_masks else rows["has_pneumothorax"].to_numpy()[:, None],
            augment=augment if train else None,
            resize=input_size if input_size not in (None, size) else None,
        )

    train_rows = folds[folds["fold"] != fold].reset_index(drop=True)
    held_out = folds[folds["fold"] == fold].reset_index(drop=True)
    return dataset(train_rows, True), dataset(held_out, False), train_rows, held_out


def train_fold(
    *,
    kind: str,
    arch: str,
    fold: int,
    folds_csv: str | os.PathLike,
    manifest_csv: str | os.PathLike,
    repack_root: str | os.PathLike,
    stats_json: str | os.PathLike,
    size: int,
    recipe: dict,
    weights: str = "none",
    options: dict | None = None,
    weights_dir: str | None = None,
    out_dir: str | os.PathLike,
    state_path: str | os.PathLike,
    seed: int,
    runtime: Runtime | None = None,
    stop_after_epoch: int | None = None,
    tuning_grid: dict | None = None,
    input_size: int | None = None,
) -> dict:
    """Train one fold model of ``kind`` 'classifier' or 'segmenter' and write its OOF predictions.

    Images are read at the repacked ``size``; ``input_size`` resizes them on reading for a model
    whose input side is not a repacked size (the compound-scaled U-Nets).
    """
    if kind not in ("classifier", "segmenter"):
        raise ValueError(f"kind must be 'classifier' or 'segmenter', got {kind!r}")
    if get_spec(arch).kind != kind:
        raise ValueError(f"model {arch!r} is a {get_spec(arch).kind}, not a {kind}")
    _check_size(arch, input_size or size)
    runtime = runtime or Runtime()
    device = _prepare(runtime, seed)
    out_dir = Path(out_dir)
    augment = build_augment(recipe.get("augment"), f"{kind}.recipe.augment")
    segmenter = kind == "segmenter"
    train_set, held_out, train_rows, held_rows = _siim_split(
        folds_csv, manifest_csv, repack_root, stats_json, size, fold, segmenter, augment, input_size
    )
    model = build_model(arch, 1, weights=weights, weights_dir=weights_dir, **(options or {}))
    settings = settings_from_recipe(recipe, seed, runtime)
    eval_batch = recipe["batch_size"] * 2
    common = dict(
        device=device,
        amp=runtime.amp,
        channels_last=runtime.channels_last,
        num_workers=runtime.num_workers,
    )
    task = (
        segmentation_task(
            recipe["loss"],
            eval_batch,
            positive=train_rows["has_pneumothorax"].to_numpy() == 1,
            **common,
        )
        if segmenter
        else classification_task(recipe["loss"], eval_batch, **common)
    )
    names = member_names(recipe)
    members = _members(out_dir, names, Path(state_path))
    meta = {"arch": arch, "kind": kind, "fold": fold, "size": size, "options": options or {}}
    history = fit(
        model, train_set, held_out, task, settings, members, meta, device, stop_after_epoch
    )
    if stop_after_epoch is not None and len(history) < recipe["epochs"]:
        return {"stopped_after_epoch": len(history)}

    summary = {
        "arch": arch,
        "kind": kind,
        "fold": fold,
        "size": size,
        "images_held_out": len(held_out),
        "epochs": len(history),
        "members": {},
    }
    predictions = {}
    for name in names:
        path = (
            getattr(members, name) if name in ("best", "swa") else members.snapshots[int(name[8:])]
        )
        model.load_state_dict(checkpoint.load(path)["model"])
        predictions[name] = _predict_held_out(
            model,
            held_out,
            out_dir / f"oof_{name}{maps.SUFFIX}" if segmenter else None,
            eval_batch,
            device,
            runtime,
        )
        if segmenter:
            summary["members"][name] = score_maps(
                out_dir / f"oof_{name}{maps.SUFFIX}", held_out, tuning_grid
            )
        else:
            summary["members"][name] = classification_metrics(
                held_rows["has_pneumothorax"], predictions[name]
            )
    oof = held_rows[["image_id", "has_pneumothorax"]].copy()
    if not segmenter:
        for name in names:
            oof[f"prob_{name}"] = predictions[name]
        atomic.write_csv(out_dir / "oof.csv", oof)
    else:
        atomic.write_csv(out_dir / "oof_ids.csv", oof)
    atomic.write_json(out_dir / "summary.json", summary)
    _log_summary(summary)
    remove_training_state(state_path)  # the run is complete; its resume state is no longer needed
    return summary


def _predict_held_out(
    model,
    dataset: RepackedImages,
    maps_path: Path | None,
    batch_size: int,
    device: torch.device,
    runtime: Runtime,
) -> np.ndarray | None:
    """Classifier: the probability per image. Segmenter: uint8 maps streamed into ``maps_path``."""
    model.to(device)
    batches = runtime.predict_batches(model, dataset, device, batch_size)
    if maps_path is None:
        probabilities = np.zeros(len(dataset), dtype=np.float32)
        for indices, p in batches:
            probabilities[indices] = p[:, 0]
        return probabilities
    first = tuple(dataset[0]["image"].shape[-2:])
    with maps.create(maps_path, (len(dataset), *first)) as out:
        for indices, p in batches:
            out[indices] = quantise_probabilities(p)
    return None


def score_maps(
    maps_path: str | os.PathLike, dataset: RepackedImages, grid: dict | None = None, chunk: int = 64
) -> dict:
    """Metrics of stored uint8 maps against the dataset's masks, chunk by chunk.

    At a threshold of one half, and (with ``grid``) the competition score after the triplet
    binarisation that suits this model best ('competition_tuned', thresholds searched on these
    same held-out images, as the ensemble stage does for the blend).
    """
    from ptxseg.scoring.thresholds import CascadeGrid, Histograms

    scores = SegmentationScores()
    tuning = CascadeGrid(grid["top"], grid["min_area"], grid["bottom"]) if grid else None
    with maps.MapFile(maps_path) as stored:
        for start, chunk_maps in stored.chunks(chunk):
            truth = np.stack([dataset.truth_mask(i) for i in range(start, start + len(chunk_maps))])
            scores.add(chunk_maps >= 128, truth)
            if tuning is not None:
                tuning.add(Histograms.of(chunk_maps, truth))
    result = scores.result()
    if tuning is not None:
        cascade, tuned = tuning.best()
        result["competition_tuned"] = tuned
        result.update({f"tuned_{k}": v for k, v in cascade.as_dict().items() if k != "gate"})
    return result


def _log_summary(summary: dict) -> None:
    for name, metrics in summary["members"].items():
        text = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        log.info(
            "%s %s fold %s, OOF of %s: %s",
            summary["kind"],
            summary["arch"],
            summary["fold"],
            name,
            text,
        )


def pretrain_nih(
    *,
    arch: str,
    nih_index: str | os.PathLike,
    manifest_csv: str | os.PathLike,
    repack_root: str | os.PathLike,
    stats_json: str | os.PathLike,
    size: int,
    recipe: dict,
    weights: str = "none",
    options: dict | None = None,
    weights_dir: str | None = None,
    out_dir: str | os.PathLike,
    state_path: str | os.PathLike,
    seed: int,
    runtime: Runtime | None = None,
    exclude_findings: list[str] | tuple[str, ...] = (),
    siim_overlap_csv: str | os.PathLike | None = None,
) -> dict:
    """Train ``arch`` on NIH ChestX-ray14 as a classifier of the 14 findings minus ``exclude_findings``
    (train split; val split to select).

    ``nih_index`` is the index pretraining may use (without the NIH images that are SIIM images);
    ``siim_overlap_csv``, the list of those left out, gives their count for the summary.
    """
    findings = pretraining_findings(exclude_findings)
    if get_spec(arch).kind != "classifier":
        raise ValueError(f"NIH pretraining needs a classifier; {arch!r} is a {get_spec(arch).kind}")
    # Pretraining keeps one model, the best on the NIH validation split, to seed the classifiers.
    recipe = {**recipe, "snapshots": 0, "swa": {**recipe["swa"], "enabled": False}}
    _check_size(arch, size)
    runtime = runtime or Runtime()
    device = _prepare(runtime, seed)
    out_dir = Path(out_dir)
    index = pd.read_csv(
        nih_index, dtype={"image_id": str, "patient_id": str}, keep_default_na=False
    )
    manifest = read_manifest(manifest_csv).set_index("image_id")
    mean, std = read_stats(stats_json, size)
    augment = build_augment(recipe.get("augment"), "pretrain.recipe.augment")
    root = Path(repack_root)

    def dataset(rows: pd.DataFrame, train: bool) -> RepackedImages:
        return RepackedImages(
            rows["image_id"].tolist(),
            [root / p for p in manifest.loc[rows["image_id"], "image"]],
            mean=mean,
            std=std,
            labels=rows[findings].to_numpy(),
            augment=augment if train else None,
        )

    empty = [split for split in ("train", "val") if not (index["split"] == split).any()]
    if empty:
        raise ValueError(
            f"{nih_index}: no image in the NIH {' and '.join(empty)} split (after leaving out "
            "the NIH images that are SIIM images); add NIH images or change nih_split.val_fraction"
        )
    train_set = dataset(index[index["split"] == "train"].reset_index(drop=True), True)
    val_set = dataset(index[index["split"] == "val"].reset_index(drop=True), False)
    model = build_model(
        arch, len(findings), weights=weights, weights_dir=weights_dir, **(options or {})
    )
    settings = settings_from_recipe(recipe, seed, runtime)
    task = classification_task(
        recipe["loss"],
        recipe["batch_size"] * 2,
        device,
        names=findings,
        amp=runtime.amp,
        channels_last=runtime.channels_last,
        num_workers=runtime.num_workers,
    )
    members = _members(out_dir, member_names(recipe), Path(state_path))
    history = fit(
        model,
        train_set,
        val_set,
        task,
        settings,
        members,
        {"arch": arch, "kind": "nih", "size": size, "findings": findings},
        device,
    )
    best_row = history.loc[
        history[settings.monitor].idxmax()
        if settings.monitor_mode == "max"
        else history[settings.monitor].idxmin()
    ]
    removed_as_siim = (
        int(pd.read_csv(siim_overlap_csv, dtype=str)["nih_image_id"].nunique())
        if siim_overlap_csv is not None
        else None
    )
    summary = {
        "arch": arch,
        "findings": findings,
        "excluded_findings": list(exclude_findings),
        "images_train": len(train_set),
        "images_val": len(val_set),
        "images_removed_as_siim": removed_as_siim,
        "epochs": len(history),
        "best_epoch": int(best_row["epoch"]),
        "best": {k: float(v) for k, v in best_row.items() if k.startswith(("auc", "val_loss"))},
    }
    atomic.write_json(out_dir / "summary.json", summary)
    log.info(
        "NIH %s: %d findings (left out: %s), %d images (%s removed as SIIM images); best epoch %d, "
        "val AUC %.4f",
        arch,
        len(findings),
        ", ".join(exclude_findings) or "none",
        len(train_set) + len(val_set),
        removed_as_siim,
        summary["best_epoch"],
        summary["best"].get("auc", np.nan),
    )
    remove_training_state(state_path)
    return summary
