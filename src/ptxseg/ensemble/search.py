"""The ensemble, chosen on out-of-fold (OOF) predictions only.

1. Classifiers: each architecture's OOF probability is the mean of its kept members; the
   architectures' weights maximise the OOF ROC AUC over a simplex grid.
2. Segmenters: likewise per architecture (members averaged into one map per image); the weights
   maximise the OOF competition score, each candidate blend scored with its own best triplet
   (maps downsized to ``search_size`` for speed).
3. The cascade: with both blends fixed, the classifier gate and the triplet thresholds are
   searched together on the full-size OOF maps.

Every single model (architecture x fold x member), every architecture's OOF assembled over its
folds, the segmentation blend and the cascade are scored, with the all-empty baseline beside them.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from ptxseg.data.repack import read_manifest, resize_image, resize_mask
from ptxseg.ensemble.blend import blend_uint8, search_weights
from ptxseg.ensemble.thresholds import (
    Cascade,
    Histograms,
    best_cascade,
    cascade_scores,
    image_outcomes,
)
from ptxseg.io import atomic
from ptxseg.io.png import read_grey

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grid:
    """Candidate thresholds; ``min_areas`` in pixels of a 1024 x 1024 image."""

    gates: tuple[float, ...]
    tops: tuple[float, ...]
    min_areas: tuple[float, ...]
    bottoms: tuple[float, ...]

    @classmethod
    def from_config(cls, grid: dict) -> Grid:
        return cls(
            tuple(grid["gate"]), tuple(grid["top"]), tuple(grid["min_area"]), tuple(grid["bottom"])
        )


DEFAULT_CASCADE = Cascade(gate=0.0, top=0.5, min_area=0.0, bottom=0.5)


@dataclass
class SegmenterOof:
    """One architecture's OOF maps: per fold, the image ids and the kept members' map files."""

    arch: str
    folds: dict[int, tuple[list[str], dict[str, Path]]]

    def fold_maps(self, fold: int, members: list[str]) -> np.ndarray:
        """The members' mean map of every image of ``fold``, as uint8."""
        _, files = self.folds[fold]
        missing = [m for m in members if m not in files]
        if missing:
            raise ValueError(
                f"{self.arch} fold {fold}: no OOF maps for member(s) {missing}; "
                f"kept: {sorted(files)}"
            )
        return blend_uint8(
            [np.load(files[m], mmap_mode="r") for m in members], [1.0] * len(members)
        )

    def member_maps(self, fold: int, member: str) -> np.ndarray:
        return np.load(self.folds[fold][1][member], mmap_mode="r")


def segmenter_oof(arch: str, fold_dirs: dict[int, str | os.PathLike]) -> SegmenterOof:
    folds = {}
    for fold, directory in fold_dirs.items():
        directory = Path(directory)
        ids = pd.read_csv(directory / "oof_ids.csv", dtype={"image_id": str})["image_id"].tolist()
        files = {p.stem[4:]: p for p in sorted(directory.glob("oof_*.npy"))}
        folds[fold] = (ids, files)
    return SegmenterOof(arch, folds)


def classifier_oof(fold_csvs: dict[int, str | os.PathLike], members: list[str]) -> pd.DataFrame:
    """image_id, fold, label and the members' mean probability, over every fold."""
    frames = []
    for fold, path in fold_csvs.items():
        table = pd.read_csv(path, dtype={"image_id": str})
        missing = [m for m in members if f"prob_{m}" not in table]
        if missing:
            raise ValueError(f"{path}: no OOF column for member(s) {missing}")
        frame = table[["image_id", "has_pneumothorax"]].copy()
        frame["fold"] = fold
        frame["probability"] = table[[f"prob_{m}" for m in members]].mean(axis=1)
        for m in [c[5:] for c in table.columns if c.startswith("prob_")]:
            frame[f"prob_{m}"] = table[f"prob_{m}"]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _auc(labels, scores) -> float:
    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else float("nan")


class TruthMasks:
    """True masks of the OOF images at the segmenters' size, read once from the repacked PNGs."""

    def __init__(
        self, manifest_csv: str | os.PathLike, repack_root: str | os.PathLike, size: int
    ) -> None:
        manifest = read_manifest(manifest_csv)
        rows = manifest[(manifest["size"] == size) & (manifest["split"] == "train")]
        self.paths = dict(zip(rows["image_id"], rows["mask"], strict=True))
        self.root = Path(repack_root)

    def stack(self, image_ids: list[str]) -> np.ndarray:
        return np.stack([read_grey(self.root / self.paths[i]) > 127 for i in image_ids])


def run_search(
    *,
    classifiers: dict[str, dict[int, str]],
    segmenters: dict[str, dict[int, str]],
    members: dict[str, list[str]],
    manifest_csv: str | os.PathLike,
    repack_root: str | os.PathLike,
    size: int,
    grid: Grid,
    weight_step: float = 0.1,
    search_size: int = 256,
    out_json: str | os.PathLike,
    out_scores: str | os.PathLike,
    out_grid: str | os.PathLike,
    out_images: str | os.PathLike | None = None,
    preprocessing: dict | None = None,
) -> dict:
    """Choose weights and thresholds on OOF predictions; write them and the score table.

    ``classifiers``/``segmenters``: architecture -> fold -> OOF file (classifier CSV) or folder.
    ``members``: which kept models of each kind enter the ensemble ('classify', 'segment').
    """
    scores: list[dict] = []
    seg = {arch: segmenter_oof(arch, dirs) for arch, dirs in segmenters.items()}
    archs = list(seg)
    folds = sorted(next(iter(seg.values())).folds)
    for arch in archs[1:]:
        for fold in folds:
            if seg[arch].folds[fold][0] != seg[archs[0]].folds[fold][0]:
                raise ValueError(f"OOF image order of {arch} fold {fold} differs from {archs[0]}'s")
    ids = [i for fold in folds for i in seg[archs[0]].folds[fold][0]]
    truth_masks = TruthMasks(manifest_csv, repack_root, size)

    # 1. classifiers
    cls = {
        arch: classifier_oof(files, members["classify"]).set_index("image_id").loc[ids]
        for arch, files in classifiers.items()
    }
    labels = next(iter(cls.values()))["has_pneumothorax"].to_numpy() if cls else None
    cls_weights, cls_probability = {}, None
    if cls:
        for arch, table in cls.items():
            for fold in sorted(set(table["fold"])):
                part = table[table["fold"] == fold]
                for member in [c[5:] for c in table.columns if c.startswith("prob_")]:
                    scores.append(
                        {
                            "kind": "classifier",
                            "level": "single",
                            "arch": arch,
                            "fold": fold,
                            "member": member,
                            "metric": "auc",
                            "score": _auc(part["has_pneumothorax"], part[f"prob_{member}"]),
                        }
                    )
            scores.append(
                {
                    "kind": "classifier",
                    "level": "architecture",
                    "arch": arch,
                    "metric": "auc",
                    "score": _auc(labels, table["probability"]),
                }
            )
        matrix = np.stack([cls[a]["probability"].to_numpy() for a in cls], axis=1)
        weights, best_auc, _ = search_weights(
            len(cls), lambda w: np.nan_to_num(_auc(labels, matrix @ w), nan=-1), weight_step
        )
        cls_weights = dict(zip(cls, map(float, weights), strict=True))
        cls_probability = matrix @ weights
        scores.append({"kind": "classifier", "level": "blend", "metric": "auc", "score": best_auc})

    # 2. segmenters: single models and architectures, then the blend weights at search size
    small = min(search_size, size)
    per_arch_small, truth_small, truth_full_hist = (
        {a: [] for a in archs},
        [],
        {a: [] for a in archs},
    )
    tops, areas, bottoms = list(grid.tops), list(grid.min_areas), list(grid.bottoms)
    for fold in folds:
        fold_ids = seg[archs[0]].folds[fold][0]
        truth = truth_masks.stack(fold_ids)
        truth_small.append(np.stack([resize_mask(t, small) > 0 for t in truth]))
        for arch in archs:
            for member in sorted(seg[arch].folds[fold][1]):
                h = Histograms.of(seg[arch].member_maps(fold, member), truth)
                scores += _segmenter_rows(
                    "single", h, tops, areas, bottoms, arch=arch, fold=fold, member=member
                )
            maps = seg[arch].fold_maps(fold, members["segment"])
            truth_full_hist[arch].append(Histograms.of(maps, truth))
            per_arch_small[arch].append(np.stack([resize_image(m, small) for m in maps]))
    for arch in archs:
        scores += _segmenter_rows(
            "architecture",
            Histograms.concat(truth_full_hist[arch]),
            tops,
            areas,
            bottoms,
            arch=arch,
        )
    stacks = [np.concatenate(per_arch_small[a]) for a in archs]
    truth_small_all = np.concatenate(truth_small)

    def blend_score(weights: np.ndarray) -> float:
        h = Histograms.of(blend_uint8(stacks, weights), truth_small_all)
        return float(cascade_scores(h, tops, areas, bottoms).max())

    seg_weights, _, tried = search_weights(len(archs), blend_score, weight_step)
    log.info(
        "segmenter blend weights %s (searched at %dpx over %d points)",
        dict(zip(archs, seg_weights, strict=True)),
        small,
        len(tried),
    )

    # 3. the cascade on the full-size OOF maps of the chosen blend
    parts = []
    for fold in folds:
        fold_ids = seg[archs[0]].folds[fold][0]
        blended = blend_uint8(
            [seg[a].fold_maps(fold, members["segment"]) for a in archs], seg_weights
        )
        parts.append(Histograms.of(blended, truth_masks.stack(fold_ids)))
    blend_hist = Histograms.concat(parts)
    scores += _segmenter_rows("blend", blend_hist, tops, areas, bottoms)
    gates = list(grid.gates) if cls_probability is not None else [0.0]
    table = cascade_scores(blend_hist, tops, areas, bottoms, gates, cls_probability)
    cascade, cascade_score = best_cascade(table, tops, areas, bottoms, gates)
    all_empty = float((blend_hist.inside.sum(1) == 0).mean())
    scores.append(
        {
            "kind": "segmenter",
            "level": "cascade",
            "metric": "competition",
            "score": cascade_score,
            **{f"cascade_{k}": v for k, v in cascade.as_dict().items()},
        }
    )
    scores.append(
        {"kind": "segmenter", "level": "all_empty", "metric": "competition", "score": all_empty}
    )

    result = {
        "classifier_weights": cls_weights,
        "segmenter_weights": dict(zip(archs, map(float, seg_weights), strict=True)),
        "members": members,
        "cascade": cascade.as_dict(),
        "segmenter_size": size,
        "preprocessing": preprocessing or {},
        "oof": {
            "images": len(ids),
            "cascade": cascade_score,
            "all_empty": all_empty,
            "blend_default": _score(blend_hist, DEFAULT_CASCADE),
            "best_architecture": max(
                r["score"]
                for r in scores
                if r["level"] == "architecture"
                and r["kind"] == "segmenter"
                and r["metric"] == "competition_tuned"
            ),
        },
    }
    atomic.write_json(out_json, result)
    atomic.write_csv(out_scores, pd.DataFrame(scores))
    _write_grid(out_grid, table, gates, tops, areas, bottoms)
    if out_images is not None:
        outcomes = image_outcomes(blend_hist, cascade, cls_probability)
        fold_of = [fold for fold in folds for _ in seg[archs[0]].folds[fold][0]]
        atomic.write_csv(
            out_images,
            pd.DataFrame(
                {
                    "image_id": ids,
                    "fold": fold_of,
                    "classifier_probability": cls_probability
                    if cls_probability is not None
                    else np.nan,
                    **outcomes,
                }
            ),
        )
    log.info(
        "OOF cascade %.4f (all-empty %.4f, best architecture %.4f) with %s",
        cascade_score,
        all_empty,
        result["oof"]["best_architecture"],
        cascade,
    )
    return result


def preprocessing(
    repack: dict,
    stats_json: str | os.PathLike,
    segment_size: int,
    classify_size: int,
    n_folds: int,
    tta: list[str],
) -> dict:
    """What `ptxseg predict` must repeat on a new image: normalisation, sizes, statistics, TTA."""
    return {
        "normalisation": {
            "method": repack["normalisation"],
            "clip_limit": repack["clahe_clip_limit"],
            "tile_grid": repack["clahe_tile_grid"],
        },
        "stats": json.loads(Path(stats_json).read_text()),
        "segment_size": segment_size,
        "classify_size": classify_size,
        "n_folds": n_folds,
        "tta": list(tta),
    }


def _score(h: Histograms, cascade: Cascade, classifier: np.ndarray | None = None) -> float:
    return float(
        cascade_scores(
            h, [cascade.top], [cascade.min_area], [cascade.bottom], [cascade.gate], classifier
        )[0, 0, 0, 0]
    )


def _segmenter_rows(level: str, h: Histograms, tops, areas, bottoms, **where) -> list[dict]:
    """Two rows: the score at the default binarisation (0.5, no area) and with its own best triplet."""
    tuned, tuned_score = best_cascade(cascade_scores(h, tops, areas, bottoms), tops, areas, bottoms)
    base = {"kind": "segmenter", "level": level, **where, "images": len(h)}
    return [
        {**base, "metric": "competition_default", "score": _score(h, DEFAULT_CASCADE)},
        {
            **base,
            "metric": "competition_tuned",
            "score": tuned_score,
            **{f"cascade_{k}": v for k, v in tuned.as_dict().items()},
        },
    ]


def _write_grid(path, table: np.ndarray, gates, tops, areas, bottoms) -> None:
    g, t, a, b = np.meshgrid(gates, tops, areas, bottoms, indexing="ij")
    atomic.write_csv(
        path,
        pd.DataFrame(
            {
                "gate": g.ravel(),
                "top": t.ravel(),
                "min_area": a.ravel(),
                "bottom": b.ravel(),
                "score": table.ravel(),
            }
        ),
    )
