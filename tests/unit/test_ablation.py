"""The ablation of the winners' levers: each lever's recipe and TTA from the config, the config's
refusals, where a lever's files are, and the summary and page on small synthetic searches."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from dag import ROOT
from ensemble_examples import oof_summary, search_record
from ensemble_examples import spec as example_spec

from ptxseg import config as cfg
from ptxseg.contracts.scores import Kind, Level, Metric, ScoredAt, ScoreRow, ScoreTable
from ptxseg.ensemble.ablation import lever_oof_files
from ptxseg.layout import BASELINE, Layout
from ptxseg.recipes import (
    ablation_arch,
    ablation_levers,
    lever_recipe,
    lever_train,
    member_names,
    recipe_for,
)
from ptxseg.report.ablation import (
    build_ablation_report,
    empty_note,
    lever_changes,
    noise_note,
    summarise,
    train_seconds,
    write_summary,
)
from ptxseg.scoring.cascade import Cascade

SCHEMA = cfg.load_schema()
DEMO = yaml.safe_load((ROOT / "config.yaml").read_text())


@pytest.fixture(scope="module")
def demo():
    return cfg.validate(DEMO, SCHEMA)


def _with_levers(levers: dict, arch="unet_resnet34") -> dict:
    raw = copy.deepcopy(DEMO)
    raw["ablation"] = {"arch": arch, "levers": levers}
    return raw


# Each lever's recipe and TTA: what the rule ablation_fold passes to its job.


def test_the_demo_levers_and_their_order(demo):
    assert ablation_arch(demo) == "unet_resnet34"
    levers = ablation_levers(demo)
    assert levers[0] == BASELINE and levers[1:] == sorted(DEMO["ablation"]["levers"])


def test_the_ablated_architecture_defaults_to_the_first_segmenter_by_name(demo):
    config = {**demo, "ablation": {**demo["ablation"], "arch": None}}
    assert ablation_arch(config) == sorted(demo["segment"]["archs"])[0] == "attention_unet"


def test_the_baseline_is_the_stage_recipe_with_the_stage_tta(demo):
    assert lever_recipe(demo, BASELINE) == recipe_for(demo, "segment", "unet_resnet34")
    assert lever_train(demo, BASELINE) == demo["train"]


def test_a_lever_recipe_is_the_stage_recipe_with_its_overrides_merged(demo):
    stage = recipe_for(demo, "segment", "unet_resnet34")
    head = lever_recipe(demo, "head")
    assert head["head"] == {"enabled": True, "weight": 0.1}
    assert {k: v for k, v in head.items() if k != "head"} == {
        k: v for k, v in stage.items() if k != "head"
    }
    progressive = lever_recipe(demo, "progressive")
    assert [(s["size"], s["epochs"]) for s in progressive["stages"]] == [(32, 2), (64, 4)]
    assert progressive["stages"][-1]["freeze_encoder_epochs"] == 1
    crops = lever_recipe(demo, "crops")
    assert crops["crop"] == {"size": 32, "positive_share": 0.7}
    combined = lever_recipe(demo, "combined_loss")["loss"]
    assert combined["name"] == "combined"
    assert {k: v for k, v in combined["weights"].items() if v} == {"bce": 1, "dice": 1, "focal": 1}
    lovasz = lever_recipe(demo, "symmetric_lovasz")["loss"]["weights"]
    assert {k: v for k, v in lovasz.items() if v} == {"bce": 1, "symmetric_lovasz": 1}
    assert lever_recipe(demo, "positives_only")["sampling"]["mode"] == "positive"
    # The merged recipe keeps the stage's members: an override cannot change them.
    for lever in ablation_levers(demo):
        assert member_names(lever_recipe(demo, lever)) == member_names(stage)


def test_a_lever_tta_replaces_train_tta_and_nothing_else(demo):
    train = lever_train(demo, "scale_tta")
    assert train["tta"] == ["none", "hflip", 1.0, 1.25]
    assert {k: v for k, v in train.items() if k != "tta"} == {
        k: v for k, v in demo["train"].items() if k != "tta"
    }
    assert lever_train(demo, "head") == demo["train"]  # no tta of its own
    assert lever_recipe(demo, "scale_tta") == lever_recipe(demo, BASELINE)


def test_the_lever_recipe_builds_the_fit_settings(demo):
    from ptxseg.runtime.options import Runtime
    from ptxseg.train.settings import FitSettings

    runtime = Runtime.from_config(demo["runtime"], lever_train(demo, "scale_tta"), 1)
    assert list(runtime.tta) == ["none", "hflip", 1.0, 1.25]
    settings = FitSettings.from_config(lever_recipe(demo, "progressive"), 1, runtime)
    assert [size for size, _ in settings.stage_plan(64)] == [32, 64]
    assert FitSettings.from_config(lever_recipe(demo, "head"), 1, runtime).head_weight == 0.1


# The config's refusals.


def test_a_lever_named_baseline_is_refused():
    raw = _with_levers({"baseline": {"recipe": {"head": {"enabled": True}}}})
    with pytest.raises(cfg.ConfigError, match=r"'ablation.levers.baseline': the name 'baseline'"):
        cfg.validate(raw, SCHEMA)


def test_a_lever_name_that_is_no_folder_name_is_refused():
    raw = _with_levers({"a/b": {"recipe": {"head": {"enabled": True}}}})
    with pytest.raises(cfg.ConfigError, match=r"'ablation.levers.a/b': a lever's name"):
        cfg.validate(raw, SCHEMA)


def test_a_lever_whose_last_stage_is_too_short_for_the_members_is_refused():
    # The demo keeps a snapshot (the first cycle ends at epoch 4) and SWA from epoch 3.
    stages = [{"size": 32, "epochs": 2}, {"size": 64, "epochs": 2}]
    raw = _with_levers({"short": {"recipe": {"stages": stages}}})
    with pytest.raises(cfg.ConfigError) as error:
        cfg.validate(raw, SCHEMA)
    message = str(error.value)
    assert "'ablation.levers.short.recipe.snapshots'" in message
    assert "'ablation.levers.short.recipe.swa.start_epoch'" in message


def test_the_shipped_demo_levers_pass_the_config_checks(demo):
    assert set(demo["ablation"]["levers"]) == {
        "head",
        "progressive",
        "crops",
        "scale_tta",
        "combined_loss",
        "symmetric_lovasz",
        "positives_only",
    }


# Where a lever's files are.


def test_the_baseline_reads_the_segment_stage_folds_and_a_lever_its_own():
    layout = Layout("out")
    assert layout.ablation_segmenter_dir(BASELINE, "u", 2) == "out/segment/u/fold2"
    assert layout.ablation_segmenter_dir("head", "u", 2) == "out/ablation/head/u/fold2"
    assert layout.ablation_model("head", "u", 1, "swa") == "out/ablation/head/u/fold1/model_swa.pt"
    assert (
        layout.ablation_oof_maps("head", "u", 1, "best") == "out/ablation/head/u/fold1/oof_best.h5"
    )
    assert layout.ablation_benchmark(BASELINE, "u", 0) == (
        "out/benchmarks/train_segmenter/u_fold0.tsv"
    )
    assert layout.ablation_benchmark("head", "u", 0) == (
        "out/benchmarks/ablation_fold/head_u_fold0.tsv"
    )
    assert layout.ablation_ensemble("head", "scores.csv") == "out/ablation/head/ensemble/scores.csv"
    assert layout.ablation_state("head", "u", 3) == "out/checkpoints/ablation/head/u/fold3.pt"
    pattern = layout.ablation_fold_file("{lever}", "{arch}", "{fold}", "summary.json")
    assert pattern.format(lever="head", arch="u", fold=0) == layout.ablation_fold_file(
        "head", "u", 0, "summary.json"
    )


def test_a_lever_search_reads_the_stage_classifiers_and_its_own_segmenter_folds():
    layout = Layout("out")
    for lever, folder in ((BASELINE, "out/segment/u"), ("crops", "out/ablation/crops/u")):
        classifiers, segmenters = lever_oof_files(layout, lever, ["c1", "c2"], "u", 2, ["best"])
        assert classifiers == {
            c: {k: f"out/classify/{c}/fold{k}/oof.csv" for k in range(2)} for c in ("c1", "c2")
        }
        assert list(segmenters) == ["u"]
        assert str(segmenters["u"][1].ids_csv) == f"{folder}/fold1/oof_ids.csv"
        assert str(segmenters["u"][1].maps["best"]) == f"{folder}/fold1/oof_best.h5"


# The summary on small synthetic searches.

IMAGES = [f"img{i}" for i in range(8)]


def _search(layout, lever, dice, *, gate=0.8, ungated=None, size=64, warnings=(), cascade_gate=0.3):
    """The files an ablation_search job writes that the summary reads."""
    native = ScoredAt.own_size([(1024, 1024)], "train-rle.csv")
    # ``dice``: each image's Dice by the choices made without its fold (the headline, which the
    # deltas compare); the in-sample figures beside it are higher, as a search on its own images is.
    oof = oof_summary(
        images=len(dice),
        cascade=float(np.mean(dice)),
        cascade_scored_at=native,
        cascade_in_sample=float(np.mean(dice)) + 0.02,
        cascade_in_sample_at_size=float(np.mean(dice)) - 0.01,
        size=size,
        all_empty=0.5,
    )
    spec = example_spec(
        cascade=Cascade(gate=cascade_gate),
        search=search_record(warnings=tuple(warnings), oof=oof),
    )
    spec.write(layout.ablation_ensemble(lever, "ensemble.json"))

    def row(kind, level, metric, score, at=native):
        return ScoreRow(kind, level, metric, at, len(dice), score)

    rows = [row(Kind.SEGMENTER, Level.CASCADE, Metric.COMPETITION, oof.cascade)]
    if gate is not None:
        image = ScoredAt.image_level()
        rows.append(row(Kind.GATE, Level.BLEND, Metric.AUC, gate, image))
        rows.append(row(Kind.CLASSIFIER, Level.BLEND, Metric.AUC, gate - 0.1, image))
    if ungated is not None:
        for score, at in ((ungated - 0.02, ScoredAt.maps(size)), (ungated, native)):
            rows.append(row(Kind.SEGMENTER, Level.CASCADE_UNGATED, Metric.COMPETITION, score, at))
    ScoreTable(tuple(rows)).write(layout.ablation_ensemble(lever, "scores.csv"))
    order = list(reversed(IMAGES)) if lever != BASELINE else IMAGES  # aligned by id, not row
    values = dict(zip(IMAGES, dice, strict=True))
    pd.DataFrame(
        {
            "image_id": order,
            "dice_native": [min(1.0, values[i] + 0.1) for i in order],
            "dice_native_nested": [values[i] for i in order],
        }
    ).to_csv(layout.ablation_ensemble(lever, "oof_images.csv"), index=False)


def _benchmark(path, seconds):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:{seconds}\t100\n")


@pytest.fixture
def three_levers(tmp_path):
    layout = Layout(str(tmp_path / "results"))
    base = [1, 1, 0, 1, 0.5, 1, 0, 1]
    # No image-level source: no gate row, and a cascade without a gate (it is its own ungated).
    _search(layout, BASELINE, base, gate=None, cascade_gate=0.0)
    _search(layout, "head", [d + 0.1 * (i % 2) for i, d in enumerate(base)], ungated=0.6)
    _search(layout, "crops", base, warnings=["gate 0.6 on the edge"])
    for k in range(2):
        _benchmark(layout.ablation_benchmark(BASELINE, "u", k), 10 + k)
        _benchmark(layout.ablation_benchmark("head", "u", k), 20)
    # crops: no benchmarks, the epochs' seconds of metrics.csv instead
    for k in range(2):
        metrics = layout.ablation_segmenter_file("crops", "u", k, "metrics.csv")
        Path(metrics).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"epoch": [1, 2], "seconds": [1.5, 2.5]}).to_csv(metrics, index=False)
    overrides = {
        "head": {"recipe": {"head": {"enabled": True, "weight": 0.4}}},
        "crops": {"recipe": {"crop": {"size": 32}}, "tta": ["none", "hflip", 1.25]},
    }
    return layout, overrides, base


def test_the_summary_has_one_row_per_lever_baseline_first(three_levers):
    layout, overrides, base = three_levers
    table, warnings = summarise(layout, [BASELINE, "head", "crops"], overrides, "u", 2)
    assert table["lever"].tolist() == [BASELINE, "head", "crops"]
    rows = table.set_index("lever")
    assert rows.loc[BASELINE, "oof_score"] == pytest.approx(np.mean(base))
    assert rows.loc["head", "oof_score"] == pytest.approx(np.mean(base) + 0.05)
    assert rows.loc["head", "oof_score_at_size"] == pytest.approx(np.mean(base) + 0.04)
    assert rows.loc["head", "delta"] == pytest.approx(0.05)
    assert rows.loc[BASELINE, "delta"] == 0 and math.isnan(rows.loc[BASELINE, "delta_se"])
    # The paired standard error of the per-image differences (0.1 on every other image).
    differences = np.array([0.1 * (i % 2) for i in range(8)])
    assert rows.loc["head", "delta_se"] == pytest.approx(differences.std(ddof=1) / np.sqrt(8))
    assert rows.loc["crops", "delta"] == 0 and rows.loc["crops", "delta_se"] == 0
    # The gate's AUC where there is an image-level source, absent (NaN) where not.
    assert math.isnan(rows.loc[BASELINE, "gate_auc"]) and rows.loc["head", "gate_auc"] == 0.8
    # The ungated cascade at each image's own size, absent where the search kept none.
    assert rows.loc["head", "ungated_score"] == 0.6
    assert math.isnan(rows.loc["crops", "ungated_score"])
    # (a gate of 0: the cascade itself, in-sample as every alternative cascade is)
    assert rows.loc[BASELINE, "ungated_score"] == rows.loc[BASELINE, "oof_score_in_sample"]
    assert rows.loc[BASELINE, "train_seconds"] == 21 and rows.loc["head", "train_seconds"] == 40
    assert rows.loc["crops", "train_seconds"] == 8  # from metrics.csv: 2 x (1.5 + 2.5)
    assert rows.loc["crops", "changes"] == "crop: {size: 32}; tta: [none, hflip, 1.25]"
    assert rows.loc["head", "changes"] == "head: {enabled: true, weight: 0.4}"
    assert rows.loc[BASELINE, "changes"].startswith("nothing: the segment stage's recipe")
    assert warnings == ["crops: gate 0.6 on the edge"]


def test_the_summary_file_and_page(three_levers, tmp_path):
    layout, overrides, _ = three_levers
    out = tmp_path / "summary.csv"
    table, warnings = write_summary(layout, [BASELINE, "head", "crops"], overrides, "u", 2, out)
    assert pd.read_csv(out)["lever"].tolist() == [BASELINE, "head", "crops"]
    page = tmp_path / "report.html"
    build_ablation_report(table, warnings, "u", 2, page)
    text = page.read_text()
    assert "levers, each alone" in text and "<table" in text
    assert "data:image/png;base64," in text and "gate 0.6 on the edge" in text
    # head: +0.05 at a standard error of 0.019; crops: no difference at all.
    assert "Beyond 2 standard errors" in text and "head (+0.0500, se 0.0189)" in text
    assert "crops (" not in text and "others are within noise" in text


def test_the_noise_note_names_the_levers_beyond_two_standard_errors():
    table = pd.DataFrame(
        {
            "lever": [BASELINE, "a", "b"],
            "delta": [0.0, 0.05, 0.01],
            "delta_se": [math.nan, 0.01, 0.01],
            "images": [80, 80, 80],
        }
    )
    note = noise_note(table)
    assert "a (+0.0500, se 0.0100)" in note and "b (" not in note
    assert "others are within noise" in note
    within = noise_note(table[table["lever"] != "a"])
    assert "every lever's difference from the baseline is within 2 standard errors" in within
    assert "within noise" in within and "does not rank them" in within


def test_the_levers_at_the_all_empty_score_are_named():
    table = pd.DataFrame(
        {"lever": [BASELINE, "a", "b"], "oof_score": [0.6, 0.7, 0.5], "all_empty": [0.6] * 3}
    )
    assert "every image predicted empty: 0.6000): baseline, b." in empty_note(table)
    assert "each delta is what a lever adds over no segmenter" in empty_note(table)
    assert "each delta" not in empty_note(table[table["lever"] != BASELINE])
    assert empty_note(table[table["lever"] == "a"]) is None


def test_a_lever_scored_on_other_images_is_refused(three_levers):
    layout, overrides, _ = three_levers
    path = layout.ablation_ensemble("head", "oof_images.csv")
    pd.read_csv(path).iloc[:-1].to_csv(path, index=False)
    with pytest.raises(ValueError, match="'head' was scored on other OOF images"):
        summarise(layout, [BASELINE, "head"], overrides, "u", 2)


def test_the_levers_must_start_with_the_baseline(three_levers):
    layout, overrides, _ = three_levers
    with pytest.raises(ValueError, match="must start with 'baseline'"):
        summarise(layout, ["head", BASELINE], overrides, "u", 2)


def test_training_seconds_are_nan_without_benchmark_or_metrics(tmp_path):
    assert math.isnan(train_seconds([tmp_path / "b.tsv"], [tmp_path / "m.csv"]))


def test_lever_changes_in_the_config_words():
    assert lever_changes("x", {"recipe": {}, "tta": ["none", 0.5]}) == "tta: [none, 0.5]"
    assert lever_changes("x", {"recipe": {}}) == "nothing"
    stages = {"stages": [{"epochs": 2, "size": 32}]}
    assert lever_changes("x", {"recipe": stages}) == "stages: [{epochs: 2, size: 32}]"
