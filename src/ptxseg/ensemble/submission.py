"""The cascade applied to the test set, written as a SIIM submission, and its validator.

Images are processed in chunks read from the per-fold prediction files (``ptxseg.io.maps``), so
memory stays flat in the number of test images; rows go to a temporary file that is renamed
only once it is complete and valid.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ptxseg.contracts.ensemble_spec import EnsembleSpec
from ptxseg.io import atomic, rle
from ptxseg.io.atomic import atomic_open
from ptxseg.io.maps import read_rows
from ptxseg.layout import Layout, fold_columns, head_source
from ptxseg.scoring.calibrator import Calibrator
from ptxseg.scoring.cascade import (
    architecture_map,
    binarise,
    blend_maps,
    folds_probability,
    gate_probability,
)

log = logging.getLogger(__name__)

HEADER = ["ImageId", "EncodedPixels"]


class SubmissionError(ValueError):
    """A submission that does not match the test set; the message lists every problem."""


@dataclass
class PredictionFiles:
    """The per-fold test predictions of every architecture, read a chunk of rows at a time."""

    segmenters: dict[str, list[Path]]  # arch -> fold<k> map files
    segmenter_ids: dict[str, Path]  # arch -> ids.csv
    classifiers: dict[str, Path]  # arch -> test CSV (image_id, fold0, ...)

    @classmethod
    def at(
        cls, layout: Layout, classify_archs: list[str], segment_archs: list[str], n_folds: int
    ) -> PredictionFiles:
        """Every architecture's test predictions, where ``layout`` puts them."""
        return cls(
            segmenters={
                a: [Path(layout.test_maps(a, k)) for k in range(n_folds)] for a in segment_archs
            },
            segmenter_ids={a: Path(layout.test_ids(a)) for a in segment_archs},
            classifiers={a: Path(layout.test_probabilities(a)) for a in classify_archs},
        )

    def open(self, image_ids: list[str]) -> tuple[dict, dict]:
        """(arch -> (map files, rows of ``image_ids``), image-level source -> fold mean)."""
        maps, by_fold = self._open(image_ids)
        return maps, {source: folds_probability(p) for source, p in by_fold.items()}

    def _open(self, image_ids: list[str]) -> tuple[dict, dict]:
        """As `open`, each image-level source's probabilities per fold, (images, folds)."""
        maps, probabilities = {}, {}
        for arch, files in self.segmenters.items():
            ids = pd.read_csv(self.segmenter_ids[arch], dtype={"image_id": str})
            position = {image_id: k for k, image_id in enumerate(ids["image_id"])}
            missing = [i for i in image_ids if i not in position]
            if missing:
                raise SubmissionError(
                    f"{self.segmenter_ids[arch]}: no prediction for {len(missing)} test "
                    f"image(s), e.g. {missing[0]}"
                )
            maps[arch] = (list(files), np.array([position[i] for i in image_ids]))
            heads = fold_columns(ids.columns)  # the classification head's, where it has one
            if heads:
                table = ids.set_index("image_id")
                probabilities[head_source(arch)] = table.loc[image_ids, heads].to_numpy()
        for arch, path in self.classifiers.items():
            table = pd.read_csv(path, dtype={"image_id": str}).set_index("image_id")
            folds = fold_columns(table.columns)
            probabilities[arch] = table.loc[image_ids, folds].to_numpy()
        return maps, probabilities

    def gate(self, image_ids: list[str], gate_weights: dict[str, float]) -> np.ndarray | None:
        """The gate's probability per image, as the cascade takes it (each source's members' then
        folds' mean, blended by ``gate_weights``); None without a gate."""
        if not gate_weights:
            return None
        return _gate(self.open(image_ids)[1], gate_weights)

    def gate_by_fold(self, image_ids: list[str], gate_weights: dict[str, float]) -> np.ndarray:
        """The gate's blended probability of each image by each fold's models, (images, folds)."""
        _, by_fold = self._open(image_ids)
        missing = [s for s in gate_weights if s not in by_fold]
        if missing:
            raise SubmissionError(f"no test probabilities for the gate's source(s) {missing}")
        weights = np.array(list(gate_weights.values()), dtype=np.float64)
        stacked = np.stack([by_fold[s] for s in gate_weights])  # (sources, images, folds)
        return np.tensordot(weights / weights.sum(), stacked, axes=1)


def _gate(probabilities: dict[str, np.ndarray], gate_weights: dict[str, float]) -> np.ndarray:
    """The gate's blend of the sources' probabilities `PredictionFiles.open` read."""
    missing = [a for a in gate_weights if a not in probabilities]
    if missing:
        raise SubmissionError(
            f"no test probabilities for the gate's source(s) {missing} (a segmenter head's "
            "are written by predict_segmenter beside its maps)"
        )
    return gate_probability([probabilities[a] for a in gate_weights], list(gate_weights.values()))


def cascade_rows(
    image_ids: list[str],
    shapes: list[tuple[int, int]],
    predictions: PredictionFiles,
    ensemble: EnsembleSpec,
    chunk: int = 32,
) -> Iterator[tuple[str, str]]:
    """(ImageId, EncodedPixels) per test image: blended, gated, binarised at the image's own size
    (`ptxseg.scoring.cascade`, as every path that draws a mask)."""
    cascade, seg_weights = ensemble.cascade, ensemble.segmenter_weights
    maps, probabilities = predictions.open(image_ids)  # every file read once
    gate = _gate(probabilities, ensemble.gate_weights) if ensemble.gate_weights else None
    archs = list(seg_weights)
    for start in range(0, len(image_ids), chunk):
        stop = min(start + chunk, len(image_ids))
        per_arch = []
        for arch in archs:
            files, rows = maps[arch]
            index = rows[start:stop]
            per_arch.append(architecture_map([read_rows(f, index) for f in files]))
        blended = blend_maps(per_arch, [seg_weights[a] for a in archs])
        for k in range(stop - start):
            i = start + k
            mask = binarise(
                blended[k],
                cascade,
                None if gate is None else float(gate[i]),
                out_shape=shapes[i],
            )
            yield image_ids[i], rle.encode(mask)


def write_submission(
    test_index: pd.DataFrame,
    predictions: PredictionFiles,
    ensemble: EnsembleSpec,
    out_csv: str | os.PathLike,
) -> dict:
    """Write ``out_csv`` for every test image of ``test_index`` (columns image_id, rows, columns)."""
    image_ids = test_index["image_id"].tolist()
    shapes = list(
        zip(test_index["rows"].astype(int), test_index["columns"].astype(int), strict=True)
    )
    positive = 0

    def check(path: Path) -> None:  # before the rename: an invalid file never lands
        validate_submission(path, test_index)

    with atomic_open(out_csv, "w", validate=check, newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        for image_id, encoded in cascade_rows(image_ids, shapes, predictions, ensemble):
            writer.writerow([image_id, encoded])
            positive += encoded != rle.EMPTY
    log.info("submission: %d images, %d with a mask -> %s", len(image_ids), positive, out_csv)
    return {"images": len(image_ids), "with_mask": positive}


def validate_submission(path: str | os.PathLike, test_index: pd.DataFrame) -> None:
    """Raise SubmissionError unless ``path`` has the exact header and one valid row per test image."""
    problems = []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != HEADER:
            problems.append(f"header is {header!r}, expected {','.join(HEADER)!r}")
        seen: dict[str, int] = {}
        shapes = {r.image_id: (int(r.rows), int(r.columns)) for r in test_index.itertuples()}
        for line, row in enumerate(reader, start=2):
            if len(row) != 2:
                problems.append(f"line {line}: {len(row)} fields, expected 2")
                continue
            image_id, encoded = row
            if image_id in seen:
                problems.append(f"line {line}: ImageId {image_id} already on line {seen[image_id]}")
                continue
            seen[image_id] = line
            if image_id not in shapes:
                problems.append(f"line {line}: ImageId {image_id} is not a test image")
                continue
            if not encoded.strip():
                problems.append(
                    f"line {line}: ImageId {image_id}: EncodedPixels is empty; "
                    f"an empty mask is {rle.EMPTY!r}"
                )
                continue
            height, width = shapes[image_id]
            try:
                rle.parse(encoded, height * width)
            except ValueError as error:
                problems.append(f"line {line}: ImageId {image_id}: {error}")
    missing = sorted(set(shapes) - set(seen))
    if missing:
        problems.append(f"{len(missing)} test image(s) missing, e.g. {', '.join(missing[:3])}")
    if problems:
        shown = problems[:20] + (
            [f"... and {len(problems) - 20} more"] if len(problems) > 20 else []
        )
        raise SubmissionError(f"{path}: invalid submission:\n  " + "\n  ".join(shown))


def write_details(
    test_index: pd.DataFrame,
    predictions: PredictionFiles,
    ensemble: EnsembleSpec,
    out_csv: str | os.PathLike,
) -> pd.DataFrame:
    """The submission's side table: per test image, the gate's probability (the fold mean, as the
    cascade uses it), calibrated by the ensemble's calibration (`scoring.calibration`), and its
    uncertainty: the standard deviation of the gate's probability over the fold models (each
    fold's own prediction is already averaged over its TTA passes). Empty columns without a gate."""
    image_ids = test_index["image_id"].tolist()
    table = pd.DataFrame({"ImageId": image_ids})
    gate = ensemble.gate_weights
    if gate:
        by_fold = predictions.gate_by_fold(image_ids, gate)
        probability = predictions.gate(image_ids, gate)
        calibrator = ensemble.calibration or Calibrator()
        table["probability"] = probability.round(6)
        table["calibrated_probability"] = calibrator.apply(probability).round(6)
        table["uncertainty"] = by_fold.std(axis=1).round(6)
    else:
        table["probability"] = table["calibrated_probability"] = table["uncertainty"] = np.nan
    atomic.write_csv(out_csv, table)
    return table
