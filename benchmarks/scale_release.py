"""The scale rehearsal's inputs: a synthetic release of the real size, and synthetic model outputs.

The release is the demo generator's (ptxseg.data.demo: JPEG-baseline DICOMs at 1024, train-rle.csv,
NIH PNGs and Data_Entry_2017.csv) at the real counts and positive rate, with the NIH label file
grown to the real number of rows (the rows beyond the rendered images have no PNG, as if those
archives were not unpacked; the index leaves them out as rejects).

The model outputs are what the training and prediction rules of a config write, in their formats
and at their sizes, but drawn instead of trained: per segmenter architecture and fold, an OOF map
file per kept member over the fold's held-out images and a test map file per fold; per classifier
architecture, OOF probabilities per fold and test probabilities per fold. A map is a sigmoid of a
smooth logit field (a weakly trained model's background, the kind that compresses least) with a
blob where the true mask is (missed now and then) and false blobs on some negatives; members of
one architecture share its field and differ by small smooth noise, so blends and thresholds have
something to choose.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ptxseg.data.demo import DemoSpec, write_nih_demo, write_siim_demo
from ptxseg.data.findings import FINDINGS
from ptxseg.data.repack import read_manifest, resize_mask
from ptxseg.data.siim import labels_by_image
from ptxseg.io import atomic, maps, rle
from ptxseg.io.png import read_grey
from ptxseg.layout import (
    METRICS,
    OOF_CSV,
    OOF_IDS,
    SUMMARY,
    Layout,
    fold_name,
    job_name,
    probability_column,
)
from ptxseg.parallel import parallel_map

# The real release (SIIM-ACR stage 2 with labels; NIH ChestX-ray14), measured on the real label
# files: 2,669 of 12,047 train images positive, 624 of them with several regions.
REAL_TRAIN, REAL_TEST, REAL_NIH_ROWS = 12_047, 3_205, 112_120
REAL_POSITIVE, REAL_MULTI_REGION = 2_669 / 12_047, 624 / 2_669
# SIIM images are NIH images: 15,252 of 112,120, a share the rehearsal keeps among its NIH images.
NIH_SHARE_OF_SIIM = (REAL_TRAIN + REAL_TEST) / REAL_NIH_ROWS


@dataclass(frozen=True)
class Release:
    root: Path
    train: int
    test: int
    nih_rows: int
    nih_images: int

    @property
    def siim(self) -> Path:
        return self.root / "siim"

    @property
    def nih(self) -> Path:
        return self.root / "nih"


def counts(images: int, nih_images: int) -> tuple[int, int, int, int]:
    """(train, test, NIH label rows, NIH images) for ``images`` SIIM images, kept in real proportion."""
    scale = images / (REAL_TRAIN + REAL_TEST)
    train = round(images * REAL_TRAIN / (REAL_TRAIN + REAL_TEST))
    return train, images - train, round(REAL_NIH_ROWS * scale), round(nih_images * scale)


def write_release(root: Path, images: int, nih_images: int, seed: int, workers: int) -> Release:
    train, test, nih_rows, nih_count = counts(images, nih_images)
    # The share of SIIM images copied into the rendered NIH images, so that copies make up the
    # real share (13.6 %) of the NIH images.
    overlap = min(1.0, NIH_SHARE_OF_SIIM * nih_count / (train + test))
    spec = DemoSpec(
        siim_train=train,
        siim_test=test,
        positive_fraction=REAL_POSITIVE,
        # The demo draws one or two regions; the real share of positives with several is kept.
        two_region_fraction=REAL_MULTI_REGION,
        max_images_per_patient=3,
        image_size=1024,
        nih_images=nih_count,
        nih_rgba=max(1, nih_count // 5000),
        nih_finding_rate=0.46,  # NIH: 60,361 of 112,120 images are "No Finding"
        nih_overlap=overlap,
    )
    release = Release(root, train, test, nih_rows, nih_count)
    write_siim_demo(release.siim, spec, seed, workers)
    write_nih_demo(release.nih, spec, seed, workers)
    _grow_label_file(release.nih / "Data_Entry_2017.csv", nih_rows, seed)
    return release


def _grow_label_file(path: Path, rows: int, seed: int) -> None:
    """Add label rows (without images) until the file has ``rows`` rows, in the 2017 layout."""
    lines = path.read_text().splitlines()
    header, body = lines[0], lines[1:]
    rng = np.random.default_rng([seed, 99])
    names = list(FINDINGS)
    extra = []
    for k in range(rows - len(body)):
        patient = 90_000 + k // 3
        picked = [n for n in names if rng.random() < 0.06] or ["No Finding"]
        extra.append(
            f"{patient:08d}_{k % 3:03d}.png,{'|'.join(picked)},{k % 3},{patient},"
            f"{int(rng.integers(18, 90))},{'MF'[k % 2]},PA,1024,1024,0.143,0.143,"
        )
    atomic.write_text(path, "\n".join([header, *body, *extra]) + "\n")


# ----------------------------------------------------------------------------- model outputs

# Logit level and spread of a map's smooth background. The rehearsal draws the pessimistic kind,
# a weakly trained model's (probability ~0.1 with smooth noise, like the demo's 4-epoch models),
# whose maps compress least among network outputs; a trained model's is far lower.
BACKGROUND = (-2.2, 1.0)
TRAINED_BACKGROUND = (-8.0, 1.5)


def _logit_field(rng: np.random.Generator, size: int, level: float, spread: float) -> np.ndarray:
    coarse = rng.normal(0.0, 1.0, (12, 12)).astype(np.float32)
    return level + spread * cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _blob(mask: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """A soft copy of ``mask`` (blurred, shifted a little), scaled to ``strength`` logits."""
    size = mask.shape[0]
    shift = rng.integers(-size // 64, size // 64 + 1, 2)
    moved = np.roll(mask.astype(np.float32), tuple(shift), axis=(0, 1))
    sigma = max(1.0, size / 128)
    return strength * cv2.GaussianBlur(moved, (0, 0), sigma)


def _to_uint8(logits: np.ndarray) -> np.ndarray:
    return np.rint(255.0 / (1.0 + np.exp(-np.clip(logits, -30, 30)))).astype(np.uint8)


@dataclass(frozen=True)
class _MapJob:
    paths: tuple[str, ...]  # the map files, all over the same images
    image_ids: tuple[str, ...]
    # Per image the truth the maps are drawn from: a repacked mask PNG (train), or the image's
    # rows of the demo's test-rle.csv (test: the answers the real release keeps hidden).
    truth: tuple
    size: int
    seed: int


def _truth(item, size: int) -> np.ndarray:
    if isinstance(item, str):
        mask = read_grey(item) > 127
        return mask if mask.shape[0] == size else resize_mask(mask, size) > 0
    return resize_mask(rle.decode_union(item, (1024, 1024)), size) > 0


def _write_map_files(job: _MapJob) -> list[str]:
    """Map files over the same images: a shared field per image, small noise per file."""
    rng = np.random.default_rng(job.seed)
    shape = (len(job.image_ids), job.size, job.size)
    paths = [Path(p) for p in job.paths]
    with contextlib.ExitStack() as stack:
        writers = [stack.enter_context(maps.create(p, shape)) for p in paths]
        for k, item in enumerate(job.truth):
            mask = _truth(item, job.size)
            field = _logit_field(rng, job.size, *BACKGROUND)
            if mask.any() and rng.random() < 0.85:  # found, more or less well
                field += _blob(mask, rng, rng.uniform(9.0, 15.0))
            elif rng.random() < 0.15:  # a false region
                false = np.zeros(mask.shape, np.uint8)
                y, x = rng.integers(job.size // 5, 4 * job.size // 5, 2)
                radius = int(rng.integers(job.size // 40, job.size // 12))
                cv2.circle(false, (int(x), int(y)), radius, 1, -1)
                field += _blob(false, rng, rng.uniform(4.0, 11.0))
            for writer in writers:
                member = field + _logit_field(rng, job.size, 0.0, 0.6)
                writer[slice(k, k + 1)] = _to_uint8(member)[None]
    return [str(p) for p in paths]


def compression_by_kind(folder: Path, size: int, images: int = 64, seed: int = 0) -> dict:
    """Stored/raw size of ``images`` maps of three kinds: as the rehearsal draws them (a trained
    segmenter's confident background), a weakly trained one's (background around probability 0.1
    with smooth noise, as the demo's 4-epoch models at 64 px give: median level 17-70), and uniform
    noise (the worst case)."""
    rng = np.random.default_rng(seed)
    kinds = {
        "a trained-like model": lambda: _to_uint8(_logit_field(rng, size, *TRAINED_BACKGROUND)),
        "a weakly trained model": lambda: _to_uint8(_logit_field(rng, size, *BACKGROUND)),
        "uniform noise": lambda: rng.integers(0, 256, (size, size), dtype=np.uint8),
    }
    ratios = {}
    for name, draw in kinds.items():
        path = folder / f"kind{maps.SUFFIX}"
        maps.write(path, np.stack([draw() for _ in range(images)]))
        ratios[name] = path.stat().st_size / (images * size * size)
        path.unlink()
    return ratios


def write_model_outputs(
    results: Path, config: dict, test_rle_csv: Path, seed: int, workers: int
) -> dict:
    """What the train_*, predict_* and pretrain_nih rules of ``config`` write, drawn not trained.

    Returns the raw (uncompressed uint8) size of the maps written, for the compression ratio.
    """
    layout = Layout(str(results))
    folds = pd.read_csv(layout.data("siim_folds.csv"), dtype={"image_id": str})
    size = config["segment"]["size"]
    manifest_csv = Path(layout.repack_manifest("siim", size))
    at_size = read_manifest(manifest_csv).set_index("image_id")
    root = manifest_csv.parent
    test_ids = sorted(at_size.index[at_size["split"] == "test"])
    test_rles = labels_by_image(test_rle_csv)
    n_folds = config["folds"]["n_folds"]
    members = _members(config["segment"]["recipe"])
    jobs = []
    for a, arch in enumerate(config["segment"]["archs"]):
        for fold in range(n_folds):
            held = folds[folds["fold"] == fold]
            out = Path(layout.fold_dir("segment", arch, fold))
            out.mkdir(parents=True, exist_ok=True)
            atomic.write_csv(out / OOF_IDS, held[["image_id", "has_pneumothorax"]])
            _fold_summary(out, arch, fold, size, len(held), members, config["segment"]["recipe"])
            _benchmark(layout, "train_segmenter", job_name(arch, fold))
            ids = tuple(held["image_id"])
            jobs.append(
                _MapJob(
                    tuple(layout.oof_maps(arch, fold, m) for m in members),
                    ids,
                    tuple(str(root / at_size.loc[i, "mask"]) for i in ids),
                    size,
                    seed * 1000 + a * 10 + fold,
                )
            )
        Path(layout.test_ids(arch)).parent.mkdir(parents=True, exist_ok=True)
        atomic.write_csv(layout.test_ids(arch), pd.DataFrame({"image_id": test_ids}))
        _benchmark(layout, "predict_segmenter", job_name(arch))
        jobs.append(
            _MapJob(
                tuple(layout.test_maps(arch, k) for k in range(n_folds)),
                tuple(test_ids),
                tuple(tuple(test_rles[i]) for i in test_ids),
                size,
                seed * 1000 + a * 10 + 9,
            )
        )
    for _ in parallel_map(_write_map_files, jobs, workers, chunksize=1, desc="synthetic maps"):
        pass
    _classifier_outputs(layout, config, folds, test_ids, seed)
    _pretrain_outputs(layout, config)
    raw = sum(len(j.image_ids) * len(j.paths) * size * size for j in jobs)
    return {"maps_raw_bytes": raw, "map_files": sum(len(j.paths) for j in jobs)}


def _benchmark(layout: Layout, rule: str, job: str) -> None:
    """A drawn job's benchmark file (the report's run-time table reads one per job)."""
    path = Path(layout.benchmark(rule, job))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("s\tmax_rss\n0.0\t0.0\n")


def _members(recipe: dict) -> list[str]:
    from ptxseg.recipes import member_names

    return member_names(recipe)


def _fold_summary(out: Path, arch, fold, size, held_out, members, recipe) -> None:
    epochs = recipe["epochs"]
    history = pd.DataFrame(
        {
            "epoch": range(1, epochs + 1),
            "lr": np.linspace(3e-4, 1e-6, epochs),
            "train_loss": np.linspace(1.0, 0.3, epochs),
            "val_loss": np.linspace(0.9, 0.4, epochs),
            "competition": np.linspace(0.75, 0.84, epochs),
            "images": 0,
            "seconds": 0.0,
            "snapshot": 0,
        }
    )
    atomic.write_csv(out / METRICS, history)
    atomic.write_json(
        out / SUMMARY,
        {
            "arch": arch,
            "kind": "segmenter",
            "fold": fold,
            "size": size,
            "images_held_out": held_out,
            "epochs": epochs,
            "members": {m: {"competition": 0.8} for m in members},
            "synthetic": "scale rehearsal: drawn, not trained",
        },
    )


def _classifier_outputs(layout: Layout, config: dict, folds, test_ids, seed) -> None:
    rng = np.random.default_rng([seed, 7])
    members = _members(config["classify"]["recipe"])
    labels = folds["has_pneumothorax"].to_numpy()
    for arch in config["classify"]["archs"]:
        skill = rng.uniform(1.5, 2.5)
        for fold in range(config["folds"]["n_folds"]):
            held = folds["fold"].to_numpy() == fold
            table = folds.loc[held, ["image_id", "has_pneumothorax"]].copy()
            for m in members:
                logit = skill * (labels[held] - 0.5) * 2 + rng.normal(0, 1.5, held.sum())
                table[probability_column(m)] = 1 / (1 + np.exp(-logit))
            atomic.write_csv(layout.fold_file("classify", arch, fold, OOF_CSV), table)
            atomic.write_csv(layout.fold_file("classify", arch, fold, METRICS), _history("auc"))
            atomic.write_json(
                layout.fold_file("classify", arch, fold, SUMMARY),
                {"arch": arch, "fold": fold, "synthetic": True},
            )
            _benchmark(layout, "train_classifier", job_name(arch, fold))
        test = pd.DataFrame({"image_id": test_ids})
        for fold in range(config["folds"]["n_folds"]):
            test[fold_name(fold)] = rng.random(len(test_ids))
        atomic.write_csv(layout.test_probabilities(arch), test)
        _benchmark(layout, "predict_classifier", job_name(arch))


def _history(metric: str, epochs: int = 3) -> pd.DataFrame:
    """A drawn training job's metrics table (the report draws its curves)."""
    return pd.DataFrame(
        {
            "epoch": range(1, epochs + 1),
            "lr": np.linspace(3e-4, 1e-6, epochs),
            "train_loss": np.linspace(1.0, 0.3, epochs),
            "val_loss": np.linspace(0.9, 0.4, epochs),
            metric: np.linspace(0.75, 0.84, epochs),
            "snapshot": 0,
        }
    )


def _pretrain_outputs(layout: Layout, config: dict) -> None:
    for arch in config["pretrain"]["archs"]:
        atomic.write_json(
            layout.pretrain_file(arch, SUMMARY), {"arch": arch, "epochs": 0, "synthetic": True}
        )
        atomic.write_csv(layout.pretrain_file(arch, METRICS), _history("auc"))
        _benchmark(layout, "pretrain_nih", job_name(arch))


def dump_config(config: dict, path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def file_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    return total


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2))
