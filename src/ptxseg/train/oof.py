"""Out-of-fold (OOF) predictions: each kept model of a fold job on the images that job held out.

Written apart from the training, by the job that predicts the architecture's test set (rules
``predict_classifier`` / ``predict_segmenter``, one job per architecture for every fold) or by an
ablation lever's prediction job: test-time augmentation (``train.tta``) is an inference choice, so
changing it reruns these predictions and no training. The searches that train and score a model
in one job (compound scaling, RandAugment) call the same function after training.

Every model is loaded from its kept file as the test-set prediction loads it
(``infer.test_set.load_member``) and predicted with the job's ``Runtime`` (its TTA, precision and
layout: ``Runtime.predict_batches``, the one prediction path of OOF and test maps). Outputs, in the
fold job's folder beside its models: a classifier's probabilities in ``oof.csv``, one column per
member; a segmenter's uint8 map files (``ptxseg.io.maps``; one per kept member: best, SWA, EMA,
snapshots) in the order of ``oof_ids.csv``, which holds the classification heads' probabilities
where the segmenter has a head; and ``oof_summary.json``: each member's metrics on the held-out
fold and the TTA passes the models took.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ptxseg.data.datasets import RepackedImages
from ptxseg.infer.test_set import load_member
from ptxseg.io import atomic, maps
from ptxseg.layout import (
    OOF_CSV,
    OOF_IDS,
    OOF_SUMMARY,
    model_member,
    oof_maps_file,
    probability_column,
)
from ptxseg.runtime.device import pick_device
from ptxseg.runtime.options import Runtime
from ptxseg.runtime.predict import model_passes, quantise_probabilities, tta_passes
from ptxseg.train.metrics import SegmentationScores, classification_metrics
from ptxseg.train.run import KINDS, held_out_split

log = logging.getLogger(__name__)

# Images per prediction batch (no gradients held), as the test-set prediction of the same models.
BATCH_SIZE = {"classifier": 32, "segmenter": 16}


def predict_oof(
    *,
    kind: str,
    fold_models: dict[int, list[str | os.PathLike]],
    folds_csv: str | os.PathLike,
    manifest_csv: str | os.PathLike,
    stats_json: str | os.PathLike,
    size: int,
    runtime: Runtime,
    input_size: int | None = None,
) -> dict[int, dict]:
    """Every fold's OOF predictions (``write_fold_oof``), each in the folder of its models;
    fold -> its ``oof_summary.json``."""
    summaries = {}
    for fold, models in sorted(fold_models.items()):
        summaries[fold] = write_fold_oof(
            kind=kind,
            fold=fold,
            models=models,
            folds_csv=folds_csv,
            manifest_csv=manifest_csv,
            stats_json=stats_json,
            size=size,
            runtime=runtime,
            input_size=input_size,
        )
    return summaries


def write_fold_oof(
    *,
    kind: str,
    fold: int,
    models: list[str | os.PathLike],
    folds_csv: str | os.PathLike,
    manifest_csv: str | os.PathLike,
    stats_json: str | os.PathLike,
    size: int,
    runtime: Runtime,
    input_size: int | None = None,
) -> dict:
    """Each kept model's (``models``: files ``model_<member>.pt`` of one fold job's folder, where
    the OOF files go) predictions on the fold the job held out, at the repacked ``size``
    (``input_size``: the side a compound-scaled model reads, as it trained); returns the summary
    (``oof_summary.json``): fold, members' metrics, TTA passes."""
    if kind not in KINDS:
        raise ValueError(f"kind must be 'classifier' or 'segmenter', got {kind!r}")
    members = {model_member(path): Path(path) for path in models}
    if None in members:
        raise ValueError(f"not kept model files (model_<member>.pt): {[str(p) for p in models]}")
    folders = {path.parent for path in members.values()}
    if len(folders) != 1:
        raise ValueError(f"fold {fold}: models from several folders: {sorted(folders)}")
    out_dir = folders.pop()
    segmenter = kind == "segmenter"
    device = pick_device(runtime.device)
    dataset, held_rows = held_out_split(
        folds_csv, manifest_csv, stats_json, size, fold, segmenter, input_size
    )
    oof = held_rows[["image_id", "has_pneumothorax"]].copy()
    labels = held_rows["has_pneumothorax"]
    metrics, passes = {}, None
    for name, path in members.items():
        model = load_member(path, device)
        passes = model_passes(model, tta_passes(runtime.tta))  # the same for every member
        batches = runtime.predict_batches(model, dataset, device, BATCH_SIZE[kind])
        if segmenter:
            maps_path = Path(oof_maps_file(out_dir, name))
            head = _write_maps(batches, dataset, maps_path)
            metrics[name] = score_maps(maps_path, dataset)
            if head is not None:  # the classification head's image probability
                oof[probability_column(name)] = head
                metrics[name]["head_auc"] = classification_metrics(labels, head)["auc"]
        else:
            probability = _probabilities(batches, len(dataset))
            oof[probability_column(name)] = probability
            metrics[name] = classification_metrics(labels, probability)
        del model
    atomic.write_csv(out_dir / (OOF_IDS if segmenter else OOF_CSV), oof)
    summary = {
        "kind": kind,
        "fold": fold,
        "size": size,
        "images_held_out": len(dataset),
        "members": metrics,
        # The TTA passes the OOF (and test) predictions took: those the training covered.
        "tta": [list(p) for p in passes],
    }
    atomic.write_json(out_dir / OOF_SUMMARY, summary)
    _log_summary(out_dir, summary)
    return summary


def _probabilities(batches, n: int) -> np.ndarray:
    probabilities = np.zeros(n, dtype=np.float32)
    for indices, p, _ in batches:
        probabilities[indices] = p[:, 0]
    return probabilities


def _write_maps(batches, dataset: RepackedImages, path: Path) -> np.ndarray | None:
    """uint8 maps streamed into ``path``, in the dataset's order; the classification head's
    probability per image where the model has a head (else None)."""
    first = tuple(dataset[0]["image"].shape[-2:])
    heads = None
    with maps.create(path, (len(dataset), *first)) as out:
        for indices, p, head in batches:
            out[indices] = quantise_probabilities(p)
            if head is not None:
                heads = np.zeros(len(dataset), dtype=np.float32) if heads is None else heads
                heads[indices] = head
    return heads


def score_maps(maps_path: str | os.PathLike, dataset: RepackedImages, chunk: int = 64) -> dict:
    """Metrics of stored uint8 maps against the dataset's masks at a threshold of one half, chunk
    by chunk. (Thresholds tuned per model are the ensemble stage's: its scores.csv.)"""
    scores = SegmentationScores()
    with maps.MapFile(maps_path) as stored:
        for start, chunk_maps in stored.chunks(chunk):
            truth = np.stack([dataset.truth_mask(i) for i in range(start, start + len(chunk_maps))])
            scores.add(chunk_maps >= 128, truth)
    return scores.result()


def _log_summary(out_dir: Path, summary: dict) -> None:
    for name, metrics in summary["members"].items():
        text = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        log.info("%s, OOF of %s: %s", out_dir, name, text)
