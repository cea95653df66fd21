"""Pseudo-labels of one fold: that fold's first-round models label the NIH candidates.

Fold k's second round must learn only from labels that fold k's held-out SIIM images did not shape:
its own first-round models never saw them, another fold's did. So every segmenter of fold k (each
architecture's kept members averaged, with TTA, as the test maps are made) is blended with equal
weights, and the image probability is the equal-weight mean of fold k's image-level sources (its
classifiers and its segmenters' heads), each step the cascade's own (``ptxseg.scoring.cascade``,
as the submission and ``ptxseg predict`` take them). Equal weights, not the ensemble's: those are searched on
every fold's OOF predictions, fold k's held-out images included (and the search comes after the
second round in the DAG). Without any image-level source the map's maximum stands in.

A positive's mask is the cascade's (``ptxseg.scoring.cascade.binarise``, the function the
submission and ``ptxseg predict`` run), with the thresholds of the config's ``pseudo_labels`` keys:
gate ``positive_min_probability``, ``top``, ``min_area``, bottom ``pixel_threshold``. Not the
ensemble's searched cascade: ``ensemble.json`` is fitted on every fold's OOF predictions, this
fold's held-out images included, and it comes after the second round in the DAG (a cycle). The
measures each image is judged on are ``ptxseg.data.pseudo_labels``'s.

Every model is loaded once; each batch of candidates goes through all of them, so memory is flat
in the number of candidates and only the positive candidates' masks are written.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ptxseg.data.datasets import RepackedImages
from ptxseg.data.pseudo_labels import (
    KEPT_EMPTY,
    KEPT_POSITIVE,
    Bands,
    max_pixel,
    region_confidence,
    select,
    write_summary,
)
from ptxseg.data.repack import read_manifest, read_stats
from ptxseg.infer.test_set import load_member
from ptxseg.io import atomic
from ptxseg.io.png import write_png
from ptxseg.parallel import progress
from ptxseg.runtime.device import pick_device
from ptxseg.runtime.options import Runtime
from ptxseg.runtime.predict import ordered_batches, tta_passes, tta_predict
from ptxseg.scoring.cascade import (
    Cascade,
    MemberSum,
    ProbabilitySum,
    architecture_map,
    binarise,
    blend_maps,
    gate_probability,
    quantise_probabilities,
)

log = logging.getLogger(__name__)

EMPTY_MASK = "empty.png"  # one all-zero mask that every kept empty image points to


def _dataset(manifest, root: Path, size: int, stats_json, resize: int) -> RepackedImages:
    mean, std = read_stats(stats_json, resize)
    return RepackedImages(
        manifest.index.tolist(),
        [root / p for p in manifest["image"]],
        mean=mean,
        std=std,
        resize=resize if resize != size else None,
    )


def _fold_outputs(
    models: Sequence[torch.nn.Module], images: torch.Tensor, passes, device, runtime: Runtime
) -> tuple[np.ndarray, np.ndarray | None]:
    """One architecture's members of the fold on a batch, by the cascade's steps: a segmenter's
    uint8 fold map (B, H, W) and its head's mean (None: no head), or a classifier's mean
    probability (B,) and None."""
    running, heads = None, None
    for model in models:
        p, head = tta_predict(model, images, passes, device, runtime.amp, runtime.channels_last)
        p = p.float().cpu().numpy()
        if p.ndim == 3:
            running = MemberSum(p.shape) if running is None else running
            running.add(quantise_probabilities(p))
        else:
            running = ProbabilitySum(len(p)) if running is None else running
            running.add(p[:, 0])
        running.next_member()
        if head is not None:
            heads = ProbabilitySum(len(head)) if heads is None else heads
            heads.add(head.float().cpu().numpy())
            heads.next_member()
    return running.mean(), (None if heads is None else heads.mean())


@torch.no_grad()
def _predict(
    segmenters: dict[str, list[torch.nn.Module]],
    classifiers: dict[str, list[torch.nn.Module]],
    segment_set: RepackedImages,
    classify_set: RepackedImages | None,
    runtime: Runtime,
    device: torch.device,
    batch_size: int,
    masks_dir: Path,
    bands: Bands,
) -> pd.DataFrame:
    passes = tta_passes(runtime.tta)
    log.info(
        "TTA passes (pseudo_labels.tta; each model takes those its training covered): %s", passes
    )
    n = len(segment_set)
    probability = np.full(n, np.nan, dtype=np.float32)
    confidence = np.full(n, np.nan, dtype=np.float32)
    highest = np.zeros(n, dtype=np.float32)
    pixels = np.zeros(n, dtype=np.int64)
    # Image-level sources per candidate: the classifiers' (at their size), then the heads'.
    sources = [np.zeros(n, dtype=np.float32) for _ in classifiers]
    if classify_set is not None:  # each batch read once, through every classifier
        for batch in ordered_batches(classify_set, batch_size, runtime.num_workers, device):
            images, index = batch["image"].to(device), batch["index"].numpy()
            for column, models in zip(sources, classifiers.values(), strict=True):
                column[index] = _fold_outputs(models, images, passes, device, runtime)[0]
    else:
        sources = []
    image_sources = np.zeros(n, dtype=np.int64)
    batches = ordered_batches(segment_set, batch_size, runtime.num_workers, device)
    for batch in progress(batches, len(batches), "pseudo-labels"):
        images, index = batch["image"].to(device), batch["index"].numpy()
        fold_maps, heads = [], []
        for models in segmenters.values():
            fold_map, head = _fold_outputs(models, images, passes, device, runtime)
            fold_maps.append(architecture_map([fold_map]))  # this fold's models only
            if head is not None:
                heads.append(head)
        maps = blend_maps(fold_maps, [1.0] * len(fold_maps))
        batch_sources = [column[index] for column in sources] + heads
        image_sources[index] = len(batch_sources)
        gate = (
            gate_probability(batch_sources, [1.0] * len(batch_sources))
            if batch_sources
            else maps.reshape(len(maps), -1).max(axis=1) / np.float32(255)
        )
        for k, i in enumerate(index):
            probability[i] = gate[k]
            mask, measures = measure(maps[k], float(probability[i]), bands)
            pixels[i], confidence[i] = measures["mask_pixels"], measures["region_confidence"]
            highest[i] = measures["max_pixel"]
            if pixels[i] > 0 and confidence[i] >= bands.min_confidence:
                # a candidate positive: its mask is kept until the selection decides
                write_png(
                    masks_dir / f"{segment_set.image_ids[i]}.png", mask.astype(np.uint8) * 255
                )
    return pd.DataFrame(
        {
            "image_id": segment_set.image_ids,
            "probability": probability.round(6),
            "mask_pixels": pixels,
            "region_confidence": confidence.round(6),
            "max_pixel": highest.round(6),
            "image_sources": image_sources,
        }
    )


def pseudo_label_cascade(bands: Bands) -> Cascade:
    """The cascade a pseudo-positive must pass: the bands' gate and triplet thresholds."""
    return Cascade(
        gate=bands.positive_min_probability,
        top=bands.top,
        min_area=bands.min_area,
        bottom=bands.pixel_threshold,
    )


def measure(
    probability_map: np.ndarray, probability: float, bands: Bands
) -> tuple[np.ndarray, dict]:
    """One candidate's pseudo-mask (the cascade's, empty where it draws none) and the measures
    `select` decides on (``probability_map`` uint8, ``probability`` the image's)."""
    mask = binarise(probability_map, pseudo_label_cascade(bands), probability)
    return mask, {
        "probability": probability,
        "mask_pixels": int(mask.sum()),
        "region_confidence": region_confidence(probability_map, mask),
        "max_pixel": float(max_pixel(probability_map[None])[0]),
    }


def pseudo_label_fold(
    *,
    fold: int,
    segmenters: dict[str, list[str | os.PathLike]],
    classifiers: dict[str, list[str | os.PathLike]],
    candidates_manifest: str | os.PathLike,
    segment_stats: str | os.PathLike,
    classify_stats: str | os.PathLike | None,
    segment_size: int,
    classify_size: int,
    bands: Bands,
    siim_images: Sequence[str],
    labels_csv: str | os.PathLike,
    summary_json: str | os.PathLike,
    runtime: Runtime | None = None,
    batch_size: int = 16,
) -> dict:
    """Label fold ``fold``'s NIH candidates with its first-round models (``segmenters`` and
    ``classifiers``: architecture -> that fold's kept member files); write labels.csv (every
    candidate: probability, mask_pixels, region_confidence, max_pixel, image_sources, kept, why,
    mask) with the kept masks in
    ``masks/`` beside it, and a summary of the counts."""
    if not segmenters:
        raise ValueError(f"fold {fold}: no first-round segmenter to pseudo-label with")
    runtime = runtime or Runtime()
    torch.set_num_threads(max(1, runtime.threads))
    device = pick_device(runtime.device)
    manifest = read_manifest(candidates_manifest)
    manifest = manifest[manifest["size"] == segment_size].set_index("image_id").sort_index()
    if manifest.empty:
        raise ValueError(f"{candidates_manifest}: no candidate image at {segment_size}px")
    root = Path(candidates_manifest).parent
    # Scaled with the SIIM statistics the models were trained with.
    segment_set = _dataset(manifest, root, segment_size, segment_stats, segment_size)
    classify_set = (
        _dataset(manifest, root, segment_size, classify_stats, classify_size)
        if classifiers
        else None
    )
    out_dir = Path(labels_csv).parent
    masks_dir = out_dir / "masks"
    masks_dir.mkdir(parents=True, exist_ok=True)
    for stale in masks_dir.glob("*.png"):  # a rerun starts from no masks
        stale.unlink()

    def load(files: dict) -> dict[str, list[torch.nn.Module]]:
        return {a: [load_member(f, device).eval() for f in paths] for a, paths in files.items()}

    candidates = _predict(
        load(segmenters),
        load(classifiers),
        segment_set,
        classify_set,
        runtime,
        device,
        batch_size,
        masks_dir,
        bands,
    )
    table = select(candidates, bands, siim_images)
    table["mask"] = ""
    positive, empty = table["kept"] == KEPT_POSITIVE, table["kept"] == KEPT_EMPTY
    table.loc[positive, "mask"] = "masks/" + table.loc[positive, "image_id"] + ".png"
    table.loc[empty, "mask"] = f"masks/{EMPTY_MASK}"
    kept_masks = set(table.loc[positive, "mask"])
    for path in masks_dir.glob("*.png"):  # candidate positives the selection left out
        if f"masks/{path.name}" not in kept_masks:
            path.unlink()
    write_png(masks_dir / EMPTY_MASK, np.zeros((segment_size, segment_size), dtype=np.uint8))
    atomic.write_csv(labels_csv, table)
    summary = write_summary(summary_json, fold, table, segmenters, classifiers)
    log.info(
        "fold %d: %d NIH candidates -> %d pseudo-positives, %d pseudo-empty (%s left out)",
        fold,
        len(table),
        summary["positive"],
        summary["empty"],
        ", ".join(f"{v} {k}" for k, v in summary["left_out"].items()) or "none",
    )
    return summary
