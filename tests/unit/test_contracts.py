"""The typed owners of ensemble.json and scores.csv: round trips, the errors that name the file and
the key (or line and column), enum validation and the score table's queries."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace

import pytest
from ensemble_examples import search_record
from ensemble_examples import spec as example_spec

from ptxseg.contracts.ensemble_spec import EnsembleSpec, EnsembleSpecError
from ptxseg.contracts.scored_at import Basis, ScoredAt
from ptxseg.contracts.scores import (
    COLUMNS,
    Kind,
    Level,
    Metric,
    ScoreQueryError,
    ScoreRow,
    ScoreTable,
    SelectedOn,
    selected_on,
)
from ptxseg.contracts.search_record import CalibrationOption
from ptxseg.scoring.calibrator import Calibrator
from ptxseg.scoring.cascade import Cascade

OWN = ScoredAt.own_size([(1024, 1024)], "train-rle.csv")


def _full_spec() -> EnsembleSpec:
    """A gate of a classifier and a head, two segmenters, a calibration and its choice."""
    options = (
        CalibrationOption("none", 0.2, 0.6, 0.1, 0.02, 0.01, False, ""),
        CalibrationOption(
            "isotonic", 0.18, None, 0.05, 0.0, 0.0, True, "lowest cross-fitted brier"
        ),
    )
    return example_spec(
        gate_weights={"cls": 0.25, "head:net": 0.75},
        segmenter_weights={"net": 0.6, "other": 0.4},
        calibration=Calibrator("isotonic", x_thresholds=(0.1, 0.9), y_thresholds=(0.2, 0.8)),
        search=search_record(
            ("net", "other"), positive_only=("other",), warnings=("widen x",),
            calibration_choice=options,
        ),
    )  # fmt: skip


# ----------------------------------------------------------------------------- ensemble.json


def test_the_spec_round_trips_through_its_dict_and_its_file(tmp_path):
    spec = _full_spec()
    assert EnsembleSpec.from_dict(spec.to_dict(), "x.json") == spec
    spec.write(tmp_path / "ensemble.json")
    again = EnsembleSpec.read(tmp_path / "ensemble.json")
    assert again == spec and again.source == str(tmp_path / "ensemble.json")
    assert again.searched.oof.cascade_scored_at == spec.searched.oof.cascade_scored_at
    written = json.loads((tmp_path / "ensemble.json").read_text())
    assert written["gate_weights"] == {"cls": 0.25, "head:net": 0.75}
    assert written["oof"]["cascade_scored_at"] == {
        "basis": "own_size",
        "size": "64x64",
        "truth": "train-rle.csv",
    }
    assert written["calibration_choice"][1]["log_loss"] is None  # unscored: null, strict JSON
    # The manifest's keys: prediction reads the same spec, without the search's record.
    manifest = EnsembleSpec.from_dict(spec.prediction_dict(), "manifest.json")
    assert manifest == replace(spec, search=None)
    assert "oof" not in spec.prediction_dict() and "weight_search" not in spec.prediction_dict()


def test_a_spec_without_a_gate_or_calibration_round_trips():
    spec = example_spec(gate_weights={}, calibration=None)
    assert "calibration" not in spec.to_dict() and "calibration_choice" not in spec.to_dict()
    assert EnsembleSpec.from_dict(spec.to_dict(), "e.json") == spec
    assert not spec.has_gate and spec.classifiers == []


def test_an_ensemble_json_with_the_old_gate_key_is_refused_naming_the_file():
    old = example_spec().to_dict()
    old["classifier_weights"] = old.pop("gate_weights")
    with pytest.raises(EnsembleSpecError) as error:
        EnsembleSpec.from_dict(old, "results/ensemble/ensemble.json")
    message = str(error.value)
    assert message.startswith("results/ensemble/ensemble.json: key 'gate_weights' missing")
    assert "rerun the ensemble rule" in message


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["oof"].pop("all_empty"), r"e\.json: key 'oof\.all_empty' missing"),
        (
            lambda d: d["oof"]["cascade_scored_at"].update(basis="pixels"),
            r"e\.json: key 'oof\.cascade_scored_at\.basis' 'pixels' is not one of: image, maps, "
            "own_size",
        ),
        (
            lambda d: d["oof"]["cascade_scored_at"].update(size="1024"),
            r"key 'oof\.cascade_scored_at\.size' '1024' is not '<rows>x<columns>'",
        ),
        (
            lambda d: d["oof"].update(cascade_estimate="some folds"),
            r"key 'oof\.cascade_estimate' 'some folds' is not one of: same images, other folds",
        ),
        (
            lambda d: d["weight_search"]["tried"][0].update(weights=["a"]),
            r"key 'weight_search\.tried\[0\]\.weights' is not a list of numbers",
        ),
        (
            lambda d: d["weight_search"].update(evaluations=5),
            r"key 'weight_search\.evaluations' is not the 1 blends listed",
        ),
        (
            lambda d: d["oof"]["nested_folds"][1]["cascade"].pop("top"),
            r"key 'oof\.nested_folds\[1\]\.cascade\.top' missing",
        ),
        (lambda d: d["segmenter_weights"].update(net="high"), r"key 'segmenter_weights\.net'"),
        (lambda d: d["preprocessing"].pop("n_folds"), r"key 'preprocessing\.n_folds' missing"),
        (
            lambda d: d.update(calibration={"method": "temperature"}),
            r"e\.json: calibration\.temperature: missing",
        ),
    ],
)
def test_a_bad_value_is_named_by_its_file_and_key(edit, message):
    broken = copy.deepcopy(example_spec().to_dict())
    edit(broken)
    with pytest.raises(EnsembleSpecError, match=message):
        EnsembleSpec.from_dict(broken, "e.json")


def test_the_search_record_of_a_manifest_is_missing_and_says_so():
    manifest = EnsembleSpec.from_dict(example_spec().prediction_dict(), "model/manifest.json")
    assert manifest.search is None
    with pytest.raises(EnsembleSpecError, match=r"model/manifest\.json: key 'oof' missing"):
        manifest.searched  # noqa: B018


def test_the_blend_record_must_name_the_segmenters_it_weighed():
    with pytest.raises(EnsembleSpecError, match=r"'weight_search\.archs' \['elsewhere'\]"):
        example_spec(search=search_record(("elsewhere",)))


# ----------------------------------------------------------------------------- where scored


def test_scored_at_labels_and_its_columns_round_trip():
    maps = ScoredAt.maps(256)
    mixed = ScoredAt.own_size([(1024, 1024), (512, 512)], "train-rle.csv")
    assert ScoredAt.image_level().label() == "image level"
    assert maps.label() == "256 px"
    assert OWN.label() == "1024x1024 px (each image's own size, train-rle.csv)"
    assert mixed.label() == "mixed px (each image's own size, train-rle.csv)"
    for at in (ScoredAt.image_level(), maps, OWN, mixed):
        assert ScoredAt.parse(**at.fields()) == at
    with pytest.raises(ValueError, match="truth"):
        ScoredAt(Basis.MAPS, side=256, truth="train-rle.csv")
    with pytest.raises(ValueError, match="size"):
        ScoredAt(Basis.IMAGE, side=256)


# ----------------------------------------------------------------------------- scores.csv


def _rows() -> tuple[ScoreRow, ...]:
    seg, maps = Kind.SEGMENTER, ScoredAt.maps(256)
    tuned = Cascade(gate=0.0, top=0.7, min_area=2048.0, bottom=0.4)
    return (
        ScoreRow(Kind.CLASSIFIER, Level.SINGLE, Metric.AUC, ScoredAt.image_level(), 10, 0.8,
                 arch="densenet", fold=0, member="best"),
        ScoreRow(Kind.GATE, Level.CALIBRATED, Metric.ECE, ScoredAt.image_level(), 20, 0.05,
                 member="isotonic"),
        ScoreRow(seg, Level.ARCHITECTURE, Metric.COMPETITION_TUNED, maps, 20, 0.7, arch="unet",
                 cascade=tuned, all_empty=0.6),
        ScoreRow(seg, Level.CASCADE, Metric.COMPETITION, maps, 20, 0.76, cascade=tuned),
        ScoreRow(seg, Level.CASCADE, Metric.COMPETITION, OWN, 20, 0.75, cascade=tuned),
        ScoreRow(seg, Level.CASCADE_NESTED, Metric.COMPETITION, OWN, 20, 0.71, interval=(0.6, 0.8)),
    )  # fmt: skip


def test_the_score_table_round_trips_through_its_file(tmp_path):
    table = ScoreTable(_rows())
    table.write(tmp_path / "scores.csv")
    again = ScoreTable.read(tmp_path / "scores.csv")
    assert again.rows == table.rows and again.source == str(tmp_path / "scores.csv")
    header = (tmp_path / "scores.csv").read_text().splitlines()[0]
    assert header == ",".join(COLUMNS)
    # An AUC over one class is NaN, and stays NaN.
    nan = replace(_rows()[0], score=math.nan)
    ScoreTable((nan,)).write(tmp_path / "nan.csv")
    assert math.isnan(ScoreTable.read(tmp_path / "nan.csv").rows[0].score)


def test_selected_on_is_derived_from_the_row():
    assert selected_on(Kind.SEGMENTER, Level.CASCADE_NESTED, Metric.COMPETITION) == "other folds"
    assert selected_on(Kind.SEGMENTER, Level.CASCADE, Metric.COMPETITION) == "same images"
    assert selected_on(Kind.SEGMENTER, Level.SINGLE, Metric.COMPETITION_TUNED) == "same images"
    assert selected_on(Kind.SEGMENTER, Level.SINGLE, Metric.COMPETITION_DEFAULT) == "nothing chosen"
    assert selected_on(Kind.GATE, Level.UNCALIBRATED, Metric.ECE) == SelectedOn.SAME_IMAGES
    assert selected_on(Kind.HEAD, Level.ARCHITECTURE, Metric.AUC) == SelectedOn.NOTHING


def _write_edited(path, column: str, row: int, value: str) -> None:
    ScoreTable(_rows()).write(path)
    frame = ScoreTable.read(path).frame().astype(object)
    frame.loc[row, column] = value
    frame.to_csv(path, index=False)


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("level", "ensemble", "'ensemble' is not one of: single, architecture"),
        ("kind", "Segmenter", "'Segmenter' is not one of: classifier, gate, head, segmenter"),
        ("metric", "dice", "'dice' is not one of: auc, brier"),
        ("scored_basis", "pixels", "'pixels' is not one of: image, maps, own_size"),
        ("scored_size", "big", "'big' is not '<rows>x<columns>' or 'mixed'"),
        ("scored_at", "1024x1024 px (own size)", 'its other columns say "1024x1024 px (each'),
        ("selected_on", "nothing chosen", "a cascade row is 'same images'"),
        ("images", "-3", "'-3' is not a whole number"),
        ("cascade_top", "", "empty beside the other cascade_ columns"),
    ],
)
def test_a_bad_row_is_named_by_file_line_and_column(tmp_path, column, value, problem):
    path = tmp_path / "scores.csv"
    _write_edited(path, column, 4, value)  # the fifth row: line 6, after the header
    with pytest.raises(ValueError) as error:
        ScoreTable.read(path)
    assert str(error.value).startswith(f"{path}: line 6, column {column!r}: ")
    assert problem in str(error.value)


def test_a_table_without_the_typed_columns_is_refused(tmp_path):
    path = tmp_path / "scores.csv"
    ScoreTable(_rows()).frame().drop(columns=["scored_basis", "scored_truth"]).to_csv(path)
    with pytest.raises(ValueError, match=r"column\(s\) scored_basis, scored_truth missing; rerun"):
        ScoreTable.read(path)


def test_queries_select_rows_and_one_wants_exactly_one():
    table = ScoreTable(_rows(), "scores.csv")
    cascades = table.select(kind=Kind.SEGMENTER, level=Level.CASCADE)
    assert [r.score for r in cascades] == [0.76, 0.75]
    assert table.one(level=Level.CASCADE, basis=Basis.OWN_SIZE).score == 0.75
    assert table.one(level="cascade", basis="maps").score == 0.76  # the enums' values work too
    either = table.select(level=(Level.CASCADE_NESTED, Level.ARCHITECTURE))
    assert [r.level for r in either] == [Level.ARCHITECTURE, Level.CASCADE_NESTED]
    assert table.one(arch=None, kind=Kind.GATE).member == "isotonic"
    assert table.one_or_none(kind=Kind.HEAD) is None
    with pytest.raises(ScoreQueryError, match="scores.csv: no score row with kind=head"):
        table.one(kind=Kind.HEAD)
    with pytest.raises(ScoreQueryError, match="2 score rows with level=cascade, expected one"):
        table.one(level=Level.CASCADE)
    with pytest.raises(TypeError, match="unknown key"):
        table.select(scored_at=OWN)


def test_a_model_that_draws_nothing_is_flagged_at_the_all_empty_baseline():
    """ScoreRows carries each score's all-empty baseline of the same images; the report's model
    table flags the folds where a member's best triplet scores exactly that."""
    import numpy as np

    from ptxseg.ensemble.oof import Grid, ScoreRows
    from ptxseg.report.build import AT_BASELINE, model_table
    from ptxseg.scoring.thresholds import Histograms

    grid = Grid((0.0,), (0.5, 0.9), (0.0, 100.0), (0.5,))
    truth = np.zeros((4, 32, 32), bool)
    truth[:2, 8:20, 8:20] = True  # two positives, two empty images
    maps = np.where(truth, 230, 10).astype(np.uint8)
    at = ScoredAt.maps(32)
    rows = []
    for fold, drawn in enumerate((maps, np.zeros_like(maps), np.zeros_like(maps))):
        scored = ScoreRows(grid)
        scored.add(Histograms.of(drawn, truth))
        rows += scored.rows(Level.SINGLE, at, arch="unet", fold=fold, member="best")
    tuned = [r for r in rows if r.metric == Metric.COMPETITION_TUNED]
    assert [r.all_empty for r in tuned] == [0.5, 0.5, 0.5]
    assert [r.score for r in tuned] == [1.0, 0.5, 0.5]  # the empty maps draw nothing
    assert [r.at_baseline for r in tuned] == [False, True, True]
    table = ScoreTable(tuple(rows))
    flagged = model_table(table, Kind.SEGMENTER).set_index("member")[AT_BASELINE]
    assert flagged["best"] == "2 of 3 folds"
    assert flagged["kept members averaged, all folds"] == ""  # no architecture row here
