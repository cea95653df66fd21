"""Cross-validation folds of the SIIM train images, stratified on pneumothorax and grouped by patient.

SIIM-ACR re-anonymised the PatientID of every image, so the SIIM PatientID groups nothing in the
real release: follow-up radiographs of one person carry different PatientIDs. Every SIIM image is
a NIH ChestX-ray14 image, whose ``Patient ID`` is real, and the content match of
``exclude_siim_from_nih`` (``nih_siim_overlap.csv``) gives each matched SIIM image its NIH patient.
Grouping by patient therefore links two SIIM train images when they share a NIH patient or a SIIM
PatientID (the demo's SIIM patients have several images), and a group is one connected set of those
links: no NIH patient and no SIIM patient is in two folds.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from ptxseg.data.siim import read_index
from ptxseg.io import atomic

log = logging.getLogger(__name__)

# Columns of the overlap table (ptxseg.data.overlap) the grouping reads.
OVERLAP_COLUMNS = ("nih_image_id", "nih_patient_id", "siim_image_id", "siim_split", "distance")


class FoldError(ValueError):
    """Folds that cannot be made; the message names the config key to change."""


def assign_folds(
    has_pneumothorax: np.ndarray, groups: np.ndarray, n_folds: int, seed: int
) -> np.ndarray:
    """Fold number (0 .. n_folds-1) per image, by scikit-learn's StratifiedGroupKFold."""
    labels = np.asarray(has_pneumothorax, dtype=int)
    groups = np.asarray(groups)
    n_positive_groups = len(np.unique(groups[labels == 1]))
    n_negative_groups = len(np.unique(groups[labels == 0]))
    if n_folds > min(n_positive_groups, n_negative_groups):
        raise FoldError(
            f"folds.n_folds is {n_folds}, but there are only {n_positive_groups} positive and "
            f"{n_negative_groups} negative groups: every fold needs both. Lower folds.n_folds."
        )
    folds = np.full(len(labels), -1, dtype=int)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        folds[held_out] = fold
    return folds


def _components(links: list[tuple[str, str]]) -> dict[str, str]:
    """Node -> its connected set's name (the smallest node name in it), by union-find."""
    parent: dict[str, str] = {}

    def root(node: str) -> str:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b in links:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {node: root(node) for node in parent}


def patient_groups(train: pd.DataFrame, overlap: pd.DataFrame | None) -> pd.DataFrame:
    """Per train image (``image_id``, ``patient_id``): ``group_patient``, ``group_source`` and ``group``.

    ``group_patient`` is the NIH patient of the image's closest NIH match (``group_source`` 'nih'),
    or its SIIM PatientID where it matched no NIH image ('siim'; the image id where the PatientID
    is empty). ``group`` names the connected set of images linked by a shared NIH patient or a
    shared SIIM PatientID, as ``nih:<id>`` or ``siim:<id>``: the unit StratifiedGroupKFold keeps whole.
    """
    siim_patient = train["patient_id"].where(train["patient_id"].astype(bool), train["image_id"])
    matches = pd.DataFrame(columns=list(OVERLAP_COLUMNS))
    if overlap is not None:
        missing = sorted(set(OVERLAP_COLUMNS) - set(overlap.columns))
        if missing:
            raise FoldError(f"the NIH/SIIM overlap table lacks the column(s) {missing}")
        matches = overlap[overlap["siim_split"] == "train"]
        unknown = sorted(set(matches["siim_image_id"]) - set(train["image_id"]))
        if unknown:
            raise FoldError(
                f"the NIH/SIIM overlap names {len(unknown)} SIIM train image(s) the index does "
                f"not have, e.g. {unknown[0]!r}: it is out of date (rerun exclude_siim_from_nih)"
            )
    closest = (
        matches.assign(distance=matches["distance"].astype(float))
        .sort_values(["siim_image_id", "distance", "nih_image_id"])
        .drop_duplicates("siim_image_id")
        .set_index("siim_image_id")["nih_patient_id"]
    )
    nih_patient = train["image_id"].map(closest).astype(object)
    matched = nih_patient.notna().to_numpy()
    group_patient = np.where(matched, nih_patient, siim_patient)
    group_source = np.where(matched, "nih", "siim")
    # Every image links its SIIM patient to each NIH patient it matches (a SIIM image may match
    # NIH images of two patients); an unmatched image links its SIIM patient to itself.
    siim_node = "siim:" + siim_patient
    links = list(zip(siim_node, siim_node, strict=True))
    by_image = dict(zip(train["image_id"], siim_node, strict=True))
    links += [
        (by_image[image], f"nih:{patient}")
        for image, patient in zip(matches["siim_image_id"], matches["nih_patient_id"], strict=True)
    ]
    component = _components(links)
    # A set's name: its smallest NIH node where it has one, else its smallest SIIM node.
    names: dict[str, str] = {}
    for node, root in sorted(component.items(), key=lambda item: (item[0][:4] != "nih:", item[0])):
        names.setdefault(root, node)
    return pd.DataFrame(
        {
            "group_patient": group_patient,
            "group_source": group_source,
            "group": [names[component[node]] for node in siim_node],
        },
        index=train.index,
    )


def make_folds(
    index: pd.DataFrame,
    n_folds: int,
    group_by: str,
    seed: int,
    overlap: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Folds for the train rows of the index: image_id, fold, has_pneumothorax, group,
    group_patient, group_source.

    ``group_by`` 'patient' groups by :func:`patient_groups` (by NIH patient where ``overlap``, the
    NIH/SIIM overlap table, matches the image); 'image' makes each image its own group
    (``group_source`` 'image').
    """
    train = index[index["split"] == "train"].reset_index(drop=True)
    if group_by == "patient":
        groups = patient_groups(train, overlap)
    elif group_by == "image":
        groups = pd.DataFrame(
            {
                "group_patient": train["image_id"],
                "group_source": "image",
                "group": train["image_id"],
            }
        )
    else:
        raise FoldError(f"folds.group_by is {group_by!r}; expected 'patient' or 'image'")
    labels = train["has_pneumothorax"].astype(int).to_numpy()
    folds = assign_folds(labels, groups["group"].to_numpy(), n_folds, seed)
    return pd.DataFrame(
        {
            "image_id": train["image_id"],
            "fold": folds,
            "has_pneumothorax": labels,
            "group": groups["group"],
            "group_patient": groups["group_patient"],
            "group_source": groups["group_source"],
        }
    )


def fold_summary(folds: pd.DataFrame, group_by: str) -> dict:
    """What the grouping did: images, groups, how many images share a group with another image,
    how many took their patient from NIH and how many of those share that NIH patient."""
    sizes = folds.groupby("group")["image_id"].size()
    nih = folds[folds["group_source"] == "nih"]
    per_nih_patient = nih.groupby("group_patient")["image_id"].size()
    return {
        "group_by": group_by,
        "images": len(folds),
        "groups": len(sizes),
        "images_sharing_a_group": int(sizes[sizes > 1].sum()),
        "groups_of_several_images": int((sizes > 1).sum()),
        "largest_group": int(sizes.max()) if len(sizes) else 0,
        "images_grouped_by_nih_patient": len(nih),
        "nih_patients": len(per_nih_patient),
        "images_sharing_a_nih_patient": int(per_nih_patient[per_nih_patient > 1].sum()),
        "images_per_fold": {
            str(fold): int(count)
            for fold, count in folds["fold"].value_counts().sort_index().items()
        },
    }


def read_overlap(path: str | os.PathLike) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def write_folds(
    index_path: str | os.PathLike,
    folds_path: str | os.PathLike,
    n_folds: int,
    group_by: str,
    seed: int,
    overlap_path: str | os.PathLike | None = None,
    summary_path: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Write the folds (``folds_path``) and, where ``summary_path`` is given, what the grouping
    did (:func:`fold_summary`, JSON); ``overlap_path`` is the NIH/SIIM overlap table."""
    overlap = read_overlap(overlap_path) if overlap_path is not None else None
    folds = make_folds(read_index(index_path), n_folds, group_by, seed, overlap)
    atomic.write_csv(folds_path, folds)
    summary = fold_summary(folds, group_by)
    if summary_path is not None:
        atomic.write_text(summary_path, json.dumps(summary, indent=2) + "\n")
    log.info(
        "grouped by %s: %d train images in %d groups; %d images share their group with another "
        "(%d groups of several, the largest %d); %d images took their patient from NIH "
        "(%d NIH patients; %d images share theirs with another), the rest their SIIM PatientID",
        group_by,
        summary["images"],
        summary["groups"],
        summary["images_sharing_a_group"],
        summary["groups_of_several_images"],
        summary["largest_group"],
        summary["images_grouped_by_nih_patient"],
        summary["nih_patients"],
        summary["images_sharing_a_nih_patient"],
    )
    table = folds.groupby("fold")["has_pneumothorax"].agg(["size", "mean"]).round(3)
    log.info("folds (images, positive rate):\n%s", table.to_string())
    return folds
