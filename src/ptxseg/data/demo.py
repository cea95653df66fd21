"""The embedded demo data: synthetic SIIM-ACR and NIH ChestX-ray14 sets in the real release formats.

SIIM: JPEG-baseline DICOMs nested ``<study>/<series>/<sop>.dcm`` with the release's header fields,
``train-rle.csv`` with its header quirk (``ImageId, EncodedPixels``), ``-1`` rows and one row per
region; plus the test set's answers in ``test-rle.csv``, which the real release keeps hidden.
NIH: 8-bit PNGs (a few RGBA, as in the real set) and ``Data_Entry_2017.csv`` in the 2017 layout.
As in the real releases, where every SIIM image is a NIH image, a share of the SIIM images
(``nih_overlap``, train and test) is also in the NIH set: the PNG the DICOM was made from, under a
NIH-style name, labelled 'Pneumothorax' or 'No Finding'; ``siim_copies.csv`` is the answer key.
The copies of two SIIM patients are one NIH patient's follow-ups, as SIIM's re-anonymisation gave
one person's radiographs different PatientIDs: the NIH Patient ID is the one that groups them.
Every image is rendered from its own seed, so the result does not depend on the worker count, and
the NIH set is written without reading the SIIM files (it renders its copies from the SIIM plan).
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptxseg.data.phantom import FINDINGS, render_chest
from ptxseg.io import atomic, rle
from ptxseg.io.dicom import write_dicom
from ptxseg.parallel import parallel_map

log = logging.getLogger(__name__)

# pydicom's registered UID root; demo UIDs must not collide with real ones.
_UID_ROOT = "1.2.826.0.1.3680043.8.498."
# Relative frequencies of the 14 findings in ChestX-ray14, so the demo has the real imbalance.
_FINDING_WEIGHTS = np.array(
    [11559, 2776, 13317, 19894, 5782, 6331, 1431, 5302, 4667, 2303, 2516, 1686, 3385, 227],
    dtype=float,
)
NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)


@dataclass(frozen=True)
class DemoSpec:
    siim_train: int = 120
    siim_test: int = 40
    positive_fraction: float = 0.4
    two_region_fraction: float = 0.2
    max_images_per_patient: int = 3
    image_size: int = 1024
    nih_images: int = 200
    nih_rgba: int = 3
    nih_finding_rate: float = 0.5
    nih_overlap: float = 0.25


def _uid(seed: int, *parts: object) -> str:
    # A deterministic UID: the same seed and parts give the same UID (DICOM UIDs are digits and dots).
    digest = uuid.uuid5(uuid.NAMESPACE_OID, "/".join(map(str, (seed, *parts)))).int
    return (_UID_ROOT + str(digest))[:64]


@dataclass(frozen=True)
class _SiimImage:
    index: int
    split: str
    regions: int
    patient_id: str
    patient_age: int
    patient_sex: str
    view_position: str
    seed: int
    size: int
    folder: str


def _patients(rng: np.random.Generator, n_images: int, max_per_patient: int) -> list[int]:
    """Patient number of each image: consecutive runs of 1..max_per_patient images."""
    owners: list[int] = []
    patient = 0
    while len(owners) < n_images:
        owners += [patient] * int(rng.integers(1, max_per_patient + 1))
        patient += 1
    return owners[:n_images]


def _plan_siim(spec: DemoSpec, seed: int, out_dir: Path) -> list[_SiimImage]:
    rng = np.random.default_rng([seed, 1])
    total = spec.siim_train + spec.siim_test
    owners = _patients(rng, total, spec.max_images_per_patient)
    n_patients = owners[-1] + 1
    patient_ids = [
        str(
            uuid.UUID(
                int=int(rng.integers(0, 2**63)) << 64 | int(rng.integers(0, 2**63)), version=4
            )
        )
        for _ in range(n_patients)
    ]
    ages = rng.integers(18, 90, n_patients)
    sexes = rng.choice(["M", "F"], n_patients)
    plans = []
    for split, first, count in (
        ("train", 0, spec.siim_train),
        ("test", spec.siim_train, spec.siim_test),
    ):
        n_positive = round(spec.positive_fraction * count)
        positive = np.zeros(count, dtype=bool)
        positive[rng.choice(count, n_positive, replace=False)] = True
        two = positive & (rng.random(count) < spec.two_region_fraction)
        folder = out_dir / f"dicom-images-{split}"
        for k in range(count):
            i = first + k
            owner = owners[i]
            plans.append(
                _SiimImage(
                    index=i,
                    split=split,
                    regions=int(positive[k]) + int(two[k]),
                    patient_id=patient_ids[owner],
                    patient_age=int(ages[owner]),
                    patient_sex=str(sexes[owner]),
                    view_position=str(rng.choice(["PA", "AP"], p=[0.6, 0.4])),
                    seed=seed,
                    size=spec.image_size,
                    folder=str(folder),
                )
            )
    return plans


def _siim_chest(seed: int, index: int, size: int, regions: int):
    """The radiograph of SIIM image ``index``: its DICOM's pixels before JPEG compression."""
    rng = np.random.default_rng([seed, 2, index])
    return render_chest(rng, size, pneumothorax_regions=regions)


def _siim_image_id(seed: int, index: int) -> str:
    return _uid(seed, "siim", index, "sop")


def _render_siim(plan: _SiimImage) -> tuple[str, str, list[str]]:
    chest = _siim_chest(plan.seed, plan.index, plan.size, plan.regions)
    study, series = (_uid(plan.seed, "siim", plan.index, kind) for kind in ("study", "series"))
    sop = _siim_image_id(plan.seed, plan.index)
    path = Path(plan.folder) / study / series / f"{sop}.dcm"
    write_dicom(
        path,
        chest.image,
        sop_instance_uid=sop,
        study_instance_uid=study,
        series_instance_uid=series,
        patient_id=plan.patient_id,
        patient_age=plan.patient_age,
        patient_sex=plan.patient_sex,
        view_position=plan.view_position,
    )
    return plan.split, sop, [rle.encode(mask) for mask in chest.pneumothorax]


def _rle_csv(rows: list[tuple[str, list[str]]]) -> str:
    # The release's quirks: a space in the header, '-1' for empty, one row per region, and a
    # trailing space after every region's run list.
    lines = ["ImageId, EncodedPixels"]
    for image_id, regions in rows:
        lines += (
            [f"{image_id},-1"] if not regions else [f"{image_id},{encoded} " for encoded in regions]
        )
    return "\n".join(lines) + "\n"


def write_siim_demo(
    out_dir: str | os.PathLike, spec: DemoSpec, seed: int, workers: int = 1
) -> None:
    """Write ``dicom-images-train/``, ``dicom-images-test/``, ``train-rle.csv`` and ``test-rle.csv``."""
    out_dir = Path(out_dir)
    plans = _plan_siim(spec, seed, out_dir)
    rows: dict[str, list[tuple[str, list[str]]]] = {"train": [], "test": []}
    for split, image_id, regions in parallel_map(_render_siim, plans, workers, desc="demo siim"):
        rows[split].append((image_id, regions))
    # The release lists images in no particular order: shuffle so nothing downstream relies on order.
    order = np.random.default_rng([seed, 3]).permutation(len(rows["train"]))
    atomic.write_text(out_dir / "train-rle.csv", _rle_csv([rows["train"][k] for k in order]))
    atomic.write_text(out_dir / "test-rle.csv", _rle_csv(rows["test"]))
    n_positive = sum(bool(r) for _, r in rows["train"])
    log.info(
        "demo SIIM: %d train (%d positive), %d test DICOMs in %s",
        len(rows["train"]),
        n_positive,
        len(rows["test"]),
        out_dir,
    )


@dataclass(frozen=True)
class _NihImage:
    file_name: str
    findings: tuple[str, ...]
    rgba: bool
    seed: int
    index: int
    size: int
    folder: str
    copy_of: _SiimImage | None = None  # the SIIM image whose source PNG this is


def _siim_copies(spec: DemoSpec, seed: int) -> list[_SiimImage]:
    """The SIIM images (train and test) whose source PNG is also in the NIH set.

    ``ceil(nih_overlap * count)`` of each split, so a split with any copies has at least one.
    """
    siim = _plan_siim(spec, seed, Path())  # the plan only: no SIIM file is read
    rng = np.random.default_rng([seed, 6])
    copies = []
    for split in ("train", "test"):
        plans = [plan for plan in siim if plan.split == split]
        count = math.ceil(spec.nih_overlap * len(plans) - 1e-9)
        picked = sorted(rng.choice(len(plans), count, replace=False).tolist())
        copies += [plans[k] for k in picked]
    return copies


def _plan_nih(spec: DemoSpec, seed: int, out_dir: Path) -> tuple[list[_NihImage], list[str]]:
    copies = _siim_copies(spec, seed)
    n_own = spec.nih_images - len(copies)
    if n_own < 0:
        raise ValueError(
            f"data.demo.nih_overlap {spec.nih_overlap} puts {len(copies)} SIIM images into the NIH "
            f"set, more than data.demo.nih_images ({spec.nih_images}); lower the first or raise "
            "the second"
        )
    rng = np.random.default_rng([seed, 4])
    owners = _patients(rng, n_own, spec.max_images_per_patient) if n_own else []
    # Copies of one SIIM patient's images are one NIH patient's follow-ups, numbered after the rest;
    # and, as SIIM gave each image its own PatientID, two SIIM patients (in the order of their first
    # copy, train first) are one NIH patient: only the NIH Patient ID knows they are one person.
    first_copy_patient = owners[-1] + 1 if owners else 0
    siim_patients: dict[str, int] = {}
    for plan in copies:
        siim_patients.setdefault(plan.patient_id, len(siim_patients))
    copy_owner = {
        patient: first_copy_patient + rank // 2 for patient, rank in siim_patients.items()
    }
    n_rgba = min(spec.nih_rgba, spec.nih_images)
    rgba = set()
    if n_rgba and copies:  # one of them a copy, so the content match meets the quirk too
        rgba.add(n_own + int(rng.integers(len(copies))))
    others = [i for i in range(spec.nih_images) if i not in rgba]
    rgba |= set(rng.choice(others, n_rgba - len(rgba), replace=False).tolist())
    weights = _FINDING_WEIGHTS / _FINDING_WEIGHTS.sum()
    ages = rng.integers(1, 95, first_copy_patient)
    sexes = rng.choice(["M", "F"], first_copy_patient)
    plans, rows = [], []
    follow_up: dict[int, int] = {}
    folder = str(out_dir / "images")
    for i in range(spec.nih_images):
        copy_of = copies[i - n_own] if i >= n_own else None
        owner = owners[i] if copy_of is None else copy_owner[copy_of.patient_id]
        number = follow_up[owner] = follow_up.get(owner, -1) + 1
        findings: tuple[str, ...] = ()
        if copy_of is not None:
            findings = ("Pneumothorax",) if copy_of.regions else ()
            age, sex, view, spacing = (
                copy_of.patient_age,
                copy_of.patient_sex,
                copy_of.view_position,
                "0.143",
            )
        else:
            if rng.random() < spec.nih_finding_rate:
                count = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
                picked = rng.choice(len(FINDINGS), count, replace=False, p=weights)
                findings = tuple(FINDINGS[k] for k in sorted(picked))
            age, sex = int(ages[owner]) + number // 4, str(sexes[owner])
            view = str(rng.choice(["PA", "AP"], p=[0.6, 0.4]))
            spacing = "0.143" if rng.random() < 0.5 else "0.168"
        name = f"{owner + 1:08d}_{number:03d}.png"
        plans.append(
            _NihImage(name, findings, i in rgba, seed, i, spec.image_size, folder, copy_of)
        )
        rows.append(
            f"{name},{'|'.join(findings) or 'No Finding'},{number},{owner + 1},"
            f"{age},{sex},{view},2500,2048,{spacing},{spacing},"
        )
    return plans, rows


def _render_nih(plan: _NihImage) -> str:
    import cv2

    from ptxseg.io.png import encode_png

    if plan.copy_of is not None:
        source = plan.copy_of
        image = _siim_chest(source.seed, source.index, source.size, source.regions).image
    else:
        rng = np.random.default_rng([plan.seed, 5, plan.index])
        image = render_chest(rng, plan.size, findings=plan.findings).image
    if plan.rgba:  # opaque RGBA, as a few of the real NIH PNGs are
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGRA)
    atomic.write_bytes(Path(plan.folder) / plan.file_name, encode_png(image))
    return plan.file_name


def write_nih_demo(out_dir: str | os.PathLike, spec: DemoSpec, seed: int, workers: int = 1) -> None:
    """Write ``images/*.png``, ``Data_Entry_2017.csv`` (2017 layout: a trailing comma per line) and
    ``siim_copies.csv``: which NIH image is which SIIM image (image_index, siim_image_id, siim_split).
    """
    out_dir = Path(out_dir)
    plans, rows = _plan_nih(spec, seed, out_dir)
    for _ in parallel_map(_render_nih, plans, workers, desc="demo nih"):
        pass
    copies = [p for p in plans if p.copy_of is not None]
    key = ["image_index,siim_image_id,siim_split"] + [
        f"{p.file_name},{_siim_image_id(p.copy_of.seed, p.copy_of.index)},{p.copy_of.split}"
        for p in copies
    ]
    atomic.write_text(out_dir / "siim_copies.csv", "\n".join(key) + "\n")
    atomic.write_text(out_dir / "Data_Entry_2017.csv", "\n".join([NIH_HEADER, *rows]) + "\n")
    log.info(
        "demo NIH: %d PNGs (%d RGBA, %d of them copies of SIIM images) in %s",
        len(plans),
        sum(p.rgba for p in plans),
        len(copies),
        out_dir,
    )
