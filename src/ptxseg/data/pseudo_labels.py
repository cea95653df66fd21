"""Which unlabelled NIH images become pseudo-labels, and why: confident ones only, at a ratio of
positives to empty images, under a cap.

The first round's blend gives every NIH image an image-level probability (is there a
pneumothorax?) and a map. Confidence is measured where the label is decided, never over the whole
map, whose background would decide it (a map with 3 % of its pixels at 0.55 and the rest at 0
averages 0.957 in max(p, 1 - p)):

- a candidate positive must first be a positive of the run's cascade (``ptxseg.scoring``'s
  ``binarise``: gate ``positive_min_probability``, at least ``min_area`` pixels at ``top``, the
  mask every pixel at ``pixel_threshold``); its ``mask_pixels`` are that mask's. Then its
  ``region_confidence``, the mean of max(p, 1 - p) over the mask and a ring of ``border_pixels``
  around it, must reach ``min_confidence``: the region is sure of itself (a region at 0.55 scores
  0.55) and its edge is sharp (a map that fades slowly into the background scores low in the
  ring), while the background far from it does not count;
- a candidate empty image must have no pixel above ``empty_max_pixel`` (``max_pixel``, the map's
  highest probability): a faint region, however small against the background, is one.

Everything else is left out with its reason. The kept set then holds positives and empty images
at ``positive_share`` (the 3rd place of SIIM-ACR pseudo-labelled at a 0.5 ratio), the most
confident first, at most ``max_images`` in all. An NIH image that is a SIIM image (the overlap
match) never reaches this function: the caller passes only the others, and `select` refuses any
id it is told is a SIIM image, so the OOF scores cannot leak.

Plain pandas and numpy: the predictions and the cascade are run elsewhere
(``ptxseg.infer.pseudo_labels``), this measures their maps, decides on their numbers, samples the
candidates and reads the kept labels back for training.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ptxseg.io import atomic

KEPT_POSITIVE, KEPT_EMPTY = "positive", "empty"
# Why an image was left out, in the table's "why" column.
UNCERTAIN = "uncertain"  # its probability lies between the two bands
NO_MASK = "no mask from the cascade"  # positive band, fewer than min_area pixels at top
UNSURE_REGION = "unsure region"  # positive band, region and ring under min_confidence
NOT_EMPTY = "a pixel above empty_max_pixel"  # empty band, but a region (faint or small) in the map
OVER_RATIO, OVER_CAP = "over the positive share", "over the cap"

# The ring around a region whose pixels count in its confidence: 16 pixels of a 1024 x 1024 map
# (4 at 256), about the width of the edge a segmenter blurs; at least one pixel.
BORDER_1024 = 16
# Each candidate's measures, the columns `select` decides on.
MEASURES = ("probability", "mask_pixels", "region_confidence", "max_pixel")


@dataclass(frozen=True, kw_only=True)
class Bands:
    """The bands of the two kinds of pseudo-label and the cascade a positive must pass; the
    fields are the config's ``pseudo_labels`` keys of the same names."""

    positive_min_probability: float = 0.9  # also the cascade's gate
    empty_max_probability: float = 0.05
    min_confidence: float = 0.95  # a positive's region_confidence
    empty_max_pixel: float = 0.2  # an empty image's max_pixel
    top: float = 0.8  # the cascade's top threshold
    min_area: float = 2048.0  # pixels of a 1024 x 1024 image at ``top``
    pixel_threshold: float = 0.5  # the cascade's bottom threshold: a positive's mask
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

    @classmethod
    def from_config(cls, pseudo_labels: dict) -> Bands:
        """The bands of a validated config's ``pseudo_labels`` section (or the rule's params)."""
        return cls(**{f.name: pseudo_labels[f.name] for f in fields(cls)})


BAND_KEYS = tuple(f.name for f in fields(Bands))  # the pseudo_labels keys the labelling reads


def border_pixels(size: int) -> int:
    """The width of the ring around a region that its confidence covers, at a map's size."""
    return max(1, round(BORDER_1024 * size / 1024))


def region_confidence(probability_map: np.ndarray, mask: np.ndarray) -> float:
    """The mean of max(p, 1 - p) over ``mask`` and the ring of `border_pixels` around it
    (``probability_map`` uint8); NaN where the mask is empty."""
    if not mask.any():
        return float("nan")
    width = border_pixels(max(mask.shape))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    around = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
    p = probability_map[around].astype(np.float32) / 255.0
    return float(np.maximum(p, 1.0 - p).mean())


def max_pixel(maps: np.ndarray) -> np.ndarray:
    """Per map (uint8, (N, H, W)): its highest probability."""
    return maps.reshape(len(maps), -1).max(axis=1).astype(np.float32) / 255.0


def select(candidates: pd.DataFrame, bands: Bands, siim_images: Iterable[str] = ()) -> pd.DataFrame:
    """The candidates' table with ``kept`` ('positive', 'empty' or '') and ``why``.

    ``candidates``: image_id and the `MEASURES` (``mask_pixels``: the cascade's mask, 0 where the
    cascade drew none). Images in ``siim_images`` are refused with an error: they must have been
    removed before prediction.
    """
    missing = {"image_id", *MEASURES} - set(candidates)
    if missing:
        raise ValueError(f"pseudo-label candidates lack column(s) {sorted(missing)}")
    leaked = sorted(set(candidates["image_id"]) & set(siim_images))
    if leaked:
        raise ValueError(
            f"{len(leaked)} pseudo-label candidate(s) are SIIM images (e.g. {leaked[0]}): "
            "the NIH images matched to SIIM images must be left out before pseudo-labelling"
        )
    table = candidates.copy()
    table["kept"], table["why"] = "", UNCERTAIN
    in_positive_band = table["probability"] >= bands.positive_min_probability
    drawn = in_positive_band & (table["mask_pixels"] > 0)
    sure = table["region_confidence"].fillna(0) >= bands.min_confidence
    table.loc[in_positive_band & ~drawn, "why"] = NO_MASK
    table.loc[drawn & ~sure, "why"] = UNSURE_REGION
    positive = drawn & sure
    in_empty_band = table["probability"] <= bands.empty_max_probability
    clear = table["max_pixel"] <= bands.empty_max_pixel
    table.loc[in_empty_band & ~clear, "why"] = NOT_EMPTY
    empty = in_empty_band & clear
    # The most confident first: positives by probability, empty images by 1 - probability.
    # Stable sorts: ties keep the candidates' order, so reruns keep the same images.
    positives = (
        table[positive]
        .sort_values(["probability", "region_confidence"], ascending=False, kind="stable")
        .index
    )
    empties = (
        table[empty].sort_values(["probability", "max_pixel"], ascending=True, kind="stable").index
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
