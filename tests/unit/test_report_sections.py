"""The report's sections on the files a search writes (read through their typed owners)."""

from __future__ import annotations

import numpy as np
from test_ensemble import AREAS, BOTTOMS, TOPS, search, synthetic_oof, write_oof

from ptxseg.contracts.scores import Kind, Level, ScoreTable
from ptxseg.ensemble.oof import Grid
from ptxseg.io.maps import SUFFIX
from ptxseg.report.build import (
    ReportInputs,
    calibration_section,
    model_table,
    result_section,
    result_table,
    scores_section,
    second_round_section,
    thresholds_section,
)


def test_the_sections_read_what_the_search_wrote(tmp_path):
    truth, good, noise = synthetic_oof(n=40)
    labels = truth.any((1, 2))
    rng = np.random.default_rng(2)
    probabilities = {"seer": np.clip(np.where(labels, 0.9, 0.1) + rng.normal(0, 0.1, 40), 0, 1)}
    segmenters, classifiers = write_oof(
        tmp_path, truth, {"noise_net": noise, "good_net": good}, probabilities
    )
    grid = Grid(gates=(0.0, 0.5), tops=tuple(TOPS), min_areas=tuple(AREAS), bottoms=tuple(BOTTOMS))
    spec = search(tmp_path, segmenters, classifiers, grid)
    inputs = ReportInputs(
        ensemble=tmp_path / "e.json",
        scores=tmp_path / "s.csv",
        grid=tmp_path / "g.csv",
        images=tmp_path / "i.csv",
        maps=tmp_path / f"blend{SUFFIX}",
    )
    scores = ScoreTable.read(inputs.scores)
    table = result_table(scores)
    nested = table.iloc[0]
    assert nested["what"].startswith("cascade, each fold by choices made on the others")
    assert nested["score"] == spec.searched.oof.cascade and nested["chosen on"] == "other folds"
    assert nested["scored at"] == "64x64 px (each image's own size, train-rle.csv)"
    assert "classifier blend (ROC AUC)" in table["what"].tolist()
    segmenters_table = model_table(scores, Kind.SEGMENTER)
    assert segmenters_table["architecture"].tolist() == ["noise_net"] * 2 + ["good_net"] * 2
    assert segmenters_table["folds"].tolist() == [2, "", 2, ""]
    section, weights = scores_section(inputs)
    page = section.html() + weights.html()
    assert f"Cascade {spec.searched.oof.cascade:.4f}" in page
    assert "No ensemble" not in page and "the greedy search scored" in page
    assert len(scores.select(kind=Kind.GATE, level=(Level.UNCALIBRATED, Level.CALIBRATED))) == 4
    calibration = calibration_section(inputs).html()
    assert spec.calibration.method in calibration and "isotonic" in calibration
    assert "Threshold search" in thresholds_section(inputs).html()
    assert second_round_section(inputs) == []  # no second-round segmenter here
    result = result_section(inputs, None).html()
    assert f"{spec.searched.oof.cascade:.4f}" in result
