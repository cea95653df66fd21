"""The gate's calibration in the ensemble: chosen on OOF by a cross-fitted proper score, its ECE
before and after in scores.csv, the map in ensemble.json, cross-fitted probabilities per OOF image,
and the submission's side table (calibrated probability, spread over the fold models)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from ensemble_examples import spec as example_spec
from test_ensemble import AREAS, BOTTOMS, TOPS, search, synthetic_oof, write_oof

from ptxseg.ensemble.calibrate import calibrate_gate
from ptxseg.ensemble.oof import Grid
from ptxseg.ensemble.submission import PredictionFiles, write_details
from ptxseg.layout import Layout
from ptxseg.scoring.calibration import Calibrator, expected_calibration_error


def _overconfident(n=400, seed=0):
    """Labels drawn from p, reported as sigmoid(3 logit p): far too sure of itself."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.95, n)
    labels = (rng.random(n) < p).astype(int)
    reported = 1 / (1 + np.exp(-3 * np.log(p / (1 - p))))
    return reported, labels, np.arange(n) % 5


def test_an_overconfident_gate_is_calibrated_and_its_held_out_ece_falls():
    p, labels, folds = _overconfident()
    gate = calibrate_gate(p, labels, folds)
    assert gate.calibrator.method in ("temperature", "isotonic")
    ece = {(r.level.value, r.metric.value): r.score for r in gate.rows}
    assert ece[("uncalibrated", "ece")] == pytest.approx(expected_calibration_error(p, labels))
    assert ece[("calibrated", "ece")] < ece[("uncalibrated", "ece")] / 2
    assert ece[("calibrated", "brier")] < ece[("uncalibrated", "brier")]
    # Cross-fitted: fold 0's images by a map fitted without them, not the final map.
    final = gate.calibrator.apply(p)
    assert not np.allclose(gate.calibrated_oof, final)
    assert gate.choice["chosen"].sum() == 1


def test_a_named_method_is_fitted_whatever_the_score_says():
    p, labels, folds = _overconfident()
    gate = calibrate_gate(p, labels, folds, method="isotonic")
    assert gate.calibrator.method == "isotonic"
    assert gate.choice.loc[gate.choice["chosen"], "method"].tolist() == ["isotonic"]
    none = calibrate_gate(p, labels, folds, method="none")
    np.testing.assert_array_equal(none.calibrated_oof, p)


def test_the_search_writes_the_calibration_and_its_ece(tmp_path):
    truth, good, _ = synthetic_oof(n=40)
    labels = truth.any((1, 2))
    rng = np.random.default_rng(4)
    sure = np.clip(np.where(labels, 0.97, 0.03) + rng.normal(0, 0.02, 40), 0, 1)
    sure[:6] = 1 - sure[:6]  # confidently wrong on a few: overconfident
    segmenters, classifiers = write_oof(tmp_path, truth, {"good_net": good}, {"sure": sure})
    grid = Grid(gates=(0.0, 0.5), tops=tuple(TOPS), min_areas=tuple(AREAS), bottoms=tuple(BOTTOMS))
    result = search(tmp_path, segmenters, classifiers, grid, calibration={"method": "temperature"})
    written = json.loads((tmp_path / "e.json").read_text())
    assert written["calibration"]["method"] == "temperature"
    assert written["calibration"]["temperature"] > 1  # softened
    assert {row["method"] for row in written["calibration_choice"]} == {
        "none",
        "temperature",
        "isotonic",
    }
    scores = pd.read_csv(tmp_path / "s.csv")
    ece = scores[(scores["kind"] == "gate") & (scores["metric"] == "ece")]
    assert set(ece["level"]) == {"uncalibrated", "calibrated"}
    images = pd.read_csv(tmp_path / "i.csv")
    p, y = images["classifier_probability"], images["truth_pixels_native"] > 0
    before = ece.loc[ece["level"] == "uncalibrated", "score"].iloc[0]
    after = ece.loc[ece["level"] == "calibrated", "score"].iloc[0]
    assert before == pytest.approx(expected_calibration_error(p.to_numpy(), y.to_numpy()))
    assert after == pytest.approx(
        expected_calibration_error(images["calibrated_probability"].to_numpy(), y.to_numpy())
    )
    assert result.calibration.to_dict() == written["calibration"]
    assert [option.method for option in result.searched.calibration_choice] == [
        "none",
        "temperature",
        "isotonic",
    ]


def test_the_side_table_carries_the_calibrated_probability_and_the_fold_spread(tmp_path):
    layout = Layout(str(tmp_path))
    ids = ["a", "b", "c"]
    by_fold = np.array([[0.2, 0.4], [0.9, 0.5], [0.5, 0.5]])
    classifier = tmp_path / "predict" / "classify" / "cls" / "test.csv"
    classifier.parent.mkdir(parents=True)
    pd.DataFrame({"image_id": ids, "fold0": by_fold[:, 0], "fold1": by_fold[:, 1]}).to_csv(
        classifier, index=False
    )
    predictions = PredictionFiles.at(layout, ["cls"], [], 2)
    calibration = Calibrator(method="temperature", temperature=2.0)
    ensemble = example_spec(gate_weights={"cls": 1.0}, calibration=calibration)
    table = write_details(
        pd.DataFrame({"image_id": ids}), predictions, ensemble, tmp_path / "details.csv"
    )
    np.testing.assert_allclose(table["probability"], by_fold.mean(1), atol=1e-6)
    np.testing.assert_allclose(table["uncertainty"], by_fold.std(1), atol=1e-6)
    np.testing.assert_allclose(
        table["calibrated_probability"], calibration.apply(by_fold.mean(1)), atol=1e-6
    )
    assert table["calibrated_probability"][1] < table["probability"][1]  # softened towards 0.5
    written = pd.read_csv(tmp_path / "details.csv")
    assert written.columns.tolist() == [
        "ImageId",
        "probability",
        "calibrated_probability",
        "uncertainty",
    ]
    # Without calibration in ensemble.json the probability is kept as it is.
    plain = write_details(
        pd.DataFrame({"image_id": ids}),
        predictions,
        example_spec(gate_weights={"cls": 1.0}),
        tmp_path / "plain.csv",
    )
    np.testing.assert_allclose(plain["calibrated_probability"], plain["probability"])


def test_the_calibration_keys_reach_the_search_from_the_config_file(monkeypatch):
    from pathlib import Path
    from types import SimpleNamespace

    import yaml

    from ptxseg import config as config_module
    from ptxseg.ensemble import search as search_module

    root = Path(__file__).resolve().parents[2]
    config = yaml.safe_load((root / "configs" / "tiny.yaml").read_text())
    config.setdefault("ensemble", {})["calibration"] = {"method": "isotonic", "score": "log_loss"}
    config = config_module.validate(config)
    seen = {}
    monkeypatch.setattr(search_module, "run_search", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(search_module, "preprocessing", lambda *args: None)
    params = SimpleNamespace(
        ensemble=config["ensemble"],
        size=32,
        classify_size=32,
        n_folds=2,
        tta=["none"],
        normalisation={
            k: config["repack"][k] for k in ("normalisation", "clahe_clip_limit", "clahe_tile_grid")
        },
        positive_only=[],
    )
    files = SimpleNamespace(
        **dict.fromkeys(["manifest", "rle", "index", "stats", "classify_stats"], "x")
    )
    outputs = SimpleNamespace(
        **dict.fromkeys(["ensemble", "scores", "grid", "images", "maps"], "y")
    )
    search_module.search_rule(params, files, outputs, {}, {})
    assert seen["calibration"] == {"method": "isotonic", "score": "log_loss"}
