"""Which unlabelled NIH images become pseudo-labels, and why: confident ones only, at a ratio of
positives to empty images, under a cap.

The first round's blend gives every NIH image an image-level probability (is there a
pneumothorax?) and a pixel confidence (the mean over the map of max(p, 1 - p): near 1 where every
pixel is clearly in or out). An image is a candidate positive when both its probability and its
confidence are high and its mask is not empty, a candidate empty image when its probability is low
and its confidence high; everything else is left out as uncertain. The kept set then holds
positives and empty images at ``positive_share`` (the 3rd place of SIIM-ACR pseudo-labelled at a
0.5 ratio), the most confident first, at most ``max_images`` in all. An NIH image that is a SIIM
image (the overlap match) never reaches this function: the caller passes only the others, and
`select` refuses any id it is told is a SIIM image, so the OOF scores cannot leak.

Plain pandas and numpy: the predictions are made elsewhere (``ptxseg.infer.pseudo_labels``), this
decides on their numbers, samples the candidates and reads the kept labels back for training.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ptxseg.io import atomic

KEPT_POSITIVE, KEPT_EMPTY = "positive", "empty"
# Why an image was left out, in the table's "why" column.
UNCERTAIN, OVER_RATIO, OVER_CAP = "uncertain", "over the positive share", "over the cap"


@dataclass(frozen=True)
class Bands:
    """The confidence bands of the two kinds of pseudo-label."""

    positive_min_probability: float = 0.9
    empty_max_probability: float = 0.05
    min_confidence: float = 0.95  # mean pixel confidence, for both kinds
    positive_share: float = 0.5  # positives among the kept images
    max_images: int | None = None  # None: no cap

    def __post_init__(self) -> None:
        if not 0 <= self.empty_max_probability < self.positive_min_probability <= 1:
            raise ValueError(
                "the empty band must lie below the positive band: empty_max_probability "
                f"{self.empty_max_probability} vs positive_min_probability "
                f"{self.positive_min_probability}"
            )
        if not 0 < self.positive_share < 1:
            raise ValueError(f"positive_share must be in (0, 1), got {self.positive_share}")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images must be at least 1 or None, got {self.max_images}")


def pixel_confidence(maps: np.ndarray) -> np.ndarray:
    """Per map (uint8 probabilities, (N, H, W)): the mean of max(p, 1 - p) over its pixels."""
    p = maps.reshape(len(maps), -1).astype(np.float32) / 255.0
    return np.maximum(p, 1.0 - p).mean(axis=1)


def select(candidates: pd.DataFrame, bands: Bands, siim_images: Iterable[str] = ()) -> pd.DataFrame:
    """The candidates' table with ``kept`` ('positive', 'empty' or '') and ``why``.

    ``candidates``: image_id, probability, confidence, mask_pixels (of the pseudo-mask). Images
    in ``siim_images`` are refused with an error: they must have been removed before prediction.
    """
    missing = {"image_id", "probability", "confidence", "mask_pixels"} - set(candidates)
    if missing:
        raise ValueError(f"pseudo-label candidates lack column(s) {sorted(missing)}")
    leaked = sorted(set(candidates["image_id"]) & set(siim_images))
    if leaked:
        raise ValueError(
            f"{len(leaked)} pseudo-label candidate(s) are SIIM images (e.g. {leaked[0]}): "
            "the NIH images matched to SIIM images must be left out before pseudo-labelling"
        )
    table = candidates.copy()
    confident = table["confidence"] >= bands.min_confidence
    positive = (
        confident
        & (table["probability"] >= bands.positive_min_probability)
        & (table["mask_pixels"] > 0)
    )
    empty = confident & (table["probability"] <= bands.empty_max_probability)
    table["kept"], table["why"] = "", UNCERTAIN
    # The most confident first: positives by probability, empty images by 1 - probability.
    # Stable sorts: ties keep the candidates' order, so reruns keep the same images.
    positives = (
        table[positive]
        .sort_values(["probability", "confidence"], ascending=False, kind="stable")
        .index
    )
    empties = (
        table[empty]
        .sort_values(["probability", "confidence"], ascending=[True, False], kind="stable")
        .index
    )
    kept = _counts(len(positives), len(empties), bands, capped=True)
    allowed = _counts(len(positives), len(empties), bands, capped=False)
    for order, label, why, n, n_uncapped in (
        (positives, KEPT_POSITIVE, "confident positive", kept[0], allowed[0]),
        (empties, KEPT_EMPTY, "confident empty", kept[1], allowed[1]),
    ):
        table.loc[order[:n], ["kept", "why"]] = [label, why]
        table.loc[order[n:n_uncapped], "why"] = OVER_CAP
        table.loc[order[n_uncapped:], "why"] = OVER_RATIO
    return table


def write_summary(
    path: str | os.PathLike,
    fold: int,
    table: pd.DataFrame,
    segmenters: dict[str, list],
    classifiers: dict[str, list],
) -> dict:
    """A fold's summary.json of `select`'s ``table``: candidates, kept positives and empty images,
    why the others were left out, and the models (architecture -> member files) that labelled it."""
    summary = {
        "fold": fold,
        "candidates": len(table),
        "positive": int((table["kept"] == KEPT_POSITIVE).sum()),
        "empty": int((table["kept"] == KEPT_EMPTY).sum()),
        "left_out": {
            str(k): int(v) for k, v in table.loc[table["kept"] == "", "why"].value_counts().items()
        },
        "segmenters": sorted(segmenters),
        "classifiers": sorted(classifiers),
        # The model files that labelled the fold (fold isolation is checked on these).
        "models": [
            str(p) for files in (segmenters, classifiers) for ps in files.values() for p in ps
        ],
    }
    atomic.write_json(path, summary)
    return summary


def _counts(positives: int, empties: int, bands: Bands, capped: bool) -> tuple[int, int]:
    """How many of each kind to keep: the most the positive share allows from what there is,
    then (``capped``) at most ``max_images`` in all, the share kept."""
    share = bands.positive_share
    # The largest total t with t * share <= positives and t * (1 - share) <= empties.
    total = int(np.floor(min(positives / share, empties / (1 - share)) + 1e-9))
    if capped and bands.max_images is not None:
        total = min(total, bands.max_images)
    n_pos = min(round(total * share), positives)
    return n_pos, min(total - n_pos, empties)


def sample_candidates(
    pretrain_index: str | os.PathLike,
    overlap_csv: str | os.PathLike,
    n: int | None,
    seed: int,
    out_csv: str | os.PathLike,
) -> pd.DataFrame:
    """The NIH images the first round predicts: a seeded sample of ``n`` (None: all) of the NIH
    index pretraining uses, which already lacks the NIH images matched to SIIM images; checked
    again against the overlap table, since one leaked image would carry a SIIM label into OOF."""
    index = pd.read_csv(pretrain_index, dtype={"image_id": str}, keep_default_na=False)
    siim = set(pd.read_csv(overlap_csv, dtype=str, keep_default_na=False)["nih_image_id"])
    leaked = sorted(set(index["image_id"]) & siim)
    if leaked:
        raise ValueError(
            f"{pretrain_index}: {len(leaked)} image(s) matched to SIIM images in {overlap_csv} "
            f"(e.g. {leaked[0]}); the pseudo-label candidates must come from the index without them"
        )
    if index.empty:
        raise ValueError(f"{pretrain_index}: no NIH image left to pseudo-label")
    if n is not None and n < len(index):
        index = index.sample(n=n, random_state=seed)
    index = index.sort_values("image_id").reset_index(drop=True)
    atomic.write_csv(out_csv, index)
    return index


@dataclass(frozen=True)
class PseudoLabelled:
    """The kept pseudo-labels of one fold, as a training set reads them."""

    image_ids: list[str]
    images: list[Path]
    masks: list[Path]


def read_pseudo_labels(
    labels_csv: str | os.PathLike, manifest_csv: str | os.PathLike, size: int
) -> PseudoLabelled:
    """The kept rows of a fold's labels.csv with their images (the candidates' repack at
    ``size``) and masks (paths relative to labels.csv)."""
    labels = pd.read_csv(labels_csv, dtype={"image_id": str}, keep_default_na=False)
    kept = labels[labels["kept"].isin([KEPT_POSITIVE, KEPT_EMPTY])]
    manifest = pd.read_csv(manifest_csv, dtype={"image_id": str}, keep_default_na=False)
    manifest = manifest[manifest["size"] == size].set_index("image_id")
    missing = sorted(set(kept["image_id"]) - set(manifest.index))
    if missing:
        raise ValueError(
            f"{labels_csv}: {len(missing)} kept image(s) have no {size}px image in "
            f"{manifest_csv} (e.g. {missing[0]})"
        )
    root, labels_root = Path(manifest_csv).parent, Path(labels_csv).parent
    return PseudoLabelled(
        kept["image_id"].tolist(),
        [root / p for p in manifest.loc[kept["image_id"], "image"]],
        [labels_root / p for p in kept["mask"]],
    )
