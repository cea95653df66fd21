"""File-level training functions, one per rule: paths and plain values in, models and tables out.

``pretrain_nih`` trains a NIH ChestX-ray14 findings classifier; ``train_fold`` trains a
pneumothorax classifier or segmenter on the SIIM folds other than ``fold``, scored on ``fold``
after each epoch, and keeps its models (best, SWA, EMA, snapshots). Its out-of-fold (OOF)
predictions on ``fold`` are written apart, by ``ptxseg.train.oof`` (TTA is an inference choice:
changing it retrains nothing). Both go through one fit-job path (``_start``, ``_fit``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ptxseg.data.crops import check_crop, plain, with_crop
from ptxseg.data.datasets import Joined, RepackedImages
from ptxseg.data.nih import pretraining_findings
from ptxseg.data.pseudo_labels import read_pseudo_labels
from ptxseg.data.repack import read_manifest, read_stats
from ptxseg.data.transforms import build_augment
from ptxseg.io import atomic
from ptxseg.layout import (
    BEST,
    EMA,
    METRICS,
    SUMMARY,
    SWA,
    model_file,
    snapshot_index,
)
from ptxseg.models import build_model, drop_path_models, get_spec, set_batchnorm_momentum
from ptxseg.runtime import checkpoint
from ptxseg.runtime.device import pick_device, seed_everything
from ptxseg.runtime.predict import mark_trained
from ptxseg.train.kept import remove_training_state
from ptxseg.train.loop import Members, Task, fit
from ptxseg.train.mean_teacher import MeanTeacher
from ptxseg.train.sampling import mixed_order
from ptxseg.train.settings import FitSettings
from ptxseg.train.tasks import classification_task, segmentation_task

log = logging.getLogger(__name__)

KINDS = ("classifier", "segmenter")


@dataclass(frozen=True)
class NihImages:
    """What a second round reads of the NIH images: the candidates' repack (at the segment size)
    and the fold's pseudo-labels (labels.csv; None for a mean teacher, which needs no labels)."""

    candidates_manifest: str | os.PathLike
    size: int
    labels_csv: str | os.PathLike | None = None


@dataclass
class FitJob:
    """One fit: the model, its training and held-out images, the task that scores them, and what
    its checkpoints record about it."""

    model: nn.Module
    train_set: RepackedImages
    val_set: RepackedImages
    task: Task
    meta: dict


def _members(out_dir: Path, names: list[str], state: Path) -> Members:
    snapshots = sorted((n for n in names if snapshot_index(n) is not None), key=snapshot_index)
    return Members(
        best=Path(model_file(out_dir, BEST)),
        swa=Path(model_file(out_dir, SWA)) if SWA in names else None,
        ema=Path(model_file(out_dir, EMA)) if EMA in names else None,
        snapshots=[Path(model_file(out_dir, n)) for n in snapshots],
        metrics_csv=out_dir / METRICS,
        state=state,
    )


def _check_size(arch: str, size: int) -> None:
    spec = get_spec(arch)
    if size < spec.min_size or size % spec.size_multiple:
        raise ValueError(
            f"model {arch!r} needs inputs of at least {spec.min_size} pixels and a multiple of "
            f"{spec.size_multiple}; the config gives {size}"
        )


def _start(settings: FitSettings) -> torch.device:
    """Threads, deterministic kernels and seeds of a fit job; its device."""
    torch.set_num_threads(max(1, settings.runtime.threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    seed_everything(settings.seed)
    return pick_device(settings.runtime.device)


def _model(
    arch: str,
    outputs: int,
    settings: FitSettings,
    weights: str,
    weights_dir: str | None,
    built_with: dict,
) -> nn.Module:
    """The architecture with the recipe's regularisation: drop path and dropout at build time
    (in ``built_with``), BatchNorm momentum set on the built model."""
    model = build_model(arch, outputs, weights=weights, weights_dir=weights_dir, **built_with)
    set_batchnorm_momentum(model, settings.bn_momentum)
    return model


def _built_with(arch: str, options: dict | None, settings: FitSettings) -> dict:
    """The options a model is built (and later rebuilt for prediction) with: its own and the
    recipe's regularisation; a recipe's drop path where the architecture has stochastic depth,
    its activation where the architecture lets it be chosen and its own options do not."""
    spec = get_spec(arch)
    options = options or {}
    has_drop_path = spec.has_drop_path(options)
    has_activation = spec.has_activation(options)
    if settings.activation is not None and not has_activation:
        log.info(
            "activation %s not applied to %s: its activations are fixed", settings.activation, arch
        )
    if settings.drop_path_rate is not None and not has_drop_path:
        why = (
            "its encoder has no stochastic depth (an efficientnet-b* encoder has)"
            if spec.drop_path
            else f"it has no stochastic depth (those that have: {', '.join(drop_path_models())})"
        )
        log.info("drop_path_rate %g not applied to %s: %s", settings.drop_path_rate, arch, why)
    chosen = has_activation and "activation" not in options  # an entry's own option wins
    return {**options, **settings.model_options(has_drop_path, chosen)}


def _task(kind: str, settings: FitSettings, device: torch.device, **extra) -> Task:
    runtime = settings.runtime
    build = segmentation_task if kind == "segmenter" else classification_task
    if kind == "segmenter":
        extra["head_weight"] = settings.head_weight
    return build(
        settings.loss,
        settings.eval_batch_size,
        device,
        amp=runtime.amp,
        channels_last=runtime.channels_last,
        num_workers=runtime.num_workers,
        **extra,
    )


def _fit(
    job: FitJob,
    settings: FitSettings,
    device: torch.device,
    out_dir: Path,
    state_path: str | os.PathLike,
    stop_after_epoch: int | None = None,
) -> pd.DataFrame:
    """The fit-job path every training function shares: kept members, resume state, metrics."""
    members = _members(out_dir, settings.members, Path(state_path))
    history = fit(
        job.model,
        job.train_set,
        job.val_set,
        job.task,
        settings,
        members,
        job.meta,
        device,
        stop_after_epoch,
    )
    return history


def _siim_split(
    folds_csv,
    manifest_csv,
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
    root = Path(manifest_csv).parent  # the manifest's paths are relative to its folder

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


def siim_held_out(
    folds_csv, manifest_csv, stats_json, size: int, fold: int, input_size: int | None = None
) -> RepackedImages:
    """The held-out images of ``fold``, with their masks, as training scored them."""
    return held_out_split(folds_csv, manifest_csv, stats_json, size, fold, True, input_size)[0]


def held_out_split(
    folds_csv,
    manifest_csv,
    stats_json,
    size: int,
    fold: int,
    with_masks: bool,
    input_size: int | None = None,
) -> tuple[RepackedImages, pd.DataFrame]:
    """The held-out images of ``fold`` (with their masks for a segmenter, ``with_masks``; their
    labels otherwise), as training scored them, and their rows of the folds file."""
    split = _siim_split(
        folds_csv, manifest_csv, stats_json, size, fold, with_masks, None, input_size
    )
    return split[1], split[3]


def train_fold(
    *,
    kind: str,
    arch: str,
    fold: int,
    folds_csv: str | os.PathLike,
    manifest_csv: str | os.PathLike,
    stats_json: str | os.PathLike,
    size: int,
    settings: FitSettings,
    weights: str = "none",
    options: dict | None = None,
    weights_dir: str | None = None,
    out_dir: str | os.PathLike,
    state_path: str | os.PathLike,
    stop_after_epoch: int | None = None,
    input_size: int | None = None,
    stage_repacks: dict[int, tuple[str | os.PathLike, str | os.PathLike]] | None = None,
    nih: NihImages | None = None,
) -> dict:
    """Train one fold model of ``kind`` 'classifier' or 'segmenter': its kept models, metrics
    and summary (its OOF predictions are ``ptxseg.train.oof``'s, apart from the training).

        Images are read at the repacked ``size``; ``input_size`` resizes them on reading for a model
        whose input side is not a repacked size (the compound-scaled U-Nets). A segmenter recipe with
        stages trains each in turn at its size (``stage_repacks``: size -> (manifest, stats) of the
        sizes other than ``size``); the held-out fold is scored at ``size``, on whole images.
        ``stop_after_epoch`` counts epochs over all stages (tests of resuming). ``nih``: the NIH
        images of a second round (pseudo-labels woven into each batch at ``settings.pseudo_share``,
        or unlabelled images for ``settings.mean_teacher``); the held-out fold stays SIIM images.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be 'classifier' or 'segmenter', got {kind!r}")
    if get_spec(arch).kind != kind:
        raise ValueError(f"model {arch!r} is a {get_spec(arch).kind}, not a {kind}")
    _check_size(arch, input_size or size)
    device = _start(settings)
    out_dir = Path(out_dir)
    segmenter = kind == "segmenter"
    plan = settings.stage_plan(size) if segmenter else [(size, settings)]
    repacks = {**(stage_repacks or {}), size: (manifest_csv, stats_json)}
    built_with = _built_with(arch, options, settings)
    model = _model(arch, 1, settings, weights, weights_dir, built_with)
    # The options rebuild the same modules when a kept model is loaded (dropout, drop path, head).
    meta = {"arch": arch, "kind": kind, "fold": fold, "size": size, "options": built_with}
    if settings.stages:
        meta["stages"] = [asdict(stage) for stage in settings.stages]
    epochs_before, histories = 0, []
    for k, (stage_size, stage) in enumerate(plan):
        last = k == len(plan) - 1
        job, _ = _stage_job(
            model,
            kind,
            stage,
            stage_size,
            repacks,
            folds_csv,
            fold,
            input_size,
            device,
            {**meta, "stage": k} if settings.stages else meta,
            k,
            nih,
        )
        stop = None if stop_after_epoch is None else stop_after_epoch - epochs_before
        if stop is not None and stop <= 0:
            return {"stopped_after_epoch": stop_after_epoch}
        if last:
            history = _fit(job, stage, device, out_dir, state_path, stop)
        else:
            history = _fit_stage(job, stage, device, _stage_dir(state_path, k), stop)
        histories.append(history.assign(stage=k, size=stage_size))
        epochs_before += stage.epochs
        if stop_after_epoch is not None and len(history) < stage.epochs:
            return {"stopped_after_epoch": epochs_before - stage.epochs + len(history)}
    if settings.stages:
        _write_stage_metrics(out_dir / METRICS, histories)
    summary = {
        "arch": arch,
        "kind": kind,
        "fold": fold,
        "size": size,
        "images_held_out": len(job.val_set),
        "epochs": sum(len(h) for h in histories),
    }
    if settings.stages:
        summary["stages"] = [
            {"size": s, "epochs": st.epochs, "freeze_encoder_epochs": st.freeze_encoder_epochs}
            for s, st in plan
        ]
    atomic.write_json(out_dir / SUMMARY, summary)
    log.info("%s %s fold %s: %d epochs", kind, arch, fold, summary["epochs"])
    remove_training_state(state_path)  # the run is complete; its resume state is no longer needed
    shutil.rmtree(_stages_dir(state_path), ignore_errors=True)
    return summary


def stage_repacks(inputs) -> dict[int, tuple[str, str]]:
    """size -> (manifest, stats) of a job's stage repacks (its ``stage_manifests`` and
    ``stage_stats`` inputs, in the same order), the size read from each stats file's keys."""
    manifests = list(getattr(inputs, "stage_manifests", []) or [])
    stats = list(getattr(inputs, "stage_stats", []) or [])
    repacks = {}
    for manifest, stats_json in zip(manifests, stats, strict=True):
        sizes = list(json.loads(Path(stats_json).read_text()))
        if len(sizes) != 1:
            raise ValueError(f"{stats_json}: one repack size expected, found {sizes}")
        repacks[int(sizes[0])] = (manifest, stats_json)
    return repacks


def _stage_job(
    model: nn.Module,
    kind: str,
    settings: FitSettings,
    size: int,
    repacks: dict,
    folds_csv,
    fold: int,
    input_size: int | None,
    device: torch.device,
    meta: dict,
    index: int,
    nih: NihImages | None = None,
) -> tuple[FitJob, pd.DataFrame]:
    """One stage's fit job: the SIIM split at the stage's size, cropped and augmented as its
    recipe says, and the held-out rows."""
    if size not in repacks:
        raise ValueError(
            f"recipe.stages[{index}].size {size}: no repack of that size was given to the job"
        )
    segmenter = kind == "segmenter"
    check_crop(settings.crop, input_size or size)
    where = f"{'segment' if segmenter else 'classify'}.recipe.augment"
    augment = with_crop(build_augment(settings.augment, where), settings.crop)
    manifest_csv, stats_json = repacks[size]
    train_set, held_out, train_rows, held_rows = _siim_split(
        folds_csv, manifest_csv, stats_json, size, fold, segmenter, augment, input_size
    )
    positive = {"positive": train_rows["has_pneumothorax"].to_numpy() == 1} if segmenter else {}
    task = _task(kind, settings, device, **positive)
    if nih is not None:
        unlabelled_augment = with_crop(build_augment(settings.augment, where), plain(settings.crop))
        train_set = _second_round(
            task, model, train_set, nih, settings, size, stats_json, augment, unlabelled_augment
        )
    job = FitJob(model, train_set, held_out, task, meta)
    return job, held_rows


def _second_round(
    task: Task,
    model: nn.Module,
    siim: RepackedImages,
    nih: NihImages,
    settings: FitSettings,
    size: int,
    stats_json,
    augment,
    unlabelled_augment,
) -> RepackedImages | Joined:
    """A second round's training set and task: the fold's pseudo-labels after its SIIM images,
    woven into every batch at ``pseudo_share``; or the mean teacher on the unlabelled NIH
    candidates. NIH images are read at the segment size, resized to a stage's, and scaled with the
    SIIM statistics of the stage's size. The unlabelled images have no mask to place a crop by:
    ``unlabelled_augment`` cuts the stage's crop uniformly anywhere (`ptxseg.data.crops.plain`)."""
    mean, std = read_stats(stats_json, size)
    resize = size if size != nih.size else None
    if settings.mean_teacher is not None:
        manifest = read_manifest(nih.candidates_manifest)
        manifest = manifest[manifest["size"] == nih.size]
        unlabelled = RepackedImages(
            manifest["image_id"].tolist(),
            [Path(nih.candidates_manifest).parent / p for p in manifest["image"]],
            mean=mean,
            std=std,
            augment=unlabelled_augment,
            resize=resize,
        )
        task.consistency = MeanTeacher(
            model,
            unlabelled,
            settings.mean_teacher,
            settings.batch_size,
            settings.runtime.num_workers,
        )
        log.info("mean teacher on %d unlabelled NIH images", len(unlabelled))
        return siim
    if nih.labels_csv is None or settings.pseudo_share <= 0:
        return siim
    labelled = read_pseudo_labels(nih.labels_csv, nih.candidates_manifest, nih.size)
    if not labelled.image_ids:
        log.warning(
            "%s: no pseudo-label kept; the round trains on SIIM images only", nih.labels_csv
        )
        return siim
    pseudo = RepackedImages(
        labelled.image_ids,
        labelled.images,
        mean=mean,
        std=std,
        masks=labelled.masks,
        augment=augment,
        resize=resize,
    )
    task.mix = functools.partial(
        mixed_order,
        extra=len(pseudo),
        offset=len(siim),
        share=settings.pseudo_share,
        batch_size=settings.batch_size,
    )
    log.info(
        "%d pseudo-labelled NIH images beside %d SIIM images, %.2f of each batch",
        len(pseudo),
        len(siim),
        settings.pseudo_share,
    )
    return Joined([siim, pseudo])


def _stages_dir(state_path) -> Path:
    """Where the stages before the last keep their state and hand-over model: beside the resume
    state, outside the job's declared outputs (which Snakemake removes when a job fails)."""
    return Path(state_path).with_suffix(".stages")


def _stage_dir(state_path, index: int) -> Path:
    return _stages_dir(state_path) / f"stage{index}"


def _fit_stage(
    job: FitJob,
    settings: FitSettings,
    device: torch.device,
    folder: Path,
    stop_after_epoch: int | None,
) -> pd.DataFrame:
    """A stage before the last: trained (or resumed) in ``folder``; its best model on the
    held-out fold is loaded into the job's model for the next stage. A finished stage with the same
    settings is not trained again (its ``done.json`` records them)."""
    done = folder / "done.json"
    # As done.json holds it (tuples as lists), so the comparison and the record are the same value.
    fingerprint = json.loads(json.dumps({**settings.fingerprint(), **job.meta}, default=str))
    finished = _recorded(done) == fingerprint
    if finished:
        log.info("stage %s already trained in %s", job.meta.get("stage"), folder)
        history = pd.read_csv(folder / METRICS)
    else:
        history = _fit(job, settings, device, folder, folder / "state.pt", stop_after_epoch)
        if len(history) < settings.epochs:
            return history
    job.model.load_state_dict(checkpoint.load(model_file(folder, BEST))["model"])
    if not finished:
        atomic.write_json(done, fingerprint)
        remove_training_state(folder / "state.pt")
    return history


def _recorded(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _write_stage_metrics(path: Path, histories: list[pd.DataFrame]) -> None:
    """One metrics table over the stages: ``epoch`` counts on across them, ``stage_epoch`` within."""
    table = pd.concat(histories, ignore_index=True)
    table = table.rename(columns={"epoch": "stage_epoch"})
    table.insert(0, "epoch", range(1, len(table) + 1))
    atomic.write_csv(path, table)


def pretrain_nih(
    *,
    arch: str,
    nih_index: str | os.PathLike,
    manifest_csv: str | os.PathLike,
    stats_json: str | os.PathLike,
    size: int,
    settings: FitSettings,
    weights: str = "none",
    options: dict | None = None,
    weights_dir: str | None = None,
    out_dir: str | os.PathLike,
    state_path: str | os.PathLike,
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
    settings = settings.one_model()
    _check_size(arch, size)
    device = _start(settings)
    train_set, val_set = _nih_split(nih_index, manifest_csv, stats_json, size, findings, settings)
    built_with = _built_with(arch, options, settings)
    meta = dict(arch=arch, kind="nih", size=size, findings=findings, options=built_with)
    job = FitJob(
        mark_trained(_model(arch, len(findings), settings, weights, weights_dir, built_with), meta),
        train_set,
        val_set,
        _task("classifier", settings, device, names=findings),
        meta,
    )
    history = _fit(job, settings, device, Path(out_dir), state_path)
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
    atomic.write_json(Path(out_dir) / SUMMARY, summary)
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


def _nih_split(
    nih_index, manifest_csv, stats_json, size: int, findings: list[str], settings: FitSettings
) -> tuple[RepackedImages, RepackedImages]:
    """The NIH train and val splits of the index, as datasets of the repacked images."""
    index = pd.read_csv(
        nih_index, dtype={"image_id": str, "patient_id": str}, keep_default_na=False
    )
    manifest = read_manifest(manifest_csv).set_index("image_id")
    mean, std = read_stats(stats_json, size)
    augment = build_augment(settings.augment, "pretrain.recipe.augment")
    root = Path(manifest_csv).parent  # the manifest's paths are relative to its folder

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
    train = index[index["split"] == "train"].reset_index(drop=True)
    val = index[index["split"] == "val"].reset_index(drop=True)
    return dataset(train, True), dataset(val, False)
