"""The report's first section: the headline as scores.csv holds it, and where it came from."""

from __future__ import annotations

import re

import pandas as pd

from ptxseg.contracts.scores import Kind, Level, Metric, ScoredAt, ScoreRow, ScoreTable
from ptxseg.report.build import ReportInputs, result_section
from ptxseg.report.result import Headline, Provenance, commit_of

OWN = ScoredAt.own_size([(1024, 1024)], "train-rle.csv")


def _scores(nested: bool = True) -> ScoreTable:
    def row(level, at, score, **where):
        return ScoreRow(Kind.SEGMENTER, level, Metric.COMPETITION, at, 6, score, **where)

    rows = [
        row(Level.CASCADE, ScoredAt.maps(64), 0.91),
        row(Level.CASCADE, OWN, 0.7125),
        row(Level.ALL_EMPTY, OWN, 0.5),
    ]
    if nested:
        rows.append(row(Level.CASCADE_NESTED, OWN, 0.6125, interval=(0.4, 0.8)))
    return ScoreTable(tuple(rows))


IMAGES = pd.DataFrame(
    {
        "truth_pixels_native": [0, 10, 20, 0, 0, 5],
        "dice_native": [1.0, 0.5, 0.5, 1.0, 1.0, 0.5],
        "dice_native_nested": [1.0, 0.0, 0.5, 1.0, 1.0, 0.2],
    }
)


def test_the_headline_is_the_cross_fitted_row_with_its_interval():
    headline = Headline.of(_scores(), IMAGES)
    assert headline.cross_fitted and headline.score == 0.6125
    assert (headline.low, headline.high) == (0.4, 0.8)
    assert headline.in_sample == 0.7125 and headline.all_empty == 0.5
    assert headline.positives == 3 and headline.positives_dice == (0.0 + 0.5 + 0.2) / 3
    assert headline.scored_at == OWN.label()
    table = headline.table()
    assert table["score"].tolist()[:3] == [0.6125, 0.7125, 0.5]
    assert "95 % interval 0.4000-0.8000" in table["note"].tolist()
    # Without a cross-fitted row: the in-sample score at the images' own size, labelled so.
    plain = Headline.of(_scores(nested=False), IMAGES)
    assert not plain.cross_fitted and plain.score == 0.7125 and plain.low is None
    # As the search writes scores.csv: the own-size cascade row before the map-size one.
    rows = _scores(nested=False).rows
    swapped = ScoreTable((rows[1], rows[0], rows[2]))
    assert Headline.of(swapped, IMAGES).score == 0.7125
    assert plain.table()["what"].iloc[0] == "OOF competition score (chosen on these images)"
    assert plain.positives_dice == 0.5


def test_the_section_opens_with_the_provenance_and_the_headline(tmp_path):
    scores, images = tmp_path / "scores.csv", tmp_path / "oof_images.csv"
    _scores().write(scores)
    IMAGES.to_csv(images, index=False)
    provenance = Provenance.of("demo", {"seed": 1}, tmp_path)
    section = result_section(ReportInputs(scores=scores, images=images), provenance)
    html = section.html()
    assert "synthetic demo data" in html and provenance.config_hash in html
    assert "not a git checkout" in html  # tmp_path is no repository
    assert re.search(r"page built \d{4}-\d\d-\d\d \d\d:\d\d UTC", html)
    assert html.index("synthetic demo") < html.index("0.6125") < html.index("0.7125")
    assert Provenance.of("files", {"seed": 2}, tmp_path).config_hash != provenance.config_hash
    empty = result_section(ReportInputs(), None).html()
    assert "No ensemble in this run." in empty


def test_the_commit_is_the_code_checkouts():
    from pathlib import Path

    import ptxseg

    commit = commit_of(Path(ptxseg.__file__).parent)
    assert re.fullmatch(r"commit [0-9a-f]{12}( \+changes)?|not a git checkout", commit)


def test_a_one_epoch_history_is_drawn_as_points(monkeypatch):
    from ptxseg.report import figures

    drawn = []
    monkeypatch.setattr(figures, "to_png", lambda figure: drawn.append(figure) or b"png")
    one = pd.DataFrame({"epoch": [1], "train_loss": [0.7], "val_loss": [0.6], "auc": [0.5],
                        "lr": [1e-3]})  # fmt: skip
    two = pd.concat([one, one.assign(epoch=2)])
    figures.training_curves({"NIH": one}, "auc", "pretrain")
    figures.training_curves({"fold0": two}, "auc", "classify")
    one_epoch, two_epochs = (
        [line.get_marker() for axis in f.axes for line in axis.lines] for f in drawn
    )
    assert one_epoch and set(one_epoch) == {"o"}
    assert set(two_epochs) == {"None"}
