"""The run's model card (Markdown): intended use, training data, recipe, OOF scores per fold,
calibration, the NIH second round and the limits of what was measured.

Every number on the card is read from the run's own files (the rule ``model_card`` declares each
of them): nothing is typed in, so the card of a demo run says what the demo measured and nothing
more. Array and table functions (``fold_scores``, ``fold_spread``, ...) take data frames and return
data frames or numbers; ``write_model_card`` reads the files and writes the page atomically.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

import ptxseg
from ptxseg.contracts.ensemble_spec import CLASSIFY, SEGMENT, EnsembleSpec, Preprocessing
from ptxseg.contracts.scores import Basis, Kind, Level, Metric, ScoreRow, ScoreTable
from ptxseg.io import atomic
from ptxseg.layout import head_arch, round1_arch, training_job_of
from ptxseg.report.second_round import COMPARED, pseudo_label_counts, round_comparison

PathLike = str | os.PathLike
TUNED = COMPARED[(Kind.SEGMENTER, Metric.COMPETITION_TUNED)]


# Tables and numbers (no files).


def markdown_table(frame: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table; floats with ``digits`` decimals, integers as such."""

    def cell(value: Any) -> str:
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            if math.isnan(value):
                return ""
            return f"{value:.{digits}f}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join([header, rule, *rows])


def fold_scores(images: pd.DataFrame, column: str = "dice_native") -> pd.DataFrame:
    """Per fold of ``oof_images.csv``: images, positives (a non-empty true mask at the image's own
    size), the competition score (the mean of ``column``: ``dice_native`` by the choices made on
    all folds, ``dice_native_nested`` by those made without the fold), the all-empty baseline (the
    share of empty true masks: an empty prediction scores 1 on them, 0 elsewhere), and the score
    on the positive and on the empty images."""
    rows = []
    for fold, part in images.groupby("fold", sort=True):
        positive = part["truth_pixels_native"] > 0
        rows.append(
            {
                "fold": int(fold),
                "images": len(part),
                "positives": int(positive.sum()),
                "score": float(part[column].mean()),
                "all-empty baseline": float((~positive).mean()),
                "score on positives": float(part.loc[positive, column].mean())
                if positive.any()
                else float("nan"),
                "score on empties": float(part.loc[~positive, column].mean())
                if (~positive).any()
                else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def fold_spread(per_fold: pd.DataFrame, column: str = "score") -> tuple[float, float]:
    """Mean and standard deviation (n - 1) of a column over the folds; std NaN for one fold."""
    values = per_fold[column].astype(float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def own_size_cascade(scores: ScoreTable) -> ScoreRow | None:
    """The cascade's OOF competition score at each image's own size (scores.csv), or None."""
    return scores.one_or_none(
        kind=Kind.SEGMENTER, level=Level.CASCADE, metric=Metric.COMPETITION, basis=Basis.OWN_SIZE
    )


def gate_metric(scores: ScoreTable, level: Level, metric: Metric) -> float | None:
    """The gate probability's ``metric`` at ``level`` (uncalibrated: before its calibration;
    calibrated: after, cross-fitted), or None where scores.csv has no such row."""
    row = scores.one_or_none(kind=Kind.GATE, level=level, metric=metric)
    return None if row is None else row.score


def fold_table(folds: pd.DataFrame) -> pd.DataFrame:
    """Per fold of siim_folds.csv: images, positives and the positive rate."""
    table = (
        folds.groupby("fold", sort=True)["has_pneumothorax"]
        .agg(images="size", positives="sum", positive_rate="mean")
        .reset_index()
    )
    table["images"] = table["images"].astype(int)
    table["positives"] = table["positives"].astype(int)
    return table.rename(columns={"positive_rate": "positive rate"})


def training_table(summaries: Sequence[tuple[PathLike, dict]]) -> pd.DataFrame:
    """One row per (stage, architecture) of the training jobs' summary.json files: folds, epochs
    (each distinct count), training size and progressive-resizing stages. The architecture is the
    path's (a second round's summary names its first-round architecture)."""
    jobs: dict[tuple[str, str], list[dict]] = {}
    for path, summary in summaries:
        stage, arch, _ = training_job_of(path)
        jobs.setdefault((stage, arch), []).append(summary)
    rows = []
    for (stage, arch), found in jobs.items():
        stages = {
            ", ".join(f"{s['size']} px x {s['epochs']}" for s in job["stages"])
            for job in found
            if job.get("stages")
        }
        rows.append(
            {
                "stage": stage,
                "architecture": arch,
                "jobs": len(found),
                "epochs": ", ".join(str(e) for e in sorted({job.get("epochs") for job in found})),
                "size (px)": ", ".join(
                    str(s) for s in sorted({job["size"] for job in found if "size" in job})
                ),
                "stages (size x epochs)": "; ".join(sorted(stages)),
            }
        )
    return pd.DataFrame(rows)


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _area(value: float) -> str:
    return f"{value:g}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def whole_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Float columns holding whole numbers only (counts filled with 0) as integers."""
    frame = frame.copy()
    for column in frame.columns:
        values = frame[column]
        if values.dtype.kind == "f" and values.notna().all() and (values % 1 == 0).all():
            frame[column] = values.astype(int)
    return frame


# Sections.


def header(ensemble_bytes: bytes, demo: bool) -> list[str]:
    digest = hashlib.sha256(ensemble_bytes).hexdigest()[:16]
    lines = [
        "# Model card: ptxseg pneumothorax segmentation ensemble",
        "",
        f"ptxseg {ptxseg.__version__}; ensemble.json sha256 `{digest}`. Written by the rule "
        "`model_card` from this run's own files: every figure below is read from them.",
    ]
    return lines + (["", _demo_warning()] if demo else [])


def intended_use() -> list[str]:
    return [
        "## Intended use",
        "",
        "Research on the segmentation of pneumothorax in frontal chest radiographs: comparing "
        "models, recipes and ensembles on the SIIM-ACR data. It is **not a medical device** and is "
        "not for diagnosis, triage or any decision about a patient; every output needs to be read "
        "by a radiologist.",
    ]


def _demo_warning() -> str:
    return (
        "**This run used the synthetic demo data** (rendered phantoms in the release formats): "
        "its figures test the pipeline and mean nothing clinically."
    )


def training_data(
    index: pd.DataFrame,
    rejects: pd.DataFrame,
    folds: pd.DataFrame,
    nih: pd.DataFrame,
    overlap: pd.DataFrame,
    nih_pretrain: pd.DataFrame,
    pretrain_summaries: Sequence[dict],
    demo: bool,
) -> list[str]:
    train = index[index["split"] == "train"]
    test = index[index["split"] == "test"]
    positives = int(train["has_pneumothorax"].sum())
    source = "the synthetic demo data set" if demo else "the SIIM-ACR release"
    lines = [
        "## Training data",
        "",
        f"SIIM-ACR pneumothorax ({source}): {len(train)} train images, {positives} with a "
        f"pneumothorax ({positives / max(len(train), 1):.1%}); {len(test)} test images (their "
        f"labels are not used); {_plural(len(rejects), 'file')} rejected by the index (unreadable or "
        "truncated pixel data).",
    ]
    if {"rows", "columns"} <= set(train.columns) and len(train):
        sizes = (
            train["rows"].astype(int).astype(str) + "x" + train["columns"].astype(int).astype(str)
        ).value_counts()
        lines.append(
            "Train image sizes (px): " + ", ".join(f"{s} ({n})" for s, n in sizes.items()) + "."
        )
    lines += _header_demographics(train)
    lines += [
        "",
        f"Folds (stratified by pneumothorax, grouped by patient; {folds['fold'].nunique()} folds, "
        f"{len(folds)} images):",
        "",
        markdown_table(fold_table(folds), digits=3),
        "",
    ]
    removed = int(overlap["nih_image_id"].nunique()) if len(overlap) else 0
    lines.append(
        f"NIH ChestX-ray14 for pretraining: {len(nih)} images indexed; {removed} of them are SIIM "
        f"images (matched by content) and were removed; pretraining used {len(nih_pretrain)} images."
    )
    for summary in pretrain_summaries:
        excluded = ", ".join(summary.get("excluded_findings") or []) or "none"
        lines.append(
            f"{summary.get('arch', '?')} was pretrained on {len(summary.get('findings', []))} NIH "
            f"findings (left out: {excluded}) over {_plural(summary.get('epochs', 0), 'epoch')}."
        )
    if demo:
        lines += ["", _demo_warning()]
    lines += [
        "",
        "Known issues of the data:",
        "",
        "- The NIH labels are text-mined from the radiology reports: they are noisy; Wang et al. "
        "(2017) reported a precision of about 90% or lower for the mined labels.",
        "- Chest drains confound pneumothorax labels: Rueckel et al. (2020) showed that "
        "pneumothorax classifiers lean on chest tubes, so a treated pneumothorax is easier to "
        "find than an untreated one, which is the one that matters.",
        f"- SIIM images are NIH images: the overlap is found by content matching, and its "
        f"{removed} matched NIH images are left out of pretraining so that no SIIM image is seen "
        "through the back door.",
        "- The SIIM masks come from one annotation process (one label file); the scores measure "
        "agreement with it, not with a panel of readers.",
    ]
    return lines


def _header_demographics(train: pd.DataFrame) -> list[str]:
    parts = []
    if "patient_sex" in train.columns:
        sexes = train["patient_sex"].fillna("unknown").astype(str).value_counts().sort_index()
        parts.append("sex " + ", ".join(f"{s} {n}" for s, n in sexes.items()))
    if "patient_age" in train.columns:
        ages = pd.to_numeric(train["patient_age"], errors="coerce").dropna()
        if len(ages):
            parts.append(f"age median {ages.median():g} (range {ages.min():g}-{ages.max():g})")
    if "view_position" in train.columns:
        views = train["view_position"].fillna("unknown").astype(str).value_counts().sort_index()
        parts.append("view " + ", ".join(f"{v} {n}" for v, n in views.items()))
    if not parts:
        return []
    return ["DICOM header of the train images: " + "; ".join(parts) + "."]


def recipe(spec: EnsembleSpec, summaries: Sequence[tuple[PathLike, dict]]) -> list[str]:
    lines = ["## Recipe", ""]
    lines.append(
        "Kept members per fold model: "
        + "; ".join(f"{stage}: {', '.join(names)}" for stage, names in spec.members.items())
        + "."
    )
    gate = pd.DataFrame(
        [
            {
                "image-level source": source,
                "kind": f"classification head of {head_arch(source)}"
                if head_arch(source)
                else "classifier",
                "weight": float(weight),
            }
            for source, weight in spec.gate_weights.items()
        ]
    )
    if len(gate):
        lines += ["", "The gate's probability: a weighted mean of", "", markdown_table(gate, 3)]
    positive_only = set(spec.searched.positive_only)
    segmenters = pd.DataFrame(
        [
            {
                "segmenter": name,
                "round": 1 if round1_arch(name) == name else 2,
                "weight": float(weight),
                "trained on": "positive images only (behind the gate)"
                if name in positive_only
                else "all images",
            }
            for name, weight in spec.segmenter_weights.items()
        ]
    )
    lines += ["", "The mask: a weighted mean of the segmenters' maps", ""]
    lines.append(markdown_table(segmenters, 3))
    cascade = spec.cascade
    gate = cascade.gate
    lines += [
        "",
        f"Cascade (gate {gate:g}, top {cascade.top:g}, min_area "
        f"{_area(cascade.min_area)}, bottom {cascade.bottom:g}): "
        + (
            f"an image whose gate probability is below {gate:g} is empty; otherwise "
            if gate > 0
            else "the gate is 0, so every image goes on to the mask; "
        )
        + f"it is empty unless at least {_area(cascade.min_area)} pixels (counted as in a "
        f"1024 x 1024 image; at least one) reach {cascade.top:g}, and its mask is then the "
        f"pixels at or above {cascade.bottom:g}.",
    ]
    lines += _preprocessing(spec.preprocessing, spec.searched.segmenter_size)
    table = training_table(summaries)
    if len(table):
        lines += ["", "Training jobs (from their summary.json):", "", markdown_table(table)]
    return lines


def _preprocessing(pre: Preprocessing, segmenter_size: int) -> list[str]:
    facts = [
        f"classifiers at {pre.sizes[CLASSIFY]} px",
        f"segmenters at {pre.sizes[SEGMENT]} px",
    ]
    if segmenter_size != pre.sizes[SEGMENT]:
        facts.append(f"segmenter maps at {segmenter_size} px")
    norm = pre.normalisation
    params = ", ".join(f"{k} {v}" for k, v in asdict(norm).items() if k != "method")
    facts.append(f"normalisation {norm.method}" + (f" ({params})" if params else ""))
    flips = [str(t) for t in pre.tta if isinstance(t, str)]
    scales = [f"{t:g}" for t in pre.tta if not isinstance(t, str)]
    facts.append(
        "test-time augmentation: "
        + (", ".join(flips) or "none")
        + (f"; scales {', '.join(scales)}" if scales else "")
    )
    facts.append(f"{pre.n_folds} folds, one model per fold and architecture")
    return ["", "Preprocessing and prediction: " + "; ".join(facts) + "."]


def oof_scores(images: pd.DataFrame, scores: ScoreTable, spec: EnsembleSpec) -> list[str]:
    """The headline first: each fold scored by the choices made on the other folds (where the run
    has it), then the same cascade chosen on all folds, labelled as chosen on its own images."""
    oof = spec.searched.oof
    nested = "dice_native_nested" in images and oof.cross_fitted
    column = "dice_native_nested" if nested else "dice_native"
    per_fold = fold_scores(images, column)
    mean, std = fold_spread(per_fold)
    base_mean, base_std = fold_spread(per_fold, "all-empty baseline")
    cascade = own_size_cascade(scores)
    scored_at = oof.cascade_scored_at.label()
    lines = [
        "## OOF scores at each image's own size",
        "",
        "OOF (out-of-fold): every image is predicted by the models of the fold that held it out, "
        "never by a model that trained on it.",
        "",
    ]
    if nested:
        low, high = oof.cascade_interval
        lines += [
            f"**Headline: {_number(oof.cascade)}** "
            f"({100 * oof.cascade_confidence:.0f} % bootstrap interval over images "
            f"{_number(low)}-{_number(high)}): the competition score (mean Dice per image, 1 for "
            f"an empty mask predicted empty) at {scored_at}, each fold's images scored by the "
            "blend weights, gate and thresholds the search chose on the other folds' images "
            "only. Per fold:",
        ]
    else:
        lines.append(
            f"The competition score (mean Dice per image, 1 for an empty mask predicted empty) of "
            f"the cascade's masks drawn at {scored_at}, chosen on these same images (optimistic: "
            "this run has no cross-fitted estimate):"
        )
    lines += [
        "",
        markdown_table(per_fold),
        "",
        f"Over the {len(per_fold)} folds: score {_number(mean)} ± {_number(std)} (mean ± "
        f"standard deviation), all-empty baseline {_number(base_mean)} ± {_number(base_std)}; "
        f"pooled over all {len(images)} images {_number(float(images[column].mean()))}.",
    ]
    if cascade is not None:
        lines.append(
            f"In-sample, the cascade that ships (chosen on all {cascade.images} images and "
            f"scored on the same images, so optimistic): {_number(cascade.score)}."
        )
    else:
        lines.append("scores.csv has no cascade score at each image's own size.")
    return lines


def calibration(spec: EnsembleSpec, scores: ScoreTable) -> list[str]:
    lines = ["## Calibration of the gate probability", ""]
    chosen = spec.calibration
    if chosen is None:
        return [
            *lines,
            "Not calibrated in this run: the gate's probability is the blend's raw output; read "
            "it as a ranking score, not as the probability of a pneumothorax.",
        ]
    params = ", ".join(
        f"{k} {v:.4g}"
        for k, v in chosen.to_dict().items()
        if k != "method" and isinstance(v, float)
    )
    lines.append(f"Method: **{chosen.method}**" + (f" ({params})" if params else "") + ".")
    before = gate_metric(scores, Level.UNCALIBRATED, Metric.ECE)
    after = gate_metric(scores, Level.CALIBRATED, Metric.ECE)
    lines.append(
        f"Expected calibration error over the OOF images: {_number(before)} before, "
        f"{_number(after)} after (cross-fitted: each fold's images calibrated by a map fitted on "
        "the other folds)."
    )
    before, after = (
        gate_metric(scores, Level.UNCALIBRATED, Metric.BRIER),
        gate_metric(scores, Level.CALIBRATED, Metric.BRIER),
    )
    if before is not None or after is not None:
        lines.append(f"Brier score: {_number(before)} before, {_number(after)} after.")
    choice = spec.searched.calibration_choice
    if choice:
        lines += [
            "",
            "The choice (cross-fitted scores; the simplest method within one paired standard "
            "error of the lowest is chosen):",
            "",
            markdown_table(spec.searched.calibration_table()),
        ]
    return lines


def second_round(counts: pd.DataFrame | None, scores: ScoreTable) -> list[str]:
    lines = ["## Second round (NIH pseudo-labels)", ""]
    compared = round_comparison(scores)
    if len(compared):
        compared = compared[compared["score"] == TUNED].drop(columns="score")
    if counts is None and not len(compared):
        return [*lines, "No second round in this run."]
    blocks = []
    if counts is not None:
        blocks += [
            "NIH images pseudo-labelled per fold by that fold's first-round models:",
            markdown_table(whole_counts(counts)),
        ]
    else:
        blocks.append(
            "No pseudo-label counts: the card was given no pseudo-label files (a mean-teacher "
            "second round makes none)."
        )
    if len(compared):
        rows = scores.select(
            kind=Kind.SEGMENTER, level=Level.ARCHITECTURE, metric=Metric.COMPETITION_TUNED
        )
        at = ", ".join(dict.fromkeys(r.scored_at.label() for r in rows))
        blocks += [
            f"OOF competition score per architecture, each with its own best thresholds, scored "
            f"on the maps ({at}), round 1 against round 2:",
            markdown_table(compared),
        ]
    return [*lines, "\n\n".join(blocks)]


def limits(
    images: pd.DataFrame,
    index: pd.DataFrame,
    spec: EnsembleSpec,
    demo: bool,
) -> list[str]:
    folds = images["fold"].nunique()
    test = int((index["split"] == "test").sum())
    lines = [
        "## Limits of what was measured",
        "",
        f"- {len(images)} OOF images in {folds} folds; every figure here is from this run's files "
        "only (the hardware, GPU or not, and run times are not part of this card).",
    ]
    if spec.searched.oof.cross_fitted:
        lines.append(
            "- The headline is cross-fitted (each fold scored by choices made without it); the "
            "in-sample score beside it was chosen on the images it scores and is optimistic."
        )
    else:
        lines.append(
            "- The blend weights, the gate and the thresholds were chosen on the same OOF images "
            "they are scored on, so the OOF score is optimistic."
        )
    if "best" in {m for names in spec.members.values() for m in names}:
        lines.append(
            "- The 'best' member of a fold model is chosen on its held-out fold, which leaks a "
            "little of that fold into its own OOF score."
        )
    lines += [
        f"- No external test set: the {test} SIIM test images' labels are not used for scoring, "
        "and no other hospital's images were scored.",
        "- No subgroup analysis: the SIIM DICOM headers hold no demographics beyond sex and age "
        "(and the view position); performance by sex, age, view, device or site was not "
        "measured.",
        "- No prospective evaluation, and no measurement of the effect on readers.",
    ]
    if spec.calibration is None:
        lines.append("- The gate's probability is not calibrated.")
    for warning in spec.searched.warnings:
        lines.append(f"- The ensemble search warned: {warning}")
    if demo:
        lines.append(
            "- The data are the synthetic demo's: the figures test the pipeline and mean nothing "
            "clinically."
        )
    return lines


# The file.


def _require(name: str, path: PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model card: {name} file {path} is missing")
    return path


def _csv(name: str, path: PathLike, **kwargs: Any) -> pd.DataFrame:
    return pd.read_csv(_require(name, path), **kwargs)


def write_model_card(
    *,
    ensemble: PathLike,
    scores: PathLike,
    images: PathLike,
    index: PathLike,
    rejects: PathLike,
    folds: PathLike,
    nih: PathLike,
    nih_pretrain: PathLike,
    overlap: PathLike,
    summaries: Sequence[PathLike],
    pseudo_labels: Sequence[PathLike] = (),
    demo: bool,
    out_md: PathLike,
) -> str:
    """Write the model card of a run to ``out_md`` (atomically) and return its text.

    ``summaries``: every training job's summary.json (NIH pretraining, classifier and segmenter
    folds, both rounds); ``pseudo_labels``: each fold's pseudo-label summary.json where a second
    round learnt from pseudo-labels; ``demo``: whether the data were the synthetic demo's. Every
    path given must exist: a missing one is a FileNotFoundError naming it.
    """
    ensemble_bytes = _require("ensemble", ensemble).read_bytes()
    blend = EnsembleSpec.read(ensemble)
    score_table = ScoreTable.read(_require("scores", scores))
    image_table = _csv("images (oof_images.csv)", images, dtype={"image_id": str})
    index_table = _csv("index", index, dtype={"image_id": str})
    reject_table = _csv("rejects", rejects, dtype=str)
    fold_rows = _csv("folds", folds, dtype={"image_id": str})
    nih_table = _csv("nih", nih, dtype={"image_id": str})
    pretrain_table = _csv("nih_pretrain", nih_pretrain, dtype={"image_id": str})
    overlap_table = _csv("overlap", overlap, dtype=str)
    jobs = [(p, json.loads(_require("summaries", p).read_text())) for p in summaries]
    pretrained = [s for p, s in jobs if training_job_of(p)[2] is None]
    folded = [(p, s) for p, s in jobs if training_job_of(p)[2] is not None]
    counts = (
        pseudo_label_counts([_require("pseudo_labels", p) for p in pseudo_labels])
        if pseudo_labels
        else None
    )
    sections = [
        header(ensemble_bytes, demo),
        intended_use(),
        training_data(
            index_table,
            reject_table,
            fold_rows,
            nih_table,
            overlap_table,
            pretrain_table,
            pretrained,
            demo,
        ),
        recipe(blend, folded),
        oof_scores(image_table, score_table, blend),
        calibration(blend, score_table),
        second_round(counts, score_table),
        limits(image_table, index_table, blend, demo),
    ]
    text = "\n\n".join("\n".join(lines) for lines in sections) + "\n"
    atomic.write_text(out_md, text)
    return text
