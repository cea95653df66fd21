"""NIH ChestX-ray14: the label file, its 14-column label matrix, a patient-grouped split, and the
findings pretraining learns."""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from ptxseg.data.findings import FINDINGS, NO_FINDING
from ptxseg.data.ids import check_image_id
from ptxseg.io import atomic

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("Image Index", "Finding Labels", "Patient ID")
OPTIONAL_COLUMNS = {
    "Follow-up #": "follow_up",
    "Patient Age": "patient_age",
    "Patient Gender": "patient_sex",
    "View Position": "view_position",
}


class NihLabelError(ValueError):
    """A problem in Data_Entry_2017.csv; the message names the file and line."""


def read_labels(path: str | os.PathLike) -> pd.DataFrame:
    """Parse Data_Entry_2017.csv (2017 file with trailing commas, or the 2020 revision).

    Returns one row per image: image_id (file stem), image_index (file name), patient_id, the
    optional metadata columns, and one 0/1 column per finding in FINDINGS order.
    """
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise NihLabelError(
            f"{path}: the file is empty; expected the Data_Entry_2017.csv header"
        ) from None
    # The 2017 file ends every line with a comma: an unnamed, empty last column.
    raw = raw.loc[
        :,
        [c for c in raw.columns if not (c.startswith("Unnamed:") and not raw[c].str.strip().any())],
    ]
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise NihLabelError(
            f"{path}: line 1: missing column(s) {', '.join(map(repr, missing))}; "
            f"found {', '.join(map(repr, raw.columns))}"
        )
    if raw.empty:
        raise NihLabelError(f"{path}: no label rows after the header")
    lines = np.arange(len(raw)) + 2
    labels = np.zeros((len(raw), len(FINDINGS)), dtype=np.uint8)
    column_of = {name: k for k, name in enumerate(FINDINGS)}
    image_ids = []
    for row, (line, index_name, findings) in enumerate(
        zip(lines, raw["Image Index"], raw["Finding Labels"], strict=True)
    ):
        where = f"{path}: line {line}"
        check_image_id(index_name.strip(), where)
        image_ids.append(Path(index_name.strip()).stem)
        names = [name.strip() for name in findings.split("|")]
        if names == [NO_FINDING]:
            continue
        for name in names:
            if name not in column_of:
                raise NihLabelError(
                    f"{where}: unknown finding {name!r} (known: {NO_FINDING!r} or "
                    f"{', '.join(FINDINGS)})"
                )
            labels[row, column_of[name]] = 1
    frame = pd.DataFrame(
        {
            "image_id": image_ids,
            "image_index": raw["Image Index"].str.strip(),
            "patient_id": raw["Patient ID"].str.strip(),
        }
    )
    for source, target in OPTIONAL_COLUMNS.items():
        if source in raw.columns:
            frame[target] = raw[source].str.strip()
    duplicated = frame["image_id"].duplicated(keep="first")
    if duplicated.any():
        row = int(np.argmax(duplicated.to_numpy()))
        first = int(np.argmax((frame["image_id"] == frame["image_id"].iloc[row]).to_numpy()))
        raise NihLabelError(
            f"{path}: line {lines[row]}: Image Index {frame['image_index'].iloc[row]!r} "
            f"already on line {lines[first]}"
        )
    return pd.concat([frame, pd.DataFrame(labels, columns=list(FINDINGS))], axis=1)


def patient_split(labels: pd.DataFrame, val_fraction: float, seed: int) -> pd.Series:
    """'train' or 'val' per row, whole patients on one side (scikit-learn GroupShuffleSplit)."""
    splitter = GroupShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
    _, val_rows = next(splitter.split(labels, groups=labels["patient_id"]))
    split = pd.Series("train", index=labels.index)
    split.iloc[val_rows] = "val"
    return split


def find_pngs(folder: str | os.PathLike) -> dict[str, Path]:
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"NIH image folder {root} does not exist")
    return {path.name: path for path in sorted(root.rglob("*.png"))}


def build_index(
    image_dir: str | os.PathLike, labels_csv: str | os.PathLike, val_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(index, rejects): labelled images with their PNG path and split; rows and files without a partner."""
    labels = read_labels(labels_csv)
    files = find_pngs(image_dir)
    has_file = labels["image_index"].isin(files.keys())
    rejects = [
        {"image_id": name, "path": "", "reason": f"label row but no PNG in {image_dir}"}
        for name in labels.loc[~has_file, "image_index"]
    ]
    rejects += [
        {"image_id": name, "path": str(files[name]), "reason": f"no label row in {labels_csv}"}
        for name in sorted(set(files) - set(labels["image_index"]))
    ]
    index = labels.loc[has_file].reset_index(drop=True)
    index.insert(2, "path", [str(files[name]) for name in index["image_index"]])
    index.insert(3, "split", patient_split(index, val_fraction, seed) if len(index) else [])
    return index, pd.DataFrame(rejects, columns=["image_id", "path", "reason"])


def write_index(
    image_dir: str | os.PathLike,
    labels_csv: str | os.PathLike,
    val_fraction: float,
    seed: int,
    index_path: str | os.PathLike,
    rejects_path: str | os.PathLike,
    stop_on_rejects: bool = True,
) -> pd.DataFrame:
    from ptxseg.data.siim import RejectsError

    index, rejects = build_index(image_dir, labels_csv, val_fraction, seed)
    atomic.write_csv(rejects_path, rejects)
    if len(rejects):
        listed = "\n".join(f"  {r.image_id}: {r.reason}" for r in rejects.head(20).itertuples())
        summary = f"{len(rejects)} NIH reject(s), listed in {rejects_path}:\n{listed}"
        if stop_on_rejects:
            raise RejectsError(
                summary + "\nFix the data, or set data.stop_on_rejects: false to leave them out."
            )
        log.warning("%s", summary)
    atomic.write_csv(index_path, index)
    log.info(
        "NIH index: %d images, %d patients, %s",
        len(index),
        index["patient_id"].nunique(),
        index["split"].value_counts().to_dict(),
    )
    return index


def read_index(path: str | os.PathLike) -> pd.DataFrame:
    return pd.read_csv(
        path, dtype={"image_id": str, "image_index": str, "patient_id": str}, keep_default_na=False
    )


def pretraining_findings(
    exclude: Iterable[str], key: str = "pretrain.exclude_findings"
) -> list[str]:
    """The findings pretraining learns: FINDINGS without ``exclude``, in FINDINGS order.

    Errors name the config ``key``: an unknown finding (with the nearest name), or all 14 left out.
    """
    exclude = list(exclude)
    problems = []
    for name in exclude:
        if name not in FINDINGS:
            hint = difflib.get_close_matches(str(name), FINDINGS, n=1)
            problems.append(
                f"{name!r} is not a NIH finding" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            )
    if problems:
        raise ValueError(
            f"config key {key!r}: {'; '.join(problems)}; the findings are {', '.join(FINDINGS)}"
        )
    kept = [name for name in FINDINGS if name not in exclude]
    if not kept:
        raise ValueError(f"config key {key!r} leaves out all 14 findings: nothing to pretrain on")
    return kept
