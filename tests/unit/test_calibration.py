"""Calibration of the gate probability: temperature, isotonic, the cross-fitted choice, ECE, the
reliability bins and diagram."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression

from ptxseg.report.calibration import reliability_diagram
from ptxseg.scoring.calibration import (
    Calibrator,
    choose_calibration,
    expected_calibration_error,
    fit_isotonic,
    fit_temperature,
    reliability_table,
)


def draw(n: int, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels y ~ Bernoulli(sigmoid(z)) and the probabilities sigmoid(z * T): T > 1 is
    overconfident, T = 1 calibrated."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-1.0, 2.0, n)
    y = (rng.random(n) < expit(z)).astype(float)
    return expit(z * temperature), y


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_temperature_recovers_a_known_temperature(true_t):
    p, y = draw(20_000, true_t, seed=1)
    fitted = fit_temperature(p, y)
    assert fitted.method == "temperature"
    assert fitted.temperature == pytest.approx(true_t, rel=0.05)
    # Away from the clipping at 1e-6, applying divides the logit by T: sigmoid(z T_true / T).
    z = np.log(p / (1 - p)) / true_t
    inside = (p > 1e-5) & (p < 1 - 1e-5)
    expected = expit(z[inside] * true_t / fitted.temperature)
    np.testing.assert_allclose(fitted.apply(p[inside]), expected, rtol=1e-9)


def test_isotonic_is_monotone_and_applies_as_sklearn_predicts():
    rng = np.random.default_rng(2)
    p = rng.uniform(0.1, 0.9, 2_000)
    y = (rng.random(p.size) < p**2).astype(float)
    fitted = fit_isotonic(p, y)
    reference = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(p, y)
    grid = np.concatenate([np.linspace(0, 1, 1_001), p])  # beyond the fitted range too: clipped
    np.testing.assert_allclose(fitted.apply(grid), reference.predict(grid), rtol=0, atol=1e-12)
    assert np.all(np.diff(fitted.apply(np.linspace(0, 1, 1_001))) >= 0)
    assert np.all(np.diff(fitted.x_thresholds) > 0)
    assert len(fitted.x_thresholds) > 2  # a real step function, not a constant


def test_apply_keeps_shape_and_temperature_survives_zero_and_one():
    calibrator = Calibrator("temperature", temperature=2.0)
    p = np.array([[0.0, 0.5], [1.0, 0.9]])
    out = calibrator.apply(p)
    assert out.shape == p.shape
    assert np.isfinite(out).all()
    assert out[0, 1] == pytest.approx(0.5)
    assert 0 < out[0, 0] < out[0, 1] < out[1, 1] < out[1, 0] < 1
    assert out[1, 1] == pytest.approx(expit(np.log(9) / 2))
    np.testing.assert_array_equal(Calibrator().apply(p), p)
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # small T: logits far out
        sharp = Calibrator("temperature", temperature=0.01).apply(np.array([0.0, 0.5, 0.6, 1.0]))
    np.testing.assert_allclose(sharp, [0.0, 0.5, 1.0, 1.0], atol=1e-12)


def test_choose_keeps_none_on_calibrated_data():
    p, y = draw(4_000, 1.0, seed=3)
    folds = np.arange(p.size) % 5
    calibrator, table = choose_calibration(p, y, folds, score="brier")
    by_method = table.set_index("method")
    assert list(table["method"]) == ["none", "temperature", "isotonic"]
    assert table["chosen"].sum() == 1
    chosen = table.loc[table["chosen"], "method"].item()
    assert chosen == calibrator.method
    # "none" is chosen, or its Brier score is within noise of the best.
    assert (
        calibrator.method == "none"
        or by_method.loc["none", "delta"] <= 2 * by_method.loc["none", "delta_se"]
    )
    assert by_method.loc["none", "brier"] - by_method["brier"].min() < 1e-3


def test_a_near_tie_goes_to_the_simpler_method():
    # Calibrated data on which temperature happens to score lowest, within noise of "none".
    p, y = draw(1_000, 1.0, seed=25)
    calibrator, table = choose_calibration(p, y, np.arange(p.size) % 5)
    by_method = table.set_index("method")
    assert by_method.loc["temperature", "delta"] == 0
    assert 0 < by_method.loc["none", "delta"] <= by_method.loc["none", "delta_se"]
    assert calibrator.method == "none"
    assert by_method.loc["none", "reason"].startswith("within one standard error of temperature")


@pytest.mark.parametrize("score", ["brier", "log_loss"])
def test_choose_calibrates_overconfident_data_and_lowers_held_out_ece(score):
    p, y = draw(4_000, 3.0, seed=4)
    folds = np.arange(p.size) % 5
    calibrator, table = choose_calibration(p, y, folds, score=score)
    assert calibrator.method in ("temperature", "isotonic")
    by_method = table.set_index("method")
    assert by_method.loc[calibrator.method, score] < by_method.loc["none", score]
    assert by_method.loc[calibrator.method, "ece"] < by_method.loc["none", "ece"]
    new_p, new_y = draw(4_000, 3.0, seed=5)  # images the calibration never saw
    before = expected_calibration_error(new_p, new_y)
    after = expected_calibration_error(calibrator.apply(new_p), new_y)
    assert before > 0.05
    assert after < before / 2


def test_cross_fitting_keeps_isotonic_from_winning_by_overfit():
    # Calibrated, many distinct values: in sample, isotonic beats "none" by construction.
    p, y = draw(300, 1.0, seed=6)
    in_sample = np.mean((fit_isotonic(p, y).apply(p) - y) ** 2)
    assert in_sample < np.mean((p - y) ** 2)
    _, table = choose_calibration(p, y, np.arange(p.size) % 5)
    by_method = table.set_index("method")
    assert by_method.loc["isotonic", "brier"] > in_sample
    assert not by_method.loc["isotonic", "chosen"]


def test_choose_without_folds_uses_its_own():
    p, y = draw(2_000, 3.0, seed=7)
    first, table = choose_calibration(p, y, None)
    second, _ = choose_calibration(p, y, None)
    assert first.method != "none"
    assert first == second  # fixed seed
    assert table["reason"].str.contains("lowest").any()


def test_ece_is_zero_for_calibrated_bins_and_the_gap_for_a_constant_wrong_prediction():
    # Bins [0.2, 0.3) and [0.7, 0.8): 1 of 4 positive at p = 0.25, 3 of 4 at p = 0.75.
    p = np.array([0.25] * 4 + [0.75] * 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert expected_calibration_error(p, y) == pytest.approx(0.0, abs=1e-12)
    # 0.7 for every image, 3 positives of 10: the gap is |0.7 - 0.3| = 0.4 in the one bin.
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    assert expected_calibration_error(np.full(10, 0.7), y) == pytest.approx(0.4, abs=1e-12)
    # Two bins by hand: 6 images at 0.1 (none positive), 4 at 0.9 (2 positive):
    # 0.6 * 0.1 + 0.4 * 0.4 = 0.22.
    p = np.array([0.1] * 6 + [0.9] * 4)
    y = np.array([0] * 6 + [1, 1, 0, 0])
    assert expected_calibration_error(p, y) == pytest.approx(0.22, abs=1e-12)


def test_reliability_table_counts_sum_to_n_and_edges_cover_zero_and_one():
    rng = np.random.default_rng(8)
    p = np.concatenate([rng.random(997), [0.0, 1.0, 0.5]])
    y = (rng.random(p.size) < p).astype(int)
    table = reliability_table(p, y, bins=8)
    assert len(table) == 8
    assert table["count"].sum() == p.size
    np.testing.assert_allclose(table["lower"], np.arange(8) / 8)
    np.testing.assert_allclose(table["upper"], np.arange(1, 9) / 8)
    filled = table[table["count"] > 0]
    assert (filled["mean_probability"] >= filled["lower"]).all()
    assert (filled["mean_probability"] <= filled["upper"]).all()
    assert table.loc[7, "count"] == np.count_nonzero(p >= 7 / 8)  # p = 1 in the last bin
    empty = reliability_table(np.array([0.05, 0.06]), np.array([0, 1]), bins=4)
    assert empty["count"].tolist() == [2, 0, 0, 0]
    assert np.isnan(empty.loc[1, "mean_probability"])


@pytest.mark.parametrize(
    "calibrator",
    [
        Calibrator(),
        Calibrator("temperature", temperature=1.7),
        Calibrator("isotonic", x_thresholds=(0.1, 0.4, 0.9), y_thresholds=(0.0, 0.3, 1.0)),
    ],
)
def test_to_dict_from_dict_round_trip_through_json(calibrator):
    d = json.loads(json.dumps(calibrator.to_dict()))
    again = Calibrator.from_dict(d)
    assert again == calibrator
    p = np.linspace(0, 1, 51)
    np.testing.assert_array_equal(again.apply(p), calibrator.apply(p))


@pytest.mark.parametrize(
    ("d", "key"),
    [
        ({}, "method"),
        ({"method": "platt"}, "method"),
        ({"method": "temperature"}, "temperature"),
        ({"method": "temperature", "temperature": 0.0}, "temperature"),
        ({"method": "temperature", "temperature": -1.0}, "temperature"),
        ({"method": "temperature", "temperature": "2"}, "temperature"),
        ({"method": "isotonic", "y_thresholds": [0.1, 0.2]}, "x_thresholds"),
        ({"method": "isotonic", "x_thresholds": [0.1, 0.2]}, "y_thresholds"),
        ({"method": "isotonic", "x_thresholds": [], "y_thresholds": []}, "x_thresholds"),
        (
            {"method": "isotonic", "x_thresholds": [0.2, 0.1], "y_thresholds": [0, 1]},
            "x_thresholds",
        ),
        (
            {"method": "isotonic", "x_thresholds": [0.1, 0.2], "y_thresholds": [1, 0]},
            "y_thresholds",
        ),
        ({"method": "isotonic", "x_thresholds": [0.1, 0.2], "y_thresholds": [0.5]}, "y_thresholds"),
        ({"method": "none", "temperature": 1.0}, "temperature"),
    ],
)
def test_from_dict_errors_name_the_key(d, key):
    with pytest.raises(ValueError, match=f"^{key}:"):
        Calibrator.from_dict(d)


@pytest.mark.parametrize(
    ("p", "y", "words"),
    [
        (np.full(8, 0.3), np.array([0, 1] * 4), "8 images"),
        (np.linspace(0.1, 0.9, 50), np.zeros(50), "0 positive"),
        (np.linspace(0.1, 0.9, 50), np.ones(50), "50 positive and 0 negative"),
        (np.full(50, 0.3), np.array([0, 1] * 25), "every probability is 0.3"),
        (np.array([]), np.array([]), "0 images"),
    ],
)
def test_degenerate_inputs_give_none_with_a_reason(p, y, words, caplog):
    with caplog.at_level(logging.WARNING, logger="ptxseg.scoring.calibration"):
        calibrator, table = choose_calibration(p, y, None)
    assert calibrator == Calibrator()
    assert table.loc[table["chosen"], "method"].tolist() == ["none"]
    assert table["reason"].str.contains(words, regex=False).all()
    assert words in caplog.text
    with pytest.raises(ValueError, match="cannot fit"):
        fit_temperature(p, y)


def test_one_fold_or_a_fold_holding_every_positive_gives_none():
    p, y = draw(200, 2.0, seed=9)
    _, table = choose_calibration(p, y, np.zeros(p.size))
    assert table.loc[0, "reason"] == "one fold only: nothing to cross-fit"
    folds = np.where(y == 1, 0, 1 + np.arange(p.size) % 3)  # fold 0: every positive
    calibrator, table = choose_calibration(p, y, folds)
    assert calibrator.method == "none"
    assert table.loc[0, "reason"].startswith("without fold 0:")


@pytest.mark.parametrize(
    ("p", "y", "message"),
    [
        (np.array([0.1, np.nan, 0.3]), np.array([0, 1, 0]), "p: 1 NaN"),
        (np.array([0.1, 1.2, 0.3]), np.array([0, 1, 0]), "p: 1 probabilities outside"),
        (np.array([0.1, 0.2, 0.3]), np.array([0, 2, 0]), "y: 1 labels outside {0, 1}"),
        (np.array([0.1, 0.2, 0.3]), np.array([0, np.nan, 0]), "y: 1 labels outside {0, 1}"),
        (np.array([0.1, 0.2]), np.array([0, 1, 0]), "differ in length"),
    ],
)
def test_bad_values_raise_saying_which(p, y, message):
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        choose_calibration(p, y, None)


def test_bad_arguments_raise():
    p, y = draw(100, 1.0, seed=10)
    with pytest.raises(ValueError, match="score: unknown"):
        choose_calibration(p, y, None, score="auc")
    with pytest.raises(ValueError, match="folds: 99 fold ids for 100 images"):
        choose_calibration(p, y, np.zeros(99))
    with pytest.raises(ValueError, match="bins"):
        reliability_table(p, y, bins=0)


def test_reliability_diagram_writes_a_png(tmp_path):
    p, y = draw(2_000, 3.0, seed=11)
    calibrator, _ = choose_calibration(p, y, np.arange(p.size) % 5)
    tables = {"before": reliability_table(p, y), "after": reliability_table(calibrator.apply(p), y)}
    eces = {
        "before": expected_calibration_error(p, y),
        "after": expected_calibration_error(calibrator.apply(p), y),
    }
    path = tmp_path / "figures" / "reliability.png"
    assert reliability_diagram(tables, eces, path) == path
    data = path.read_bytes()
    assert len(data) > 1_000
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert [f.name for f in path.parent.iterdir()] == ["reliability.png"]  # no temporary left


def test_reliability_diagram_refuses_a_table_without_its_ece(tmp_path):
    table = reliability_table(np.array([0.2, 0.8]), np.array([0, 1]))
    path = tmp_path / "reliability.png"
    with pytest.raises(ValueError, match="no ECE for table 'after'"):
        reliability_diagram({"before": table, "after": table}, {"before": 0.1}, path)
    with pytest.raises(ValueError, match="missing column"):
        reliability_diagram({"before": pd.DataFrame({"count": [1]})}, {"before": 0.1}, path)
    assert not path.exists()
