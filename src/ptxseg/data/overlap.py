"""The NIH ChestX-ray14 images that are also SIIM-ACR images, found by content.

The SIIM-ACR radiographs are NIH ChestX-ray14 images (Filice et al., J Digit Imaging 2020), re-encoded
as JPEG-baseline DICOMs under new names; and 'Pneumothorax' is one of the 14 NIH labels. A classifier
pretrained on every NIH image would have seen the label of SIIM images that later form its held-out
fold, or the test set. So pretraining leaves out every NIH image whose content matches a SIIM image.

A *fingerprint* is the decoded grey image (before any histogram normalisation) reduced by area
averaging to 32 x 32 grey levels, kept as float16 (2 KB an image). The repack computes it, as it
decodes every image anyway. Two fingerprints are compared after standardising each to zero mean and
unit standard deviation (so a linear change of grey levels does not matter), by the root mean square
(RMS) of their difference, in units of the image's standard deviation.

Matching is done in two steps: a brute-force radius search (scikit-learn) over the fingerprints
averaged down to 16 x 16, with a loose radius, in chunks so memory stays bounded; then each candidate
pair is verified at 32 x 32 against a tight threshold. The thresholds come from the real NIH sample
(30 PNGs, one RGBA) re-encoded as SIIM-style JPEG DICOMs, beside the real SIIM sample (ARCHITECTURE.md
has the table):

- a copy lies at most 0.0016 from its original at the release's JPEG quality (90; read from the
  quantisation tables of the real SIIM DICOMs) and 0.0047 at quality 50;
- the same image shifted by 1 pixel lies 0.012 or more away, by 2 pixels 0.020, rotated by half a
  degree 0.027, scaled by 1 % 0.041; the closest two distinct radiographs 0.50;
- ``MATCH_DISTANCE`` (0.015) is 9 times the release's copy distance and 3 times that at quality 50,
  and below any change that moves the anatomy by 2 pixels, which a new exposure of the same patient
  (a follow-up: another position, another breath) always does, by far;
- ``COARSE_RADIUS`` (0.1, at 16 x 16, where copies lie within 0.004) only gathers candidates; the
  log names the closest candidate that failed the verification, to show the margin on new data.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ptxseg.io import atomic

log = logging.getLogger(__name__)

FINGERPRINT_SIDE = 32
COARSE_SIDE = 16
COARSE_RADIUS = 0.1
MATCH_DISTANCE = 0.015
# Standard deviations below this many grey levels are raised to it: a featureless image's
# fingerprint is not blown up from its noise into a pattern that could match anything.
_MIN_STD = 1.0
_FIELDS = ("image_id", "split", "fingerprint")


def fingerprint(image: np.ndarray) -> np.ndarray:
    """The decoded grey image reduced by area averaging to 32 x 32 mean grey levels, float16."""
    if image.ndim != 2 or not image.size:
        raise ValueError(f"a fingerprint needs a 2-D grey image, got shape {image.shape}")
    side = (FINGERPRINT_SIDE, FINGERPRINT_SIDE)
    reduced = cv2.resize(image.astype(np.float32), side, interpolation=cv2.INTER_AREA)
    return reduced.astype(np.float16)


def standardise(fingerprints: np.ndarray, side: int = FINGERPRINT_SIDE) -> np.ndarray:
    """(n, 32, 32) fingerprints -> (n, side * side) vectors of zero mean and unit length.

    Each fingerprint is averaged down to ``side`` x ``side`` blocks and standardised; the vectors
    are scaled so that the Euclidean distance of two is the RMS difference of the standardised
    images (in standard deviations). float64, so that verified distances are exact.
    """
    values = np.asarray(fingerprints, dtype=np.float64)
    count, factor = len(values), FINGERPRINT_SIDE // side
    if (
        values.shape[1:] != (FINGERPRINT_SIDE, FINGERPRINT_SIDE)
        or side * factor != FINGERPRINT_SIDE
    ):
        raise ValueError(
            f"expected (n, {FINGERPRINT_SIDE}, {FINGERPRINT_SIDE}) fingerprints and a side that "
            f"divides {FINGERPRINT_SIDE}; got {values.shape} and {side}"
        )
    values = values.reshape(count, side, factor, side, factor).mean(axis=(2, 4))
    values = values.reshape(count, side * side)
    values -= values.mean(axis=1, keepdims=True)
    spread = np.maximum(values.std(axis=1, keepdims=True), _MIN_STD)
    return values / (spread * np.sqrt(side * side))


def match(
    query: np.ndarray,
    reference: np.ndarray,
    *,
    max_distance: float = MATCH_DISTANCE,
    coarse_radius: float = COARSE_RADIUS,
    chunk: int = 4096,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of fingerprints that show the same image: (query rows, reference rows, distances).

    ``reference`` is held in memory at 16 x 16 (1 KB an image in float32); ``query`` is read
    ``chunk`` rows at a time (it may be a memory map of 100,000+ fingerprints). Candidates within
    ``coarse_radius`` of a brute-force radius search are kept where their 32 x 32 distance is at
    most ``max_distance``. Pairs come out sorted by query row, then distance.
    """
    from sklearn import config_context
    from sklearn.neighbors import NearestNeighbors

    empty = np.zeros(0, np.int64)
    if not len(query) or not len(reference):
        return empty, empty, np.zeros(0)
    coarse = NearestNeighbors(radius=coarse_radius, algorithm="brute")
    coarse.fit(standardise(reference, COARSE_SIDE).astype(np.float32))
    fine_reference: dict[int, np.ndarray] = {}
    rows, partners, distances = [], [], []
    closest_rejected = np.inf
    for start in range(0, len(query), chunk):
        block = np.asarray(query[start : start + chunk])
        # scikit-learn computes the distances in pieces of this many MB.
        with config_context(working_memory=64):
            _, neighbours = coarse.radius_neighbors(
                standardise(block, COARSE_SIDE).astype(np.float32)
            )
        counts = np.fromiter((len(n) for n in neighbours), np.int64, len(neighbours))
        if not counts.sum():
            continue
        local = np.repeat(np.arange(len(block)), counts)
        other = np.concatenate(neighbours).astype(np.int64)
        for index in set(other.tolist()) - set(fine_reference):
            fine_reference[index] = standardise(reference[index : index + 1])[0]
        fine = standardise(block[local])
        distance = np.linalg.norm(fine - np.stack([fine_reference[i] for i in other]), axis=1)
        kept = distance <= max_distance
        if (~kept).any():
            closest_rejected = min(closest_rejected, float(distance[~kept].min()))
        rows.append(local[kept] + start)
        partners.append(other[kept])
        distances.append(distance[kept])
    if np.isfinite(closest_rejected):
        log.info(
            "closest candidate pair above the match distance %.3f: %.4f",
            max_distance,
            closest_rejected,
        )
    if not rows:
        return empty, empty, np.zeros(0)
    row, partner, distance = map(np.concatenate, (rows, partners, distances))
    order = np.lexsort((distance, row))
    return row[order], partner[order], distance[order]


def fingerprint_table(
    image_ids: list[str], splits: list[str], fingerprints: np.ndarray
) -> np.ndarray:
    """One structured array: ``image_id``, ``split`` and the 32 x 32 float16 ``fingerprint``."""
    width = max([len(i) for i in image_ids] + [1])
    split_width = max([len(s) for s in splits] + [1])
    table = np.zeros(
        len(image_ids),
        dtype=[
            ("image_id", f"U{width}"),
            ("split", f"U{split_width}"),
            ("fingerprint", np.float16, (FINGERPRINT_SIDE, FINGERPRINT_SIDE)),
        ],
    )
    table["image_id"], table["split"] = image_ids, splits
    table["fingerprint"] = fingerprints
    return table


def write_fingerprints(path: str | os.PathLike, table: np.ndarray) -> None:
    """Write a fingerprint table as one ``.npy`` file (no pickled objects), atomically."""
    with atomic.atomic_open(path, "wb") as handle:
        np.save(handle, table, allow_pickle=False)


def read_fingerprints(path: str | os.PathLike) -> np.ndarray:
    """A fingerprint table, memory-mapped (read in chunks by ``match``); errors name the file."""
    try:
        table = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise
    except ValueError as error:
        raise ValueError(f"{path}: not a fingerprint file ({error})") from error
    shape = (FINGERPRINT_SIDE, FINGERPRINT_SIDE)
    if table.dtype.names != _FIELDS or table.ndim != 1 or table.dtype["fingerprint"].shape != shape:
        raise ValueError(
            f"{path}: not a fingerprint file (expected a 1-D table with fields {_FIELDS} and "
            f"{shape} fingerprints; found {table.dtype.names or table.dtype} of shape {table.shape})"
        )
    return table


def find_overlap(nih: np.ndarray, siim: np.ndarray) -> pd.DataFrame:
    """Pairs of a NIH and a SIIM fingerprint table's images with the same content, and their distance."""
    rows, partners, distances = match(nih["fingerprint"], np.asarray(siim["fingerprint"]))
    return pd.DataFrame(
        {
            "nih_image_id": nih["image_id"][rows].astype(str),
            "siim_image_id": siim["image_id"][partners].astype(str),
            "siim_split": siim["split"][partners].astype(str),
            "distance": distances.round(6),
        }
    )


def exclude_siim_from_nih(
    nih_index_csv: str | os.PathLike,
    nih_fingerprints: str | os.PathLike,
    siim_fingerprints: str | os.PathLike,
    overlap_csv: str | os.PathLike,
    pretrain_index_csv: str | os.PathLike,
    threads: int = 1,
) -> pd.DataFrame:
    """Write the NIH/SIIM overlap and the NIH index without the NIH images in it.

    ``overlap_csv``: one row per matching pair (NIH image, its patient, SIIM image and split,
    distance). ``pretrain_index_csv``: the rows of ``nih_index_csv`` whose image matched no SIIM
    image, in the same columns, for pretraining. ``threads`` caps the BLAS threads of the search.
    """
    from threadpoolctl import threadpool_limits

    from ptxseg.data.nih import read_index

    index = read_index(nih_index_csv)
    nih, siim = read_fingerprints(nih_fingerprints), read_fingerprints(siim_fingerprints)
    missing = sorted(set(index["image_id"]) - set(nih["image_id"].astype(str)))
    if missing:
        raise ValueError(
            f"{nih_fingerprints}: no fingerprint for {len(missing)} image(s) of {nih_index_csv}, "
            f"e.g. {missing[0]!r}; rerun repack_nih"
        )
    with threadpool_limits(max(1, threads)):
        overlap = find_overlap(nih, siim)
    patients = index.set_index("image_id")["patient_id"]
    overlap.insert(1, "nih_patient_id", patients.reindex(overlap["nih_image_id"]).to_numpy())
    overlap = overlap[overlap["nih_image_id"].isin(patients.index)].reset_index(drop=True)
    removed = set(overlap["nih_image_id"])
    kept = index[~index["image_id"].isin(removed)].reset_index(drop=True)
    atomic.write_csv(overlap_csv, overlap)
    atomic.write_csv(pretrain_index_csv, kept)
    matched = overlap.drop_duplicates("siim_image_id")
    log.info(
        "NIH/SIIM overlap: %d of %d SIIM images (%s) match %d NIH images (largest distance %s, "
        "threshold %.3f); %d SIIM images have no NIH image here",
        len(matched),
        len(siim),
        ", ".join(f"{k} {v}" for k, v in matched["siim_split"].value_counts().sort_index().items())
        or "none",
        len(removed),
        f"{overlap['distance'].max():.4f}" if len(overlap) else "-",
        MATCH_DISTANCE,
        len(siim) - len(matched),
    )
    log.info(
        "NIH images for pretraining: %d of %d (%d removed as SIIM images; listed in %s)",
        len(kept),
        len(index),
        len(removed),
        Path(overlap_csv).name,
    )
    return overlap
