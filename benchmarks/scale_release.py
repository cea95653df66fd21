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
from pathlib import Path, PurePath

import cv2
import numpy as np
import pandas as pd

from ptxseg.data.demo import DemoSpec, write_nih_demo, write_siim_demo
from ptxseg.data.findings import FINDINGS
from ptxseg.data.pseudo_labels import Bands, select
from ptxseg.data.pseudo_labels import write_summary as write_pseudo_label_summary
from ptxseg.data.repack import read_manifest, resize_mask
from ptxseg.data.siim import labels_by_image
from ptxseg.io import atomic, maps, rle
from ptxseg.io.png import read_grey
from ptxseg.layout import (
    METRICS,
    OOF_CSV,
    OOF_IDS,
    RESULTS,
    SUMMARY,
    fold_name,
    fold_of,
    model_member,
    oof_maps_member,
    probability_column,
    round1_arch,
    training_job_of,
)
from ptxseg.parallel import parallel_map
from ptxseg.recipes import segmenter_recipe

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


class DrawError(ValueError):
    """A file a later stage reads that the rehearsal does not know how to draw."""


@dataclass(frozen=True)
class Drawn:
    """What a file to draw is, as the layout names it: its kind, and the training job (stage,
    architecture by its results name, fold, member) or the fold it belongs to."""

    kind: str
    stage: str | None = None
    name: str | None = None
    fold: int | None = None
    member: str | None = None


def drawn_kind(path: str, job) -> Drawn:
    """What ``path``, written by the dry-run job ``job``, is: the layout is asked whether the file
    is each kind the rehearsal draws. Anything else is a `DrawError` naming the rule and file."""
    layout = RESULTS
    if path in job.benchmark:
        return Drawn("benchmark")
    stage, name, fold = training_job_of(path)
    if fold is None and path in (layout.pretrain_file(name, f) for f in (METRICS, SUMMARY)):
        return Drawn(f"pretrain {PurePath(path).name}", "pretrain", name)
    member = oof_maps_member(path)
    if fold is not None and member and path == layout.oof_maps(name, fold, member):
        return Drawn("segment OOF maps", "segment", name, fold, member)
    for file in (OOF_IDS, OOF_CSV, METRICS, SUMMARY):
        if fold is not None and path == layout.fold_file(stage, name, fold, file):
            return Drawn(f"{stage} {file}", stage, name, fold)
    name, fold = PurePath(path).parent.name, _fold_in(path)
    if path == layout.test_ids(name):
        return Drawn("segment test ids", "segment", name)
    if path == layout.test_probabilities(name):
        return Drawn("classify test probabilities", "classify", name)
    if fold is not None and path == layout.test_maps(name, fold):
        return Drawn("segment test maps", "segment", name, fold)
    if fold is not None and path == layout.pseudo_label_file(fold, SUMMARY):
        return Drawn("pseudo-label summary", fold=fold)
    raise DrawError(f"rule {job.rule}: the rehearsal cannot draw {path} (a file of no known kind)")


def _fold_in(path: str) -> int | None:
    try:
        return fold_of(path)
    except ValueError:
        return None


@dataclass
class _Truth:
    """What the drawn outputs are drawn from: the folds, the true masks, the test images."""

    folds: pd.DataFrame
    masks: dict[str, str]  # train image -> its repacked mask PNG at the segmenters' size
    test_ids: list[str]
    test_rles: dict
    size: int
    workdir: Path  # the dry run's paths are relative to it

    def held_out(self, fold: int) -> pd.DataFrame:
        return self.folds.loc[self.folds["fold"] == fold, ["image_id", "has_pneumothorax"]]


def write_model_outputs(
    workdir: Path, drawn: dict, config: dict, test_rle_csv: Path, seed: int, workers: int
) -> dict:
    """Every file of ``drawn`` (path, relative to ``workdir``, -> the dry-run job that writes it:
    what the stages after training read of the training and prediction jobs), drawn not trained.

    Returns the raw (uncompressed uint8) size of the maps written, for the compression ratio, and
    the count of files of each kind.
    """
    kinds = {path: drawn_kind(path, job) for path, job in drawn.items()}
    unknown = [(p, k) for p, k in kinds.items() if k.kind not in DRAWERS and "maps" not in k.kind]
    if unknown:
        path, kind = unknown[0]
        raise DrawError(f"rule {drawn[path].rule}: no drawer for {path} ({kind.kind})")
    size = config["segment"]["size"]
    manifest_csv = workdir / RESULTS.repack_manifest("siim", size)
    at_size = read_manifest(manifest_csv)
    train = at_size[at_size["split"] == "train"]
    truth = _Truth(
        pd.read_csv(workdir / RESULTS.data("siim_folds.csv"), dtype={"image_id": str}),
        {
            i: str(manifest_csv.parent / m)
            for i, m in zip(train["image_id"], train["mask"], strict=True)
        },
        sorted(at_size.loc[at_size["split"] == "test", "image_id"]),
        labels_by_image(test_rle_csv),
        size,
        workdir,
    )
    jobs = list(dict.fromkeys(drawn.values()))  # each job once, in the plan's order
    map_jobs = []
    for k, job in enumerate(jobs):
        rng = np.random.default_rng([seed, k])
        mine = {p: kind for p, kind in kinds.items() if drawn[p] is job}
        # A prediction job's OOF maps are every fold's: one map job per fold (its images).
        oof_folds = sorted({d.fold for d in mine.values() if d.kind == "segment OOF maps"})
        groups = [("segment OOF maps", fold) for fold in oof_folds] + [("segment test maps", None)]
        for g, (kind, fold) in enumerate(groups):
            paths = [p for p, d in mine.items() if d.kind == kind and fold in (None, d.fold)]
            if paths:
                at = k * 100 + g  # each group its own seed
                map_jobs.append(_map_job(workdir, kind, paths, mine[paths[0]], truth, seed, at))
        for path, what in mine.items():
            if "maps" not in what.kind:
                target = workdir / path
                target.parent.mkdir(parents=True, exist_ok=True)
                DRAWERS[what.kind](target, what, job, config, truth, rng)
    for _ in parallel_map(_write_map_files, map_jobs, workers, chunksize=1, desc="synthetic maps"):
        pass
    by_kind: dict[str, int] = {}
    for what in kinds.values():
        by_kind[what.kind] = by_kind.get(what.kind, 0) + 1
    return {
        "maps_raw_bytes": sum(len(j.image_ids) * len(j.paths) * j.size**2 for j in map_jobs),
        "map_files": sum(len(j.paths) for j in map_jobs),
        "files": by_kind,
    }


def _map_job(workdir: Path, kind: str, paths, what: Drawn, truth: _Truth, seed, k) -> _MapJob:
    """One job's map files over the same images: its OOF members' or its folds' test maps."""
    for path in paths:
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
    files = tuple(str(workdir / p) for p in paths)
    if kind == "segment OOF maps":
        ids = tuple(truth.held_out(what.fold)["image_id"])
        return _MapJob(files, ids, tuple(truth.masks[i] for i in ids), truth.size, seed * 1000 + k)
    ids = tuple(truth.test_ids)
    rles = tuple(tuple(truth.test_rles[i]) for i in ids)
    return _MapJob(files, ids, rles, truth.size, seed * 1000 + k)


def _probabilities(labels, members: list[str], rng: np.random.Generator) -> dict:
    """Image-level probabilities of one job's members at the labels: a shared score of some skill
    (AUC ~0.8-0.9), each member's a little noise away from it, as members of one model are."""
    labels = np.asarray(labels, dtype=np.float64)
    shared = rng.uniform(1.0, 2.0) * (labels - 0.5) * 2 + rng.normal(0, 1.5, len(labels))
    return {m: 1 / (1 + np.exp(-(shared + rng.normal(0, 0.3, len(labels))))) for m in members}


def _members_of(paths, member_of, fold: int) -> list[str]:
    """The members of one fold's files of one kind among ``paths`` (a job's model files or OOF
    maps; a prediction job has every fold's), in their order, each once."""
    members = (m for p in paths if (m := member_of(p)) is not None and _fold_in(p) == fold)
    return list(dict.fromkeys(members))


def _has_head(config: dict, name: str) -> bool:
    return bool(segmenter_recipe(config, name)["head"]["enabled"])


def _draw_benchmark(path: Path, what, job, config, truth, rng) -> None:
    """A drawn job's benchmark file (the report's run-time table reads one per job)."""
    path.write_text("s\tmax_rss\n0.0\t0.0\n")


def _draw_oof_ids(path: Path, what: Drawn, job, config, truth: _Truth, rng) -> None:
    """A segmenter fold's OOF image order, with each member's head probability where it has one."""
    table = truth.held_out(what.fold).copy()
    if _has_head(config, what.name):
        members = _members_of(job.output, oof_maps_member, what.fold)
        for member, p in _probabilities(table["has_pneumothorax"], members, rng).items():
            table[probability_column(member)] = p
    atomic.write_csv(path, table)


def _draw_classifier_oof(path: Path, what: Drawn, job, config, truth: _Truth, rng) -> None:
    table = truth.held_out(what.fold).copy()
    members = _members_of(job.input, model_member, what.fold)  # the kept models it predicts
    for member, p in _probabilities(table["has_pneumothorax"], members, rng).items():
        table[probability_column(member)] = p
    atomic.write_csv(path, table)


def _draw_test_ids(path: Path, what: Drawn, job, config, truth: _Truth, rng) -> None:
    """A segmenter's test image order, with each fold's head probability where it has one."""
    table = pd.DataFrame({"image_id": truth.test_ids})
    if _has_head(config, what.name):
        for fold in sorted({f for p in job.output if (f := _fold_in(p)) is not None}):
            table[fold_name(fold)] = rng.random(len(table))
    atomic.write_csv(path, table)


def _draw_test_probabilities(path: Path, what: Drawn, job, config, truth: _Truth, rng) -> None:
    """A classifier's test probabilities, one column per fold of the models the job reads."""
    folds = sorted({training_job_of(p)[2] for p in job.input if model_member(p) is not None})
    table = pd.DataFrame({"image_id": truth.test_ids})
    for fold in folds:
        table[fold_name(fold)] = rng.random(len(table))
    atomic.write_csv(path, table)


def _draw_metrics(path: Path, what: Drawn, job, config, truth, rng) -> None:
    """A drawn training job's metrics table (the report draws its curves)."""
    atomic.write_csv(path, _history("competition" if what.stage == "segment" else "auc"))


def _draw_summary(path: Path, what: Drawn, job, config, truth: _Truth, rng) -> None:
    summary = {
        "arch": round1_arch(what.name),
        "kind": {"segment": "segmenter", "classify": "classifier"}.get(what.stage, "nih"),
        "synthetic": "scale rehearsal: drawn, not trained",
    }
    if what.stage == "segment":
        recipe = segmenter_recipe(config, what.name)
        summary.update(
            fold=what.fold,
            size=truth.size,
            images_held_out=len(truth.held_out(what.fold)),
            epochs=sum(s["epochs"] for s in recipe["stages"]) or recipe["epochs"],
            stages=[
                {"size": s["size"], "epochs": s["epochs"], "freeze_encoder_epochs": 0}
                for s in recipe["stages"]
            ],
        )
    elif what.stage == "classify":
        summary.update(fold=what.fold, size=config["classify"]["size"], epochs=3)
    else:
        summary.update(epochs=3, findings=list(FINDINGS))
    atomic.write_json(path, summary)


def _draw_pseudo_label_summary(path: Path, what: Drawn, job, config, truth: _Truth, rng) -> None:
    """A fold's pseudo-label counts: drawn candidates' predictions through the package's own
    selection (``select``) and summary writer, over the candidates the data stage sampled."""
    size = config["segment"]["size"]
    manifest = RESULTS.repack_manifest("nih_candidates", size)
    if manifest not in job.input:
        raise DrawError(f"rule {job.rule}: {path} drawn from {manifest}, not among its inputs")
    ids = read_manifest(truth.workdir / manifest)["image_id"].drop_duplicates()
    kind = rng.choice(3, len(ids), p=[0.3, 0.5, 0.2])  # confident positive, empty, uncertain
    probability = np.select(
        [kind == 0, kind == 1],
        [rng.uniform(0.9, 1, len(ids)), rng.uniform(0, 0.05, len(ids))],
        rng.uniform(0.05, 0.9, len(ids)),
    )
    candidates = pd.DataFrame(
        {
            "image_id": ids.to_numpy(),
            "probability": probability,
            "mask_pixels": np.where(kind == 0, 1000, 0),
            "region_confidence": np.where(kind == 0, rng.uniform(0.95, 1, len(ids)), np.nan),
            "max_pixel": np.where(kind == 1, rng.uniform(0, 0.2, len(ids)), 0.9),
        }
    )
    bands = Bands.from_config(config["pseudo_labels"])
    models: dict[str, dict[str, list[str]]] = {"segment": {}, "classify": {}}
    for p in job.input:
        if model_member(p) is not None:
            stage, name, _ = training_job_of(p)
            models[stage].setdefault(name, []).append(p)
    write_pseudo_label_summary(
        path, what.fold, select(candidates, bands), models["segment"], models["classify"]
    )


# Each kind of file a later stage reads, and how it is drawn (the maps: in `_map_job`).
DRAWERS = {
    "benchmark": _draw_benchmark,
    "segment oof_ids.csv": _draw_oof_ids,
    "classify oof.csv": _draw_classifier_oof,
    "segment test ids": _draw_test_ids,
    "classify test probabilities": _draw_test_probabilities,
    "segment metrics.csv": _draw_metrics,
    "classify metrics.csv": _draw_metrics,
    "pretrain metrics.csv": _draw_metrics,
    "segment summary.json": _draw_summary,
    "classify summary.json": _draw_summary,
    "pretrain summary.json": _draw_summary,
    "pseudo-label summary": _draw_pseudo_label_summary,
}


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
