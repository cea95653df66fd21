"""One self-contained HTML page of what a run did and how well: first the result (the cross-fitted
OOF score and its interval, the in-sample one, the baseline; the data source, config, commit and
date), then data, training, OOF scores, blend, threshold search, example predictions, run times
and (where run) the scaling search.

Every figure is embedded as a base64 PNG, so the page opens anywhere without the results folder.
A section whose inputs a run did not produce says so instead of failing.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ptxseg.contracts.ensemble_spec import EnsembleSpec
from ptxseg.contracts.scores import Kind, Level, Metric, ScoreRow, ScoreTable
from ptxseg.contracts.search_record import OofSummary
from ptxseg.data.nih import FINDINGS
from ptxseg.data.repack import read_manifest
from ptxseg.io import atomic, maps
from ptxseg.io.png import read_grey
from ptxseg.layout import benchmark_rule_of, fold_name, training_job_of
from ptxseg.report import figures
from ptxseg.report.calibration import reliability_diagram
from ptxseg.report.result import Headline, Provenance
from ptxseg.report.second_round import pseudo_label_counts, round_comparison
from ptxseg.scoring.calibration import expected_calibration_error, reliability_table
from ptxseg.scoring.cascade import binarise

log = logging.getLogger(__name__)

SECTIONS = (
    "result",
    "data",
    "training",
    "scores",
    "weights",
    "calibration",
    "second_round",
    "thresholds",
    "examples",
    "runtime",
    "scaling",
)

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #4878a8} h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0;font-size:.85em} td,th{border:1px solid #ccc;padding:2px 8px}
th{background:#f0f4f8} img{max-width:100%;display:block;margin:.5em 0} .caption{color:#555;font-size:.9em}
nav a{margin-right:1em} details{margin:.5em 0} summary{cursor:pointer;color:#4878a8}
.warning{background:#fff4e0;border:1px solid #e0a040;padding:.3em 1em;margin:.5em 0}
"""


@dataclass
class Section:
    key: str
    title: str
    parts: list[str] = field(default_factory=list)

    def text(self, words: str) -> None:
        self.parts.append(f"<p class='caption'>{html.escape(words)}</p>")

    def figure(self, png: bytes, alt: str) -> None:
        data = base64.b64encode(png).decode("ascii")
        self.parts.append(f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>")

    def table(self, frame: pd.DataFrame, digits: int = 4) -> None:
        self.parts.append(
            frame.to_html(
                index=False,
                float_format=lambda v: f"{v:.{digits}f}",
                na_rep="",
                border=0,
                escape=True,
            )
        )

    def details(self, summary: str, frame: pd.DataFrame, digits: int = 4) -> None:
        """A table folded away under a one-line summary (the raw rows behind a summary table)."""
        self.parts.append(f"<details><summary>{html.escape(summary)}</summary>")
        self.table(frame, digits)
        self.parts.append("</details>")

    def warnings(self, messages: list[str]) -> None:
        if messages:
            items = "".join(f"<li>{html.escape(m)}</li>" for m in messages)
            self.parts.append(f"<div class='warning'><b>Warnings</b><ul>{items}</ul></div>")

    def html(self) -> str:
        return f"<section id='{self.key}'><h2>{html.escape(self.title)}</h2>{''.join(self.parts)}</section>"


@dataclass(frozen=True)
class ReportInputs:
    """Every file the report reads, and no other: the report rule declares each of them, so the
    page is rebuilt whenever one changes. A missing file leaves its section saying so."""

    index: Path | None = None
    rejects: Path | None = None
    folds: Path | None = None
    nih: Path | None = None
    nih_pretrain: Path | None = None
    overlap: Path | None = None
    stats: list[Path] = field(default_factory=list)  # one per repacked SIIM size
    manifests: list[Path] = field(default_factory=list)  # SIIM manifests, one per size
    metrics: list[Path] = field(default_factory=list)  # every training job's metrics.csv
    benchmarks: list[Path] = field(default_factory=list)  # every job's benchmark file
    ensemble: Path | None = None
    scores: Path | None = None
    grid: Path | None = None
    images: Path | None = None
    maps: Path | None = None
    pseudo_labels: list[Path] = field(default_factory=list)  # each fold's pseudo-label summary

    @classmethod
    def of(cls, named: dict) -> ReportInputs:
        """From the rule's named inputs (extra names, such as the submission, are dependencies
        the page does not read)."""
        values = {}
        for key in cls.__dataclass_fields__:
            if key in named:
                value = named[key]
                values[key] = [Path(v) for v in value] if isinstance(value, list) else Path(value)
        return cls(**values)


def _read(path: Path | None, **kwargs) -> pd.DataFrame | None:
    return pd.read_csv(path, **kwargs) if path is not None and path.is_file() else None


def _json(path: Path | None) -> dict | None:
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def _spec(path: Path | None) -> EnsembleSpec | None:
    return EnsembleSpec.read(path) if path is not None and path.is_file() else None


def _scores(path: Path | None) -> ScoreTable | None:
    return ScoreTable.read(path) if path is not None and path.is_file() else None


def _manifest(inputs: ReportInputs, size: int) -> tuple[pd.DataFrame, Path]:
    """The train rows of the SIIM manifest at ``size``, and the folder their paths start from."""
    for path in inputs.manifests:
        manifest = read_manifest(path)
        rows = manifest[(manifest["size"] == size) & (manifest["split"] == "train")]
        if len(rows):
            return rows.set_index("image_id"), path.parent
    raise ValueError(f"no SIIM manifest at {size} px among the report's inputs")


def data_section(inputs: ReportInputs) -> Section:
    section = Section("data", "Data")
    index = _read(inputs.index, dtype={"image_id": str})
    if index is None:
        section.text("No SIIM index in this run.")
        return section
    train = index[index["split"] == "train"]
    rejects = _read(inputs.rejects, dtype=str)
    facts = [
        ("SIIM train images", f"{len(train)}"),
        ("with a pneumothorax", f"{int(train['has_pneumothorax'].sum())}"),
        ("positive rate", f"{float(train['has_pneumothorax'].mean()):.3f}"),
        ("with several regions", f"{int((train['n_regions'] > 1).sum())}"),
        ("SIIM test images", f"{int((index['split'] == 'test').sum())}"),
        ("rejects", f"{0 if rejects is None else len(rejects)}"),
    ]
    section.table(pd.DataFrame(facts, columns=["", "value"]))
    folds = _read(inputs.folds, dtype={"image_id": str})
    if folds is not None:
        per_fold = (
            folds.groupby("fold")["has_pneumothorax"]
            .agg(images="size", positive_rate="mean")
            .reset_index()
        )
        section.text("Folds (StratifiedGroupKFold on has-pneumothorax, grouped by patient):")
        section.table(per_fold)
    stats = {}
    for path in inputs.stats:
        stats.update(_json(path) or {})
    if stats:
        section.text(
            "Intensity mean and std of the repacked train images (scaled to [0, 1]) per size:"
        )
        section.table(pd.DataFrame([{"size (px)": int(s), **v} for s, v in stats.items()]))
        _sample_grid(
            section,
            inputs,
            min(int(s) for s in stats if int(s) >= 64)
            if any(int(s) >= 64 for s in stats)
            else max(int(s) for s in stats),
            train,
        )
    nih = _read(inputs.nih, dtype={"image_id": str})
    if nih is not None:
        section.text(
            f"NIH ChestX-ray14: {len(nih)} images of {nih['patient_id'].nunique()} patients "
            f"({(nih['split'] == 'val').sum()} in the patient-grouped validation split)."
        )
        overlap = _read(inputs.overlap, dtype=str)
        pretrain = _read(inputs.nih_pretrain, dtype={"image_id": str})
        if overlap is not None and pretrain is not None:
            section.text(
                f"{len(overlap)} NIH images are SIIM images (matched by content: "
                f"{(overlap['siim_split'] == 'train').sum()} train, "
                f"{(overlap['siim_split'] == 'test').sum()} test) and are left out of pretraining, "
                f"which uses {len(pretrain)} images; its findings:"
            )
            nih = pretrain
        counts = {name: int(nih[name].sum()) for name in FINDINGS if name in nih}
        section.figure(
            figures.finding_bars(counts, "NIH findings (an image may have several)"), "NIH findings"
        )
    return section


def _sample_grid(section: Section, inputs: ReportInputs, size: int, train: pd.DataFrame) -> None:
    """Four positive and four negative train images with their masks (picked from the index)."""
    rows, root = _manifest(inputs, size)
    positive = set(train.loc[train["has_pneumothorax"] == 1, "image_id"])
    listed = [i for i in rows.index if i in positive][:4]
    listed += [i for i in rows.index if i not in positive][: 8 - len(listed)]
    tiles, titles = [], []
    for image_id in listed:
        image, mask = (
            read_grey(root / rows.loc[image_id, "image"]),
            read_grey(root / rows.loc[image_id, "mask"]),
        )
        tiles.append(figures.outlined(image, [(mask > 0, (255, 60, 60))]))
        titles.append(("pneumothorax" if image_id in positive else "none") + f" ({image_id[-8:]})")
    if tiles:
        section.figure(
            figures.image_grid(
                tiles,
                titles,
                title=f"repacked train images at {size} px, true masks outlined in red",
            ),
            "sample images",
        )


# How the curves name their metric (metrics.csv's column): as the score tables name it.
CURVE_LABELS = {"competition": "competition at 0.5, no area"}


def training_section(inputs: ReportInputs) -> Section:
    section = Section("training", "Training curves")
    found = False
    jobs: dict[tuple[str, str], dict[str, Path]] = {}
    for path in inputs.metrics:
        stage, arch, fold = training_job_of(path)
        jobs.setdefault((stage, arch), {})["NIH" if fold is None else fold_name(fold)] = path
    section.text(
        "Held-out curves: each epoch's model on its fold's held-out images at the stage's size. "
        "A segmenter's competition score there is taken at 0.5 with no minimum area, as the "
        f"segmenter table's '{DEFAULT_LABEL}' column below; on weak models that draws specks on "
        "empty images and scores far below the tuned triplet ('own best triplet'), which the "
        "curves do not search."
    )
    for stage, metric_default in (
        ("pretrain", "auc"),
        ("classify", "auc"),
        ("segment", "competition"),
    ):
        for (of_stage, arch), files in sorted(jobs.items()):
            if of_stage != stage:
                continue
            histories = {label: pd.read_csv(path) for label, path in sorted(files.items())}
            found = True
            metric = (
                metric_default if metric_default in next(iter(histories.values())) else "val_loss"
            )
            label = CURVE_LABELS.get(metric, metric)
            section.figure(
                figures.training_curves(histories, metric, f"{stage}: {arch}", label),
                f"{stage} {arch} curves",
            )
    if not found:
        section.text("No training in this run.")
    return section


def _spread(scores: list[float]) -> str:
    values = pd.Series(scores, dtype=float).dropna()
    if values.empty:
        return ""
    return (
        f"{values.mean():.4f} ± {values.std(ddof=0):.4f}"
        if len(values) > 1
        else f"{values.iloc[0]:.4f}"
    )


def result_table(scores: ScoreTable) -> pd.DataFrame:
    """The headline rows: the cross-fitted cascade with its interval, then the cascade that
    ships (in-sample, at each size it was scored at) and the same blend without its gate, the
    blend, the best architecture, the all-empty baseline, and the AUC of the classifiers and of
    the gate. ``chosen on`` is scores.csv's ``selected_on``: what each number's choices saw."""
    seg = scores.select(kind=Kind.SEGMENTER)
    rows = []

    def add(what: str, row: ScoreRow) -> None:
        rows.append((what, row.score, row.scored_at.label(), row.selected_on.value))

    for r in seg.select(level=Level.CASCADE_NESTED):
        interval = f"{r.interval[0]:.4f}-{r.interval[1]:.4f}"
        add(f"cascade, each fold by choices made on the others (95 % interval {interval})", r)
    for r in seg.select(level=Level.CASCADE):
        add("cascade (blend, gate, triplet) chosen on all folds", r)
    for r in seg.select(level=Level.CASCADE_UNGATED):
        add("the same blend without a gate (its own best triplet)", r)
    for r in seg.select(level=Level.CASCADE_GATED):
        add(f"the same blend behind its best gate above 0 ({r.cascade.gate:g})", r)
    for r in seg.select(level=Level.BLEND, metric=Metric.COMPETITION_TUNED):
        add("segmenter blend, its own best triplet", r)
    architectures = seg.select(level=Level.ARCHITECTURE, metric=Metric.COMPETITION_TUNED)
    if len(architectures):
        best = max(architectures, key=lambda r: r.score)
        add(f"best architecture ({best.arch})", best)
    for r in seg.select(level=Level.ALL_EMPTY):
        add("all-empty baseline (every image predicted empty)", r)
    for r in scores.select(kind=Kind.CLASSIFIER, level=Level.BLEND):
        add("classifier blend (ROC AUC)", r)
    for r in scores.select(kind=Kind.GATE, level=Level.BLEND):
        add("the gate: classifiers and segmenter heads blended (ROC AUC)", r)
    return pd.DataFrame(rows, columns=["what", "score", "scored at", "chosen on"])


def model_table(scores: ScoreTable, kind: Kind) -> pd.DataFrame:
    """Architecture x member: mean ± spread (std) over folds of the single models, and each
    architecture's OOF over all its folds (members averaged)."""
    part = scores.select(kind=kind)
    segmenters = kind == Kind.SEGMENTER
    metrics = (
        {Metric.COMPETITION_TUNED: TUNED_LABEL, Metric.COMPETITION_DEFAULT: DEFAULT_LABEL}
        if segmenters
        else {Metric.AUC: "ROC AUC"}
    )

    def row(arch: str, member: str, folds, of: ScoreTable) -> dict:
        found = {
            "architecture": arch,
            "member": member,
            "folds": folds,
            **{
                label: _spread([r.score for r in of.select(metric=m)])
                for m, label in metrics.items()
            },
        }
        if segmenters:  # its own best triplet no better than drawing nothing
            tuned = of.select(metric=Metric.COMPETITION_TUNED)
            found[AT_BASELINE] = _at_baseline(tuned)
        return found

    rows = []
    for arch in dict.fromkeys(r.arch for r in part if r.arch is not None):
        single = part.select(level=Level.SINGLE, arch=arch)
        for member in dict.fromkeys(r.member for r in single):
            of = single.select(member=member)
            rows.append(row(arch, member, len({r.fold for r in of}), of))
        whole = part.select(level=Level.ARCHITECTURE, arch=arch)
        rows.append(row(arch, "kept members averaged, all folds", "", whole))
    return pd.DataFrame(rows)


# The model table's segmenter columns, named as the training curves name their metric.
TUNED_LABEL = "own best triplet (chosen on these images)"
DEFAULT_LABEL = "at 0.5, no area (the curves' metric)"
AT_BASELINE = "at the all-empty baseline"


def _at_baseline(tuned: ScoreTable) -> str:
    """'2 of 5 folds' where some of the rows score exactly what predicting nothing scores on the
    same images ('yes' for one row), '' where none does."""
    flagged = sum(r.at_baseline for r in tuned)
    if not flagged:
        return ""
    return "yes" if len(tuned) == 1 else f"{flagged} of {len(tuned)} folds"


def headline_text(oof: OofSummary) -> str:
    """The OOF result in one paragraph: the cross-fitted headline with its interval first, then
    the in-sample score of the cascade that ships, labelled as chosen on the images it scores."""
    metric = (
        f"Competition metric (mean Dice per image, empty vs empty = 1) on {oof.images} OOF "
        f"images at {oof.cascade_scored_at.label()} (the competition's way: each mask drawn at "
        "its image's own size against the label file)."
    )
    in_sample = (
        f"In-sample (blend, gate and thresholds chosen on these same images, so optimistic): "
        f"{oof.cascade_in_sample:.4f}, {oof.cascade_in_sample_at_size:.4f} on the "
        f"{oof.size} px maps where the thresholds were searched"
    )
    if oof.cascade_interval is not None:
        low, high = oof.cascade_interval
        lead = (
            f"Cascade {oof.cascade:.4f} ({100 * oof.cascade_confidence:.0f} % bootstrap "
            f"interval {low:.4f}-{high:.4f}), each fold's images scored by the choices made on the "
            "other folds only. "
        )
    else:
        lead = f"Cascade {oof.cascade:.4f} (no cross-fitted estimate: one fold). "
    return (
        f"{lead}{metric} {in_sample}; best single architecture "
        f"{oof.best_architecture:.4f}; all-empty baseline {oof.all_empty:.4f}."
    )


def scores_section(inputs: ReportInputs) -> tuple[Section, Section]:
    section, weights = (
        Section("scores", "Out-of-fold scores"),
        Section("weights", "Blending weights"),
    )
    scores, spec = _scores(inputs.scores), _spec(inputs.ensemble)
    if scores is None or spec is None:
        section.text("No ensemble in this run.")
        weights.text("No ensemble in this run.")
        return section, weights
    search = spec.searched
    oof = search.oof
    section.warnings(list(search.warnings))
    section.text(headline_text(oof))
    section.table(result_table(scores))
    section.text(
        "The winners' levers of SIIM-ACR, each switched on alone against this recipe, have a page of "
        "their own: results/ablation/report.html (target results/ablation/summary.csv, not part of "
        "'all'), as have the compound-scaling and RandAugment searches."
    )
    tuned = scores.select(
        kind=Kind.SEGMENTER,
        level=(Level.ARCHITECTURE, Level.BLEND, Level.CASCADE),
        metric=(Metric.COMPETITION_TUNED, Metric.COMPETITION),
    )
    labels = [
        (f"{r.level}: {r.arch}" if r.arch is not None else str(r.level))
        + f" ({r.scored_at.label()})"
        for r in tuned
    ]
    section.figure(
        figures.score_bars(
            labels,
            [r.score for r in tuned],
            oof.all_empty,
            "OOF competition score",
            "mean Dice per image",
        ),
        "OOF scores",
    )
    section.text(
        "Segmenters by architecture and kept model: mean ± standard deviation over folds, at "
        f"{oof.size} px ('own best triplet': thresholds searched on the same held-out images; "
        "'at 0.5, no area': the metric of the training curves above, taken the same way on "
        f"the kept model's OOF maps). '{AT_BASELINE}': folds where the model's best triplet "
        "scores exactly what predicting every image empty scores there (it draws nothing "
        "worth drawing)."
    )
    section.table(model_table(scores, Kind.SEGMENTER))
    if len(scores.select(kind=Kind.CLASSIFIER)):
        section.text("Classifiers by architecture and kept model (ROC AUC over folds):")
        section.table(model_table(scores, Kind.CLASSIFIER))
    if len(scores.select(kind=Kind.HEAD)):
        section.text(
            "Segmenters' classification heads by architecture and kept model (ROC AUC over folds); "
            "the gate blends them with the classifiers, weights by OOF AUC:"
        )
        section.table(model_table(scores, Kind.HEAD))
    columns = [
        "kind",
        "level",
        "arch",
        "fold",
        "member",
        "metric",
        "score",
        "scored_at",
        "images",
        "cascade_gate",
        "cascade_top",
        "cascade_min_area",
        "cascade_bottom",
    ]
    section.details(
        f"All {len(scores)} score rows (results/ensemble/scores.csv)", scores.frame()[columns]
    )
    weights.text(
        f"Chosen on OOF predictions; the cascade: {spec.cascade.as_dict()} (min_area in pixels at "
        "1024)."
    )
    if spec.gate_weights:
        weights.figure(
            figures.weight_bars(
                spec.gate_weights, "the gate's weights: classifiers, heads (OOF AUC)"
            ),
            "the gate's weights",
        )
    weights.figure(
        figures.weight_bars(spec.segmenter_weights, "segmenter weights (OOF score)"),
        "segmenter weights",
    )
    blends = search.weight_search
    tried = pd.DataFrame(
        [
            {**dict(zip(blends.archs, weights_tried, strict=True)), "score": score}
            for weights_tried, score in blends.tried
        ]
    ).sort_values("score", ascending=False)
    weights.details(
        f"All {len(tried)} blends the {blends.method} search scored (at {blends.size} px, each "
        "with its own best triplet)",
        tried,
    )
    return section, weights


def thresholds_section(inputs: ReportInputs) -> Section:
    section = Section("thresholds", "Threshold search")
    grid, spec = _read(inputs.grid), _spec(inputs.ensemble)
    if grid is None or spec is None:
        section.text("No threshold search in this run.")
        return section
    chosen = spec.cascade
    at = grid[np.isclose(grid["gate"], chosen.gate) & np.isclose(grid["bottom"], chosen.bottom)]
    section.figure(
        figures.heatmap(
            at,
            "top",
            "min_area",
            f"score by top threshold and minimum area "
            f"(gate {chosen.gate:g}, bottom {chosen.bottom:g})",
            "top threshold",
            "minimum area (pixels at 1024)",
            (chosen.top, chosen.min_area),
        ),
        "heatmap 1",
    )
    at = grid[np.isclose(grid["top"], chosen.top) & np.isclose(grid["min_area"], chosen.min_area)]
    section.figure(
        figures.heatmap(
            at,
            "gate",
            "bottom",
            f"score by classifier gate and bottom threshold "
            f"(top {chosen.top:g}, area {chosen.min_area:g})",
            "classifier gate",
            "bottom threshold",
            (chosen.gate, chosen.bottom),
        ),
        "heatmap 2",
    )
    section.text(
        "The red square is the chosen combination; each cell is the best score over the axes not shown "
        "when they are fixed at the chosen values."
    )
    return section


def examples_section(inputs: ReportInputs) -> Section:
    """Best, median and worst OOF images (among those with a true or a predicted region)."""
    section = Section("examples", "Predicted against true masks (OOF)")
    images = _read(inputs.images, dtype={"image_id": str})
    spec = _spec(inputs.ensemble)
    blend_path = inputs.maps
    if images is None or spec is None or blend_path is None or not blend_path.is_file():
        section.text("No OOF outcomes in this run.")
        return section
    shown = images[
        (images["truth_pixels_native"] > 0) | (images["predicted_pixels_native"] > 0)
    ].sort_values("dice_native")
    if shown.empty:
        section.text("No OOF image has a true or predicted region.")
        return section
    picks = {"best": shown.iloc[-1], "median": shown.iloc[len(shown) // 2], "worst": shown.iloc[0]}
    manifest, root = _manifest(inputs, spec.searched.segmenter_size)
    # The blended OOF maps, in the order of oof_images.csv: only the three rows shown are read.
    blended = maps.read_rows(blend_path, [int(row.name) for row in picks.values()])
    tiles, titles = [], []
    for k, (name, row) in enumerate(picks.items()):
        probability = (
            None if pd.isna(row["classifier_probability"]) else float(row["classifier_probability"])
        )
        predicted = binarise(blended[k], spec.cascade, probability)
        image = read_grey(root / manifest.loc[row["image_id"], "image"])
        truth = read_grey(root / manifest.loc[row["image_id"], "mask"]) > 0
        tiles.append(figures.outlined(image, [(truth, (60, 220, 60)), (predicted, (255, 60, 60))]))
        titles.append(f"{name}: Dice {row['dice_native']:.3f} at full size")
    section.figure(
        figures.image_grid(
            tiles, titles, columns=3, title="green: true mask, red: the cascade's mask"
        ),
        "OOF examples",
    )
    return section


def runtime_section(inputs: ReportInputs) -> Section:
    section = Section("runtime", "Run time per rule")
    rows = []
    for tsv in sorted(inputs.benchmarks):
        frame = pd.read_csv(tsv, sep="\t")
        rows.append(
            {
                "rule": benchmark_rule_of(tsv),
                "seconds": float(frame["s"].iloc[-1]),
                "max_rss_mb": float(pd.to_numeric(frame["max_rss"], errors="coerce").iloc[-1]),
            }
        )
    if not rows:
        section.text("No benchmark files in this run.")
        return section
    table = (
        pd.DataFrame(rows)
        .groupby("rule")
        .agg(
            jobs=("seconds", "size"),
            total_s=("seconds", "sum"),
            mean_s=("seconds", "mean"),
            max_s=("seconds", "max"),
            max_rss_mb=("max_rss_mb", "max"),
        )
        .sort_values("total_s")
    )
    section.figure(figures.runtime_bars(table), "run times")
    section.table(table.reset_index(), digits=1)
    return section


def scaling_section(summary_csv: Path, search_json: Path, plot_png: Path) -> Section:
    section = Section("scaling", "Compound scaling search")
    summary = _read(summary_csv)
    search = _json(search_json) or {}
    section.warnings(search.get("warnings", []))
    section.text(
        f"Every candidate is scored at one common size: {search.get('scored_at', '')}, with "
        "the triplet searched on its own maps. flops_ratio is the network's measured forward "
        "FLOPs over B0's, the quantity the grid was screened by; nominal_flops_ratio is "
        "(alpha * beta^2 * gamma^2)^phi before rounding; merged lists the grid points that "
        "round to the same network, trained once under its name."
    )
    if plot_png.is_file():
        section.figure(plot_png.read_bytes(), "score against FLOPs")
    section.table(summary)
    return section


def page_html(sections: list[Section], title: str) -> str:
    """A self-contained page of sections, in the report's order (others after, as given)."""
    order = {key: k for k, key in enumerate(SECTIONS)}
    sections = sorted(sections, key=lambda s: order.get(s.key, len(SECTIONS)))
    nav = "".join(f"<a href='#{s.key}'>{html.escape(s.title)}</a>" for s in sections)
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><nav>{nav}</nav>"
        + "".join(s.html() for s in sections)
        + "</body></html>"
    )


def calibration_section(inputs: ReportInputs) -> Section:
    """The gate's reliability on OOF images before and after its calibration (the 'after'
    cross-fitted: each fold's images calibrated by a map fitted on the other folds)."""
    section = Section("calibration", "Calibration of the image-level probability")
    images, spec = _read(inputs.images), _spec(inputs.ensemble)
    if images is None or spec is None or images["classifier_probability"].isna().all():
        section.warnings(["no image-level probability (no classifier or head) to calibrate"])
        return section
    labels = (images["truth_pixels_native"] > 0).to_numpy().astype(int)
    method = spec.calibration.method if spec.calibration is not None else "none"
    probabilities = {
        "before": images["classifier_probability"].to_numpy(),
        f"after ({method}, cross-fitted)": images["calibrated_probability"].to_numpy(),
    }
    tables = {k: reliability_table(p, labels) for k, p in probabilities.items()}
    eces = {k: expected_calibration_error(p, labels) for k, p in probabilities.items()}
    section.text(
        f"The gate's OOF probability on {len(labels)} images ({labels.sum()} with a "
        f"pneumothorax). Chosen calibration: {method}, by a cross-fitted proper score; the "
        "expected calibration error (10 equal-width bins) before and after is in "
        "results/ensemble/scores.csv (kind gate, metric ece)."
    )
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "reliability.png"
        reliability_diagram(tables, eces, path)
        section.figure(path.read_bytes(), "reliability diagram before and after calibration")
    choice = spec.searched.calibration_choice
    if choice:
        section.table(spec.searched.calibration_table())
    return section


def second_round_section(inputs: ReportInputs) -> list[Section]:
    """The NIH second round, where the run has one: pseudo-labels per fold (none for a mean
    teacher), and round 1 against round 2 on OOF."""
    scores = _scores(inputs.scores)
    comparison = round_comparison(scores) if scores is not None else pd.DataFrame()
    if comparison.empty and not inputs.pseudo_labels:
        return []
    section = Section("second_round", "NIH second round")
    section.text(
        "Per fold, that fold's first-round segmenters (blended) and classifiers labelled NIH "
        "images that are not SIIM images; the confident ones trained each architecture again "
        "beside the fold's SIIM training images (with a mean teacher: unlabelled, against an "
        "EMA teacher). OOF scores are on SIIM images only, round 2 under <arch>-round2."
    )
    if inputs.pseudo_labels:
        section.table(pseudo_label_counts(inputs.pseudo_labels))
    if comparison.empty:
        section.warnings(["no round-2 scores in scores.csv"])
    else:
        section.table(comparison)
    return [section]


def result_section(inputs: ReportInputs, provenance: Provenance | None) -> Section:
    """What the run achieved, first: the headline and where it came from (`report.result`)."""
    section = Section("result", "Result")
    if provenance is not None:
        section.text(provenance.text())
    scores = _scores(inputs.scores)
    headline = None if scores is None else Headline.of(scores, _read(inputs.images))
    if headline is None:
        section.text("No ensemble in this run.")
        return section
    section.text(headline.text())
    section.table(headline.table())
    return section


def build_report(
    inputs: ReportInputs,
    out_html: str | os.PathLike,
    title: str = "ptxseg run",
    provenance: Provenance | None = None,
) -> list[str]:
    """Write the page of a run from its files; return the keys of its sections."""
    sections = [
        result_section(inputs, provenance),
        data_section(inputs),
        training_section(inputs),
        *scores_section(inputs),
        calibration_section(inputs),
        *second_round_section(inputs),
        thresholds_section(inputs),
        examples_section(inputs),
        runtime_section(inputs),
    ]
    page = page_html(sections, title)
    atomic.write_text(out_html, page)
    log.info("report with %d sections -> %s (%.1f MB)", len(sections), out_html, len(page) / 2**20)
    return [s.key for s in sections]


def build_scaling_report(
    summary_csv: str | os.PathLike,
    search_json: str | os.PathLike,
    plot_png: str | os.PathLike,
    out_html: str | os.PathLike,
) -> None:
    """The compound scaling search's own page (the search is not part of every run)."""
    section = scaling_section(Path(summary_csv), Path(search_json), Path(plot_png))
    atomic.write_text(out_html, page_html([section], "ptxseg compound scaling search"))
