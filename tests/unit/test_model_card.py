"""The model card: every number read from the run's files (change a file, the card follows),
calibration and the second round present or absent, demo wording, missing files named, atomic
writing, and the rule's inputs matching the function's arguments."""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from ensemble_examples import oof_summary, search_record
from ensemble_examples import spec as example_spec

import ptxseg
from ptxseg.contracts.ensemble_spec import EnsembleSpec, Preprocessing
from ptxseg.contracts.scores import Kind, Level, Metric, ScoredAt, ScoreRow, ScoreTable, SelectedOn
from ptxseg.contracts.search_record import CalibrationOption
from ptxseg.data.repack import Normalisation
from ptxseg.io import atomic
from ptxseg.layout import Layout
from ptxseg.report import model_card
from ptxseg.report.model_card import (
    fold_scores,
    fold_spread,
    markdown_table,
    own_size_cascade,
    training_table,
    write_model_card,
)
from ptxseg.scoring.calibrator import Calibrator
from ptxseg.scoring.cascade import Cascade

ROOT = Path(__file__).resolve().parents[2]
OWN = ScoredAt.own_size([(1024, 1024)], "train-rle.csv")
MAPS = ScoredAt.maps(64)

# Two folds of OOF images: fold 0 scores (1 + 0 + 0.5 + 1) / 4 = 0.625 with 2 of 4 empty,
# fold 1 scores (1 + 0.2) / 2 = 0.6 with 1 of 2 empty.
OOF = {
    "fold": [0, 0, 0, 0, 1, 1],
    "dice_native": [1.0, 0.0, 0.5, 1.0, 1.0, 0.2],
    "truth_pixels_native": [0, 10, 20, 0, 0, 5],
}


def _images(oof: dict) -> pd.DataFrame:
    n = len(oof["fold"])
    return pd.DataFrame(
        {
            "image_id": [f"img{k}" for k in range(n)],
            "fold": oof["fold"],
            "classifier_probability": [0.5] * n,
            "truth_pixels": oof["truth_pixels_native"],
            "predicted_pixels": [0] * n,
            "dice": oof["dice_native"],
            "dice_native": oof["dice_native"],
            "truth_pixels_native": oof["truth_pixels_native"],
            "predicted_pixels_native": [0] * n,
        }
    )


def _scores(cascade: float = 0.6125, calibrated: bool = False, round2: bool = False):
    def row(level, metric, at, score, arch=None, kind=Kind.SEGMENTER):
        return ScoreRow(kind, level, metric, at, 6, score, arch=arch)

    rows = [
        row(Level.CASCADE, Metric.COMPETITION, MAPS, 0.9),
        row(Level.CASCADE, Metric.COMPETITION, OWN, cascade),
        row(Level.ARCHITECTURE, Metric.COMPETITION_TUNED, MAPS, 0.55, "unet"),
    ]
    if round2:
        rows.append(row(Level.ARCHITECTURE, Metric.COMPETITION_TUNED, MAPS, 0.58, "unet-round2"))
    if calibrated:
        image = ScoredAt.image_level()
        rows += [
            row(Level.UNCALIBRATED, Metric.ECE, image, 0.123, kind=Kind.GATE),
            row(Level.CALIBRATED, Metric.ECE, image, 0.045, kind=Kind.GATE),
        ]
    return ScoreTable(tuple(rows))


def _ensemble(calibrated: bool = False, round2: bool = False, **oof) -> EnsembleSpec:
    """The ensemble the card reads; ``oof``: changes to its OOF summary (in-sample by default)."""
    segmenters = {"unet": 0.7, "unet-round2": 0.3} if round2 else {"unet": 1.0}
    summary = oof_summary(
        images=6,
        cascade=0.6125,
        cascade_interval=None,
        cascade_confidence=None,
        cascade_estimate=SelectedOn.SAME_IMAGES,
        nested_folds=(),
        cascade_scored_at=OWN,
        cascade_in_sample=0.6125,
        size=64,
    )
    search = search_record(tuple(segmenters), segmenter_size=128, oof=replace(summary, **oof))
    calibration = None
    if calibrated:
        calibration = Calibrator("temperature", temperature=1.7)
        search = replace(
            search,
            calibration_choice=tuple(
                CalibrationOption(m, b, 0.5, e, d, 0.01, m == "temperature",
                                  "lowest cross-fitted brier" if m == "temperature" else "")
                for m, b, e, d in [("none", 0.21, 0.123, 0.02), ("temperature", 0.19, 0.051, 0.0),
                                   ("isotonic", 0.2, 0.07, 0.01)]
            ),
        )  # fmt: skip
    return example_spec(
        cascade=Cascade(gate=0.35, top=0.75, min_area=2048.0, bottom=0.4),
        gate_weights={"densenet": 0.6, "head:unet": 0.4},
        segmenter_weights=segmenters,
        members={"classify": ["best"], "segment": ["swa", "snapshot0"]},
        preprocessing=Preprocessing(
            Normalisation("clahe", 2.0, 8),
            {96: (0.5, 0.25), 128: (0.5, 0.25)},
            {"classify": 96, "segment": 128},
            2,
            ["none", "hflip", 1.0, 1.25],
        ),
        calibration=calibration,
        search=search,
    )


def _write_run(
    root: Path,
    *,
    train: int = 8,
    test: int = 3,
    oof: dict = OOF,
    overlap: int = 2,
    epochs: int = 7,
    calibrated: bool = False,
    round2: bool = False,
    pseudo: bool = False,
) -> dict:
    """The files the card reads, in a results layout under ``root``; the write_model_card kwargs."""
    L = Layout(str(root))
    paths = {
        "ensemble": L.ensemble("ensemble.json"),
        "scores": L.ensemble("scores.csv"),
        "images": L.ensemble("oof_images.csv"),
        "index": L.data("siim_index.csv"),
        "rejects": L.data("siim_rejects.csv"),
        "folds": L.data("siim_folds.csv"),
        "nih": L.data("nih_index.csv"),
        "nih_pretrain": L.data("nih_pretrain_index.csv"),
        "overlap": L.data("nih_siim_overlap.csv"),
    }
    for path in paths.values():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    _ensemble(calibrated, round2).write(paths["ensemble"])
    _scores(calibrated=calibrated, round2=round2).write(paths["scores"])
    _images(oof).to_csv(paths["images"], index=False)
    positive = [k % 2 for k in range(train)]
    pd.DataFrame(
        {
            "image_id": [f"s{k}" for k in range(train + test)],
            "split": ["train"] * train + ["test"] * test,
            "has_pneumothorax": positive + [0] * test,
            "rows": 1024,
            "columns": 1024,
            "patient_sex": ["F", "M"] * ((train + test) // 2) + ["F"] * ((train + test) % 2),
            "patient_age": 40,
            "view_position": "PA",
        }
    ).to_csv(paths["index"], index=False)
    pd.DataFrame(
        {"image_id": ["bad"], "split": ["train"], "path": ["x"], "reason": ["truncated"]}
    ).to_csv(paths["rejects"], index=False)
    pd.DataFrame(
        {"image_id": [f"s{k}" for k in range(train)], "fold": [(k // 2) % 2 for k in range(train)],
         "has_pneumothorax": positive, "group": [f"p{k}" for k in range(train)]}
    ).to_csv(paths["folds"], index=False)  # fmt: skip
    nih_ids = [f"n{k}" for k in range(10)]
    pd.DataFrame({"image_id": nih_ids, "patient_id": range(10), "split": "train"}).to_csv(
        paths["nih"], index=False
    )
    pd.DataFrame({"nih_image_id": nih_ids[:overlap], "siim_image_id": [f"s{k}" for k in range(overlap)],
                  "siim_split": "train"}).to_csv(paths["overlap"], index=False)  # fmt: skip
    pd.DataFrame({"image_id": nih_ids[overlap:]}).to_csv(paths["nih_pretrain"], index=False)
    summaries = [L.pretrain_file("densenet", "summary.json")]
    atomic.write_json(
        summaries[0],
        {"arch": "densenet", "epochs": 3, "findings": ["Effusion", "Mass"],
         "excluded_findings": ["Pneumothorax"]},
    )  # fmt: skip
    for stage, arch in [("classify", "densenet"), ("segment", "unet")] + (
        [("segment", "unet-round2")] if round2 else []
    ):
        for fold in range(2):
            path = L.fold_file(stage, arch, fold, "summary.json")
            summary = {"arch": arch.removesuffix("-round2"), "fold": fold, "size": 128,
                       "epochs": epochs + fold}  # fmt: skip
            if arch == "unet":
                summary["stages"] = [{"size": 64, "epochs": 2}, {"size": 128, "epochs": 5}]
            atomic.write_json(path, summary)
            summaries.append(path)
    pseudo_labels = []
    if pseudo:
        for fold in range(2):
            path = L.pseudo_label_file(fold, "summary.json")
            atomic.write_json(
                path,
                {"fold": fold, "candidates": 40 + fold, "positive": 11, "empty": 13,
                 "left_out": {"uncertain": 16 + fold}},
            )  # fmt: skip
            pseudo_labels.append(path)
    return {
        **paths,
        "summaries": summaries,
        "pseudo_labels": pseudo_labels,
        "demo": True,
        "out_md": root / "model_card.md",
    }


def _card(tmp_path: Path, **kwargs) -> str:
    demo = kwargs.pop("demo", True)
    inputs = _write_run(tmp_path / "results", **kwargs)
    inputs["demo"] = demo
    return write_model_card(**inputs)


# ----------------------------------------------------------------------------- tables


def test_fold_scores_are_the_hand_computed_means_of_dice_native():
    table = fold_scores(_images(OOF))
    assert table["fold"].tolist() == [0, 1]
    assert table["images"].tolist() == [4, 2]
    assert table["positives"].tolist() == [2, 1]
    assert table["score"].tolist() == pytest.approx([0.625, 0.6])
    assert table["all-empty baseline"].tolist() == pytest.approx([0.5, 0.5])
    assert table["score on positives"].tolist() == pytest.approx([0.25, 0.2])
    assert table["score on empties"].tolist() == pytest.approx([1.0, 1.0])
    mean, std = fold_spread(table)
    assert mean == pytest.approx(0.6125)
    assert std == pytest.approx(0.025 / 2**0.5)


def test_the_cascade_score_is_the_own_size_row_not_the_map_size_one():
    row = own_size_cascade(_scores(cascade=0.4321))
    assert row is not None and row.score == pytest.approx(0.4321)
    assert own_size_cascade(ScoreTable(_scores().rows[:1])) is None  # the map-size row only


def test_training_table_names_the_architecture_by_its_path_and_lists_stages(tmp_path):
    L = Layout(str(tmp_path))
    rows = [
        (L.fold_file("segment", "unet-round2", 0, "summary.json"), {"arch": "unet", "epochs": 4,
                                                                     "size": 128}),
        (L.fold_file("segment", "unet", 0, "summary.json"),
         {"arch": "unet", "epochs": 7, "size": 128, "stages": [{"size": 64, "epochs": 2}]}),
        (L.fold_file("segment", "unet", 1, "summary.json"),
         {"arch": "unet", "epochs": 9, "size": 128, "stages": [{"size": 64, "epochs": 2}]}),
    ]  # fmt: skip
    table = training_table(rows)
    assert table["architecture"].tolist() == ["unet-round2", "unet"]
    assert table["jobs"].tolist() == [1, 2]
    assert table["epochs"].tolist() == ["4", "7, 9"]
    assert table["stages (size x epochs)"].tolist() == ["", "64 px x 2"]


def test_markdown_table_formats_floats_integers_booleans_and_pipes():
    frame = pd.DataFrame({"a": [1, 2], "b": [0.12345, float("nan")], "c": [True, False],
                          "d": ["x|y", "z"]})  # fmt: skip
    assert markdown_table(frame, digits=2).splitlines() == [
        "| a | b | c | d |",
        "|---|---|---|---|",
        "| 1 | 0.12 | yes | x\\|y |",
        "| 2 |  | no | z |",
    ]


# ----------------------------------------------------------------------------- the card


def test_the_card_has_its_sections_version_and_the_ensembles_hash(tmp_path):
    card = _card(tmp_path)
    headings = re.findall(r"^## (.+)$", card, flags=re.M)
    assert headings == [
        "Intended use",
        "Training data",
        "Recipe",
        "OOF scores at each image's own size",
        "Calibration of the gate probability",
        "Second round (NIH pseudo-labels)",
        "Limits of what was measured",
    ]
    assert f"ptxseg {ptxseg.__version__}" in card
    assert "not a medical device" in card and "radiologist" in card
    assert "Wang et al. (2017) reported" in card and "Rueckel et al. (2020)" in card
    assert (tmp_path / "results" / "model_card.md").read_text() == card


def test_the_ensembles_hash_follows_its_content(tmp_path):
    first = _card(tmp_path / "a")
    inputs = _write_run(tmp_path / "b")
    blend = json.loads(Path(inputs["ensemble"]).read_text())
    blend["cascade"]["top"] = 0.8
    atomic.write_json(inputs["ensemble"], blend)
    second = write_model_card(**inputs)
    digest = re.compile(r"sha256 `([0-9a-f]{16})`")
    assert digest.search(first)[1] != digest.search(second)[1]
    assert "top 0.8" in second and "top 0.75" in first


def test_oof_numbers_on_the_card_are_computed_from_the_files(tmp_path):
    card = _card(tmp_path)
    assert "| 0 | 4 | 2 | 0.6250 | 0.5000 | 0.2500 | 1.0000 |" in card
    assert "| 1 | 2 | 1 | 0.6000 | 0.5000 | 0.2000 | 1.0000 |" in card
    assert "score 0.6125 ± 0.0177" in card
    assert "pooled over all 6 images 0.6167" in card  # (1 + 0 + .5 + 1 + 1 + .2) / 6
    assert "chosen on these same images (optimistic" in card  # no cross-fitted estimate here
    assert "chosen on all 6 images and scored on the same images, so optimistic): 0.6125" in card
    assert "6 OOF images in 2 folds" in card


def test_the_card_leads_with_the_cross_fitted_score_and_its_interval(tmp_path):
    """Where the search scored each fold by choices made on the others, that is the headline;
    the in-sample score follows, labelled as chosen on its own images."""
    nested = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]  # fold 0: 0.5, fold 1: 0.5
    inputs = _write_run(tmp_path / "results")
    images = pd.read_csv(inputs["images"]).assign(dice_native_nested=nested)
    images.to_csv(inputs["images"], index=False)
    _ensemble(
        cascade=0.5,
        cascade_interval=(0.1667, 0.8333),
        cascade_confidence=0.95,
        cascade_estimate=SelectedOn.OTHER_FOLDS,
    ).write(inputs["ensemble"])
    card = write_model_card(**{**inputs, "demo": False})
    section = card[card.index("## OOF scores") : card.index("## Calibration")]
    assert "**Headline: 0.5000** (95 % bootstrap interval over images 0.1667-0.8333)" in section
    assert "| 0 | 4 | 2 | 0.5000 | 0.5000 | 0.0000 | 1.0000 |" in section
    assert "pooled over all 6 images 0.5000" in section
    assert section.index("Headline") < section.index("In-sample") < len(section)
    assert "cross-fitted (each fold scored by choices made without it)" in card


def test_changing_an_input_number_changes_the_card_accordingly(tmp_path):
    oof = {**OOF, "dice_native": [1.0, 0.0, 0.5, 1.0, 1.0, 0.6]}
    card = _card(tmp_path, oof=oof, train=12, test=5, overlap=4, epochs=11)
    assert "| 1 | 2 | 1 | 0.8000 | 0.5000 | 0.6000 | 1.0000 |" in card
    assert "score 0.7125 ±" in card
    assert "12 train images, 6 with a pneumothorax (50.0%); 5 test images" in card
    assert "4 of them are SIIM images" in card and "pretraining used 6 images" in card
    assert "| classify | densenet | 2 | 11, 12 | 128 |" in card
    assert "the 5 SIIM test images' labels are not used" in card


def test_data_recipe_and_fold_facts_come_from_the_files(tmp_path):
    card = _card(tmp_path)
    assert "8 train images, 4 with a pneumothorax (50.0%); 3 test images" in card
    assert "1 file rejected by the index" in card
    assert "| 0 | 4 | 2 | 0.500 |" in card  # siim_folds.csv: fold, images, positives, rate
    assert "Train image sizes (px): 1024x1024 (8)" in card
    assert "10 images indexed; 2 of them are SIIM images" in card
    assert "8 matched" not in card and "its 2 matched NIH images" in card
    assert (
        "densenet was pretrained on 2 NIH findings (left out: Pneumothorax) over 3 epochs" in card
    )
    assert "| densenet | classifier | 0.600 |" in card
    assert "| head:unet | classification head of unet | 0.400 |" in card
    assert "| unet | 1 | 1.000 | all images |" in card
    assert "gate 0.35, top 0.75, min_area 2048, bottom 0.4" in card
    assert "below 0.35 is empty" in card
    assert "classifiers at 96 px; segmenters at 128 px" in card
    assert "none, hflip; scales 1, 1.25" in card
    assert "| segment | unet | 2 | 7, 8 | 128 | 64 px x 2, 128 px x 5 |" in card
    assert "classify: best; segment: swa, snapshot0" in card


def test_calibration_absent_and_present(tmp_path):
    absent = _card(tmp_path / "a")
    section = absent.split("## Calibration")[1].split("##")[0]
    assert "Not calibrated in this run" in section
    present = _card(tmp_path / "b", calibrated=True)
    section = present.split("## Calibration")[1].split("##")[0]
    assert "Not calibrated" not in section
    assert "Method: **temperature** (temperature 1.7)" in section
    assert "0.1230 before, 0.0450 after" in section
    assert (
        "| temperature | 0.1900 | 0.5000 | 0.0510 | 0.0000 | 0.0100 | yes | lowest cross-fitted "
        "brier |" in section
    )
    assert "| isotonic | 0.2000 | 0.5000 | 0.0700 | 0.0100 | 0.0100 | no |  |" in section
    assert "not calibrated" in absent.split("## Limits")[1]
    assert "not calibrated" not in present.split("## Limits")[1]


def test_second_round_absent_and_present(tmp_path):
    absent = _card(tmp_path / "a")
    assert "No second round in this run." in absent
    present = _card(tmp_path / "b", round2=True, pseudo=True)
    section = present.split("## Second round")[1].split("##")[0]
    assert "No second round" not in section
    assert "| 0 | 40 | 11 | 13 | 16 |" in section and "| 1 | 41 | 11 | 13 | 17 |" in section
    assert "| unet | 0.5500 | 0.5800 | 0.0300 |" in section
    assert "| unet-round2 | 2 | 0.300 | all images |" in present
    # A mean-teacher second round has no pseudo-labels, only the comparison.
    teacher = _card(tmp_path / "c", round2=True)
    section = teacher.split("## Second round")[1].split("##")[0]
    assert "| unet | 0.5500 | 0.5800 | 0.0300 |" in section and "pseudo-labelled" not in section
    assert "No pseudo-label counts" in section


def test_demo_and_real_data_wording(tmp_path):
    demo = _card(tmp_path / "a", demo=True)
    real = _card(tmp_path / "b", demo=False)
    assert demo.count("mean nothing clinically") >= 2
    assert "synthetic demo data set" in demo
    assert "mean nothing clinically" not in real and "demo data" not in real
    assert "the SIIM-ACR release" in real


@pytest.mark.parametrize("key", ["ensemble", "scores", "images", "folds", "overlap"])
def test_a_missing_required_file_is_named(tmp_path, key):
    inputs = _write_run(tmp_path / "results")
    Path(inputs[key]).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(inputs[key]))):
        write_model_card(**inputs)
    assert not Path(inputs["out_md"]).exists()


def test_a_missing_listed_summary_is_named(tmp_path):
    inputs = _write_run(tmp_path / "results", pseudo=True)
    Path(inputs["pseudo_labels"][1]).unlink()
    with pytest.raises(FileNotFoundError, match="pseudo_labels.*fold1"):
        write_model_card(**inputs)


def test_the_card_is_written_atomically_and_a_failure_keeps_the_old_one(tmp_path, monkeypatch):
    inputs = _write_run(tmp_path / "results")
    written = []
    real = atomic.write_text
    monkeypatch.setattr(
        model_card.atomic, "write_text", lambda path, text: written.append(path) or real(path, text)
    )
    write_model_card(**inputs)
    assert written == [inputs["out_md"]]
    Path(inputs["out_md"]).write_text("the old card\n")
    Path(inputs["scores"]).unlink()
    with pytest.raises(FileNotFoundError):
        write_model_card(**inputs)
    assert Path(inputs["out_md"]).read_text() == "the old card\n"
    assert [p.name for p in Path(inputs["out_md"]).parent.iterdir() if p.name.startswith(".")] == []


def test_the_rules_inputs_are_the_functions_file_arguments():
    rule = (ROOT / "workflow/rules/report.smk").read_text().split("rule model_card:")[1]
    inputs = rule.split("input:")[1].split("output:")[0]
    named = re.findall(r"^        (\w+)=", inputs, flags=re.M)
    arguments = set(inspect.signature(write_model_card).parameters) - {"demo", "out_md"}
    assert set(named) == arguments
    assert "demo=" in rule.split("params:")[1]
