"""Blending, the cascade's threshold search, the submission writer and its validator."""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ensemble_examples import preprocessing
from ensemble_examples import spec as example_spec

from ptxseg.contracts.ensemble_spec import EnsembleSpec
from ptxseg.contracts.scores import Basis, Kind, Level, Metric, ScoreTable, SelectedOn
from ptxseg.ensemble.blend import (
    BlendSearch,
    exhaustive_search,
    one_at_a_time,
    simplex_grid,
)
from ptxseg.ensemble.oof import Grid, SegmenterFold
from ptxseg.ensemble.search import run_search
from ptxseg.ensemble.submission import (
    PredictionFiles,
    SubmissionError,
    validate_submission,
    write_submission,
)
from ptxseg.io import rle
from ptxseg.io.maps import SUFFIX, read_rows
from ptxseg.io.maps import write as write_maps
from ptxseg.io.png import write_png
from ptxseg.scoring.cascade import Cascade, binarise, blend_maps, level, weighted_mean
from ptxseg.scoring.thresholds import Histograms, best_cascade, cascade_sums
from ptxseg.train.metrics import competition_score

# ----------------------------------------------------------------------------- blending


def cascade_scores(h, *grid) -> np.ndarray:
    """Mean Dice per image over the grid: the sums CascadeGrid adds up, over the image count."""
    return cascade_sums(h, *grid) / len(h)


def test_simplex_grid():
    grid = simplex_grid(3, 0.1)
    assert len(grid) == comb(10 + 2, 2)
    assert np.allclose(grid.sum(1), 1) and (grid >= 0).all()
    assert sorted(map(tuple, grid[:3])) == [(0, 0, 1), (0, 1, 0), (1, 0, 0)]  # corners first
    with pytest.raises(ValueError, match="must divide 1"):
        simplex_grid(2, 0.3)


def test_weighted_mean_and_uint8_blend():
    a, b = np.full((2, 2), 200, np.uint8), np.full((2, 2), 100, np.uint8)
    assert np.allclose(weighted_mean([a, b], [3, 1]), 175)
    assert blend_maps([a, b], [0.5, 0.5]).dtype == np.uint8
    with pytest.raises(ValueError):
        weighted_mean([a], [0])


def synthetic_oof(n=60, size=32, seed=0):
    """Truth masks, a good model (truth seen through noise), and a model that is pure noise."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, size, size), bool)
    for k in range(0, n, 2):  # half the images positive
        y, x = rng.integers(4, size - 12, 2)
        truth[k, y : y + 8, x : x + 8] = True
    good = np.clip(truth * 200 + rng.normal(30, 25, truth.shape), 0, 255).astype(np.uint8)
    noise = rng.integers(0, 256, truth.shape).astype(np.uint8)
    return truth, good, noise


TOPS, AREAS, BOTTOMS = [0.5, 0.7, 0.9], [0, 1024, 4096], [0.3, 0.5]


def test_blend_weights_recover_the_better_model():
    truth, good, noise = synthetic_oof()

    def score(weights):
        h = Histograms.of(blend_maps([noise, good], weights), truth)
        return cascade_scores(h, TOPS, AREAS, BOTTOMS).max()

    result = exhaustive_search(2, one_at_a_time(score), 0.1)
    assert result.weights[1] >= 0.9 and result.score > 0.9
    assert result.evaluations == 11


# ----------------------------------------------------------------------------- thresholds


def brute_force(maps, truth, cascade, classifier=None):
    predicted = np.stack(
        [
            binarise(m, cascade, None if classifier is None else classifier[k])
            for k, m in enumerate(maps)
        ]
    )
    return competition_score(predicted, truth)


def test_histograms_count_every_level_inside_and_out_empty_masks_included():
    rng = np.random.default_rng(3)
    maps = rng.integers(0, 256, (4, 9, 7), dtype=np.uint8)
    truth = np.zeros((4, 9, 7), bool)
    truth[1, 2:5, 1:6] = True
    truth[3] = rng.random((9, 7)) < 0.5  # images 0 and 2 have no true pixel
    h = Histograms.of(maps, truth)
    for k in range(4):
        assert h.everything[k].tolist() == np.bincount(maps[k].ravel(), minlength=256).tolist()
        inside = np.bincount(maps[k][truth[k]], minlength=256)
        assert h.inside[k].tolist() == inside.tolist()
    assert h.inside[[0, 2]].sum() == 0 and h.inside[[1, 3]].sum() == truth.sum()


def test_histogram_scores_equal_thresholding_every_image():
    rng = np.random.default_rng(1)
    truth, good, _ = synthetic_oof(n=30, size=24, seed=2)
    maps = np.clip(good.astype(int) + rng.integers(-60, 60, good.shape), 0, 255).astype(np.uint8)
    classifier = rng.random(30)
    gates, tops, areas, bottoms = (
        [0.0, 0.4, 0.7],
        [0.4, 0.6, 0.8],
        [0, 300, 2000, 9000],
        [0.2, 0.5, 0.7],
    )
    table = cascade_scores(Histograms.of(maps, truth), tops, areas, bottoms, gates, classifier)
    for g, gate in enumerate(gates):
        for t, top in enumerate(tops):
            for a, area in enumerate(areas):
                for b, bottom in enumerate(bottoms):
                    expected = brute_force(
                        maps, truth, Cascade(gate, top, area, bottom), classifier
                    )
                    assert table[g, t, a, b] == pytest.approx(expected), (gate, top, area, bottom)


def test_search_finds_a_planted_optimum():
    size, n = 64, 40
    truth = np.zeros((n, size, size), bool)
    maps = np.zeros((n, size, size), np.uint8)
    for k in range(n):
        if k % 2 == 0:  # positive: a 10x10 region at probability 0.85, its rim at 0.45
            truth[k, 20:30, 20:30] = True
            maps[k, 18:32, 18:32] = level(0.45)
            maps[k, 20:30, 20:30] = level(0.85)
        else:  # negative: a wide haze at 0.75 and a speck at 0.95
            maps[k, 40:56, 40:56] = level(0.75)
            maps[k, 5, 5] = level(0.95)
    # Only top 0.8 drops the haze, only a min area above one speck pixel (at 64 px: 1024 px at
    # 1024 is 4 px) drops the speck, and only bottom 0.5 drops the rim: all three are needed.
    tops, areas, bottoms = [0.5, 0.7, 0.8, 0.9], [0, 1024, 40000], [0.4, 0.5]
    table = cascade_scores(Histograms.of(maps, truth), tops, areas, bottoms)
    cascade, score = best_cascade(table, tops, areas, bottoms)
    assert (cascade.top, cascade.min_area, cascade.bottom) == (0.8, 1024, 0.5)
    assert score == pytest.approx(1.0)
    assert table.max() == table[0, 2, 1, 1] and (table < 1).sum() == table.size - 1


def test_gate_search_uses_the_classifier():
    truth, good, _ = synthetic_oof(n=40, seed=3)
    maps = good.copy()
    maps[1::2, :8, :8] = 250  # every negative gets a confident false region
    classifier = np.where(np.arange(40) % 2 == 0, 0.9, 0.1)  # a perfect classifier
    gates = [0.0, 0.5]
    table = cascade_scores(Histograms.of(maps, truth), TOPS, AREAS, BOTTOMS, gates, classifier)
    cascade, _ = best_cascade(table, TOPS, AREAS, BOTTOMS, gates)
    assert cascade.gate == 0.5 and table[1].max() > table[0].max()


def test_triplet_binarisation_on_crafted_maps():
    cascade = Cascade(gate=0.3, top=0.8, min_area=2048, bottom=0.4)  # 2048 px at 1024 = 8 px at 64
    probability = np.zeros((64, 64), np.uint8)
    probability[10:13, 10:13] = level(0.9)  # 9 px at the top threshold: drawn
    probability[8:15, 8:15][probability[8:15, 8:15] == 0] = level(0.5)  # rim above the bottom
    mask = binarise(probability, cascade)
    assert mask.sum() == 49 and mask[8:15, 8:15].all()
    small = probability.copy()
    small[10:13, 12] = level(0.5)  # 6 px at the top threshold: below the minimum area
    assert not binarise(small, cascade).any()
    assert not binarise(probability, cascade, classifier_probability=0.2).any()  # gated
    assert binarise(probability, cascade, classifier_probability=0.3).sum() == 49
    up = binarise(probability, cascade, out_shape=(1024, 1024))
    assert up.shape == (1024, 1024) and 40 * 256 < up.sum() < 58 * 256
    never = np.full((64, 64), level(0.79), np.uint8)  # nothing reaches top, whatever the area
    assert not binarise(never, Cascade(top=0.8, min_area=0, bottom=0.1)).any()


# ----------------------------------------------------------------------------- end to end on OOF files


NATIVE = 64  # the images' own size in these tests: the maps are at 32 px


def write_oof(root, truth, maps_by_arch, probabilities_by_arch, folds=2, size=32, native=NATIVE):
    """OOF files as the training rules write them, plus the repacked masks and manifest, and the
    label file and index with the images at their own (larger) size."""
    n = len(truth)
    ids = [f"1.2.{k}" for k in range(n)]
    fold_of = np.arange(n) % folds
    manifest = []
    native = truth.repeat(NATIVE // size, axis=1).repeat(NATIVE // size, axis=2)
    pd.DataFrame({"ImageId": ids, " EncodedPixels": [rle.encode(m) for m in native]}).to_csv(
        root / "train-rle.csv", index=False
    )
    pd.DataFrame({"image_id": ids, "split": "train", "rows": NATIVE, "columns": NATIVE}).to_csv(
        root / "siim_index.csv", index=False
    )
    for k, image_id in enumerate(ids):
        write_png(
            root / "repack" / str(size) / "masks" / f"{image_id}.png",
            truth[k].astype(np.uint8) * 255,
        )
        manifest.append(
            {
                "image_id": image_id,
                "split": "train",
                "size": size,
                "image": "",
                "mask": f"{size}/masks/{image_id}.png",
            }
        )
    pd.DataFrame(manifest).to_csv(root / "repack" / "manifest.csv", index=False)
    segmenters, classifiers = {}, {}
    for fold in range(folds):
        rows = np.flatnonzero(fold_of == fold)
        oof = pd.DataFrame(
            {
                "image_id": [ids[r] for r in rows],
                "has_pneumothorax": truth[rows].any((1, 2)).astype(int),
            }
        )
        for arch, maps in maps_by_arch.items():
            out = root / "segment" / arch / f"fold{fold}"
            out.mkdir(parents=True, exist_ok=True)
            write_maps(out / f"oof_best{SUFFIX}", maps[rows])
            oof.to_csv(out / "oof_ids.csv", index=False)
            segmenters.setdefault(arch, {})[fold] = SegmenterFold.in_folder(out, ["best"])
        for arch, probabilities in probabilities_by_arch.items():
            out = root / "classify" / arch / f"fold{fold}"
            out.mkdir(parents=True, exist_ok=True)
            oof.assign(prob_best=probabilities[rows]).to_csv(out / "oof.csv", index=False)
            classifiers.setdefault(arch, {})[fold] = out / "oof.csv"
    return segmenters, classifiers


def search(tmp_path, segmenters, classifiers, grid, **kwargs):
    return run_search(
        classifiers=classifiers,
        segmenters=segmenters,
        members={"classify": ["best"], "segment": ["best"]},
        manifest_csv=tmp_path / "repack" / "manifest.csv",
        size=32,
        grid=grid,
        rle_csv=tmp_path / "train-rle.csv",
        index_csv=tmp_path / "siim_index.csv",
        search_size=16,
        out_json=tmp_path / "e.json",
        out_scores=tmp_path / "s.csv",
        out_grid=tmp_path / "g.csv",
        out_images=tmp_path / "i.csv",
        out_maps=tmp_path / f"blend{SUFFIX}",
        preprocessing=preprocessing(32),
        **kwargs,
    )


def test_run_search_on_oof_files(tmp_path):
    truth, good, noise = synthetic_oof(n=40)
    labels = truth.any((1, 2))
    rng = np.random.default_rng(4)
    classifier = {
        "coin": rng.random(40),
        "seer": np.where(labels, 0.7, 0.3) + rng.normal(0, 0.05, 40),
    }
    segmenters, classifiers = write_oof(
        tmp_path, truth, {"noise_net": noise, "good_net": good}, classifier
    )
    grid = Grid(gates=(0.0, 0.5), tops=tuple(TOPS), min_areas=tuple(AREAS), bottoms=tuple(BOTTOMS))
    result = search(tmp_path, segmenters, classifiers, grid, chunk=7)  # chunks across folds
    assert result.segmenter_weights["good_net"] >= 0.9
    assert result.gate_weights["seer"] >= 0.9
    oof = result.searched.oof
    assert oof.cascade_in_sample_at_size >= oof.best_architecture
    assert oof.cascade_in_sample > oof.all_empty + 0.3
    # The headline is the cross-fitted score, with its interval, beside the in-sample one.
    assert oof.cascade_estimate == SelectedOn.OTHER_FOLDS
    assert oof.cascade_in_sample_estimate == SelectedOn.SAME_IMAGES
    low, high = oof.cascade_interval
    assert low <= oof.cascade <= high and oof.cascade_confidence == 0.95
    assert oof.cascade > oof.all_empty + 0.3
    assert [f.fold for f in oof.nested_folds] == [0, 1]
    # ensemble.json is the typed result, and reads back as it.
    assert EnsembleSpec.read(tmp_path / "e.json") == result
    assert json.loads((tmp_path / "e.json").read_text()) == json.loads(json.dumps(result.to_dict()))
    table = ScoreTable.read(tmp_path / "s.csv")
    own = table.one(level=Level.CASCADE, basis=Basis.OWN_SIZE)
    assert (
        own.score == pytest.approx(oof.cascade_in_sample) and own.scored_at == oof.cascade_scored_at
    )
    assert table.one(level=Level.CASCADE, basis=Basis.MAPS).scored_at.side == 32
    assert table.one(kind=Kind.GATE, level=Level.BLEND).metric == Metric.AUC
    scores = pd.read_csv(tmp_path / "s.csv")
    assert set(scores["level"]) == {
        "single",
        "architecture",
        "blend",
        "cascade",
        "cascade_nested",  # each fold by the choices made on the other
        "all_empty",
        "cascade_ungated",  # the same blend without a gate
        "cascade_gated",  # and behind its best gate above 0
        "uncalibrated",  # the gate's ECE and Brier score before its calibration
        "calibrated",  # and after
    }
    alternatives = scores[scores["level"].isin(["cascade_ungated", "cascade_gated"])]
    assert set(alternatives["scored_at"]) == set(
        scores.loc[scores["level"] == "cascade", "scored_at"]
    )
    chosen = scores.loc[(scores["level"] == "cascade") & (scores["scored_at"] == "32 px"), "score"]
    assert (alternatives.loc[alternatives["scored_at"] == "32 px", "score"] <= chosen.iloc[0]).all()
    singles = scores[(scores["level"] == "single") & (scores["kind"] == "segmenter")]
    assert len(singles) == 2 * 2 * 2  # 2 architectures x 2 folds x (default, tuned)
    assert set(singles["scored_at"]) == {"32 px"} and scores["scored_at"].notna().all()
    assert set(scores.loc[scores["kind"] == "classifier", "scored_at"]) == {"image level"}
    # The cascade twice, each labelled: on the 32 px maps, and at the images' own 64 px size.
    cascade = scores[scores["level"] == "cascade"].set_index("scored_at")["score"]
    native = "64x64 px (each image's own size, train-rle.csv)"
    assert set(cascade.index) == {"32 px", native}
    assert cascade["32 px"] == pytest.approx(oof.cascade_in_sample_at_size)
    assert cascade[native] == pytest.approx(oof.cascade_in_sample)
    assert oof.cascade_scored_at.label() == native
    nested = scores[scores["level"] == "cascade_nested"].iloc[0]
    assert nested["scored_at"] == native and nested["score"] == pytest.approx(oof.cascade)
    assert (nested["scored_basis"], nested["scored_size"]) == ("own_size", "64x64")
    assert [nested["interval_low"], nested["interval_high"]] == pytest.approx([low, high])
    # Every row says what its number was chosen on.
    selected = scores.set_index(["level", "metric"])["selected_on"]
    assert selected[("cascade_nested", "competition")] == "other folds"
    assert set(selected[("cascade", "competition")]) == {"same images"}
    assert set(selected[("single", "competition_default")]) == {"nothing chosen"}
    assert set(selected[("single", "competition_tuned")]) == {"same images"}
    grid_table = pd.read_csv(tmp_path / "g.csv")
    assert len(grid_table) == 2 * len(TOPS) * len(AREAS) * len(BOTTOMS)
    assert grid_table["score"].max() == pytest.approx(oof.cascade_in_sample_at_size)
    images = pd.read_csv(tmp_path / "i.csv", dtype={"image_id": str})
    assert len(images) == 40
    assert images["dice"].mean() == pytest.approx(oof.cascade_in_sample_at_size)
    assert images["dice_native"].mean() == pytest.approx(oof.cascade_in_sample)
    assert images["dice_native_nested"].mean() == pytest.approx(oof.cascade)
    assert (images.loc[images["truth_pixels"] == 0, "dice"].isin([0.0, 1.0])).all()
    # The native score is the competition's: each blended map binarised at 64 px against the
    # mask decoded from the label file, image by image.
    blended = read_rows(tmp_path / f"blend{SUFFIX}", slice(0, 40))
    chosen = result.cascade
    labels_64 = truth.repeat(2, axis=1).repeat(2, axis=2)
    for row in images.itertuples():
        k = int(row.image_id.split(".")[-1])
        predicted = binarise(
            blended[row.Index], chosen, row.classifier_probability, out_shape=(NATIVE, NATIVE)
        )
        assert row.dice_native == pytest.approx(
            competition_score(predicted[None], labels_64[k][None])
        )


def test_both_blend_searches_run_on_oof_files_and_leave_no_scratch(tmp_path):
    """Greedy and exhaustive pick the good architecture over pure noise, say how they searched in
    ensemble.json, and leave no scratch maps behind."""
    truth, good, noise = synthetic_oof(n=30)
    segmenters, classifiers = write_oof(tmp_path, truth, {"noise_net": noise, "good_net": good}, {})
    grid = Grid(gates=(0.0,), tops=tuple(TOPS), min_areas=tuple(AREAS), bottoms=tuple(BOTTOMS))
    greedy = search(tmp_path, segmenters, classifiers, grid, blend=BlendSearch(steps=3), chunk=7)
    exhaustive = search(
        tmp_path, segmenters, classifiers, grid, blend=BlendSearch(method="exhaustive")
    )
    assert greedy.segmenter_weights == {"noise_net": 0.0, "good_net": 1.0}
    assert exhaustive.segmenter_weights["good_net"] >= 0.9
    record = greedy.searched.weight_search
    assert (record.method, record.steps, record.evaluations) == ("greedy", 3, 3 * 2)
    assert len(record.tried) == 6 and record.size == 16
    assert record.archs == ("noise_net", "good_net")  # the order of every tried weight vector
    assert exhaustive.searched.weight_search.evaluations == 11  # 2 architectures at 0.1
    # The blend the search scored is the architecture's own score at the search size.
    best = max(score for _, score in exhaustive.searched.weight_search.tried)
    assert max(score for _, score in record.tried) == pytest.approx(best)
    assert not list(tmp_path.glob(".blend_search_*"))


def test_the_blend_keys_reach_the_search_from_the_config_file(tmp_path, monkeypatch):
    """ensemble.blend written in a config file, validated as the Snakefile does, through the rule's
    entry point (search_rule) to the weights it chooses and to ensemble.json."""
    from types import SimpleNamespace

    import yaml
    from dag import ROOT

    from ptxseg import config as cfg
    from ptxseg.ensemble import search as search_module

    truth, good, noise = synthetic_oof(n=20)
    labels = truth.any((1, 2))
    rng = np.random.default_rng(1)
    probabilities = {"coin": rng.random(20), "seer": np.where(labels, 0.8, 0.2)}
    segmenters, classifiers = write_oof(
        tmp_path, truth, {"noise_net": noise, "good_net": good}, probabilities
    )
    raw = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    raw.setdefault("ensemble", {})["blend"] = {"method": "greedy", "steps": 4, "sorted_init": 2}
    raw["ensemble"]["grid"] = {
        "gate": [0.0, 0.5],
        "top": TOPS,
        "min_area": AREAS,
        "bottom": BOTTOMS,
    }
    raw["ensemble"]["members"] = {"classify": ["best"], "segment": ["best"]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    config = cfg.load(tmp_path / "config.yaml", cfg.load_schema())
    monkeypatch.setattr(search_module, "preprocessing", lambda *args: preprocessing(32))
    params = SimpleNamespace(
        ensemble=config["ensemble"], size=32, classify_size=32, n_folds=2, tta=["none"],
        normalisation=config["repack"], positive_only=[],
    )  # fmt: skip
    files = SimpleNamespace(
        manifest=tmp_path / "repack" / "manifest.csv",
        rle=tmp_path / "train-rle.csv",
        index=tmp_path / "siim_index.csv",
        stats=None,
        classify_stats=None,
    )
    outputs = SimpleNamespace(
        ensemble=tmp_path / "e.json", scores=tmp_path / "s.csv", grid=tmp_path / "g.csv",
        images=tmp_path / "i.csv", maps=tmp_path / f"blend{SUFFIX}",
    )  # fmt: skip
    seen = []
    real = search_module.BlendSearch.run
    monkeypatch.setattr(
        search_module.BlendSearch, "run", lambda self, *a: seen.append(self) or real(self, *a)
    )
    result = search_module.search_rule(params, files, outputs, classifiers, segmenters)
    wanted = BlendSearch(method="greedy", steps=4, sorted_init=2)
    # The classifiers' blend, the gate's, the segmenters'; then the gate's and the segmenters'
    # again without each of the 2 folds (the cross-fitted headline).
    assert seen == [wanted] * (3 + 2 * 2)
    record = json.loads((tmp_path / "e.json").read_text())["weight_search"]
    assert {k: record[k] for k in wanted.as_dict()} == wanted.as_dict()
    assert record["evaluations"] == 2 + 1 + (4 - 2) * 2  # singles, the two best, 2 steps of 2
    assert result.gate_weights["seer"] >= 0.5


def test_search_warns_when_a_choice_sits_on_the_edge_of_its_grid(tmp_path, caplog):
    truth, good, _ = synthetic_oof(n=20)
    segmenters, classifiers = write_oof(tmp_path, truth, {"good_net": good}, {})
    # A good model with low maps: the best bottom is the lowest value offered, and with tops from
    # 0.1 up the best top is not on an edge; areas stop at 0 (a natural bound: no warning).
    grid = Grid(gates=(0.0,), tops=(0.1, 0.5, 0.9), min_areas=(0, 1024), bottoms=(0.6, 0.7, 0.8))
    with caplog.at_level("WARNING"):
        result = search(tmp_path, segmenters, classifiers, grid)
    assert result.cascade.bottom == 0.6
    warnings = result.searched.warnings
    assert any(
        "ensemble.grid.bottom" in w and "smallest value of its grid [0.6, 0.7, 0.8]" in w
        for w in warnings
    )
    assert not any("min_area" in w or "gate" in w for w in warnings)
    assert any("widen ensemble.grid.bottom" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's VmHWM")
def test_search_memory_does_not_grow_with_the_number_of_images(tmp_path):
    """The same search on N and 4N images (in a fresh process each): peak memory within 1.3x."""
    peaks = {}
    for n in (100, 400):
        folder = tmp_path / str(n)
        folder.mkdir()
        truth, good, noise = synthetic_oof(n=n, size=256)
        segmenters, _ = write_oof(
            folder, truth, {"a": good, "b": noise, "c": good[::-1].copy()}, {}, size=256, native=512
        )
        peaks[n] = peak_rss_of_search(folder, segmenters)
    # Whole stacks of 400 maps at 256 px would add over 100 MB (int64 histograms of a fold: 8
    # bytes a pixel) to a process of ~150 MB; chunks of 16 add the same few MB for both sizes.
    assert peaks[400] < 1.3 * peaks[100], peaks


def peak_rss_of_search(folder, segmenters) -> int:
    import subprocess
    import sys

    # VmHWM, the peak of this process's own memory map: ru_maxrss would carry over the peak of
    # the forking pytest process, as Linux keeps it across exec.
    script = f"""
from ptxseg.contracts.ensemble_spec import Preprocessing
from ptxseg.data.repack import Normalisation
from ptxseg.ensemble.oof import Grid, SegmenterFold
from ptxseg.ensemble.search import run_search
from pathlib import Path
root = Path({str(folder)!r})
run_search(
    classifiers={{}},
    segmenters={{a: {{k: SegmenterFold.in_folder(p, ["best"]) for k, p in d.items()}}
                for a, d in { {a: {k: str(f.ids_csv.parent) for k, f in d.items()} for a, d in segmenters.items()}!r}.items()}},
    members={{"classify": [], "segment": ["best"]}},
    manifest_csv=root / "repack" / "manifest.csv",
    size=256,
    grid=Grid((0.0,), (0.5, 0.7), (0, 1024), (0.4, 0.5)),
    rle_csv=root / "train-rle.csv",
    index_csv=root / "siim_index.csv",
    search_size=64,
    out_json=root / "e.json", out_scores=root / "s.csv", out_grid=root / "g.csv",
    out_images=root / "i.csv", out_maps=root / "b.h5", chunk=16,
    preprocessing=Preprocessing(
        Normalisation(), {{256: (0.5, 0.25)}}, {{"classify": 256, "segment": 256}}, 2, ["none"]
    ),
)
print(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])  # KiB
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return int(result.stdout.split()[-1])


# ----------------------------------------------------------------------------- submission


@pytest.fixture
def test_set(tmp_path):
    ids = [f"9.{k}" for k in range(5)]
    index = pd.DataFrame(
        {"image_id": ids, "rows": [64, 64, 64, 64, 128], "columns": [64, 64, 64, 64, 128]}
    )
    rng = np.random.default_rng(5)
    maps = np.zeros((5, 32, 32), np.uint8)
    maps[0, 5:15, 5:15] = 230
    maps[4, 10:20, 10:20] = 230
    maps[3, 0, 0] = 255  # a speck, below the minimum area
    seg_dir = tmp_path / "predict" / "segment" / "net"
    seg_dir.mkdir(parents=True)
    order = ids[::-1]  # the prediction files keep their own order
    for fold in range(2):
        write_maps(
            seg_dir / f"fold{fold}{SUFFIX}",
            np.clip(maps[::-1].astype(int) + rng.integers(-3, 3, maps.shape), 0, 255).astype(
                np.uint8
            ),
        )
    pd.DataFrame({"image_id": order}).to_csv(seg_dir / "ids.csv", index=False)
    cls_csv = tmp_path / "predict" / "classify.csv"
    pd.DataFrame(
        {"image_id": ids, "fold0": [0.9, 0.9, 0.9, 0.9, 0.05], "fold1": [0.8, 0.8, 0.8, 0.8, 0.05]}
    ).to_csv(cls_csv, index=False)
    predictions = PredictionFiles(
        {"net": [seg_dir / f"fold0{SUFFIX}", seg_dir / f"fold1{SUFFIX}"]},
        {"net": seg_dir / "ids.csv"},
        {"clf": cls_csv},
    )
    ensemble = example_spec(
        cascade=Cascade(gate=0.5, top=0.8, min_area=4096, bottom=0.5),
        gate_weights={"clf": 1.0},
    )
    return index, predictions, ensemble


def test_submission_has_every_test_image_once(tmp_path, test_set):
    index, predictions, ensemble = test_set
    out = tmp_path / "submission.csv"
    summary = write_submission(index, predictions, ensemble, out)
    table = pd.read_csv(out, dtype=str)
    assert out.read_text().splitlines()[0] == "ImageId,EncodedPixels"
    assert table["ImageId"].tolist() == index["image_id"].tolist()
    encoded = dict(zip(table["ImageId"], table["EncodedPixels"], strict=True))
    assert encoded["9.1"] == encoded["9.2"] == encoded["9.3"] == "-1"  # empty, empty, a speck
    assert encoded["9.4"] == "-1"  # a region, but the classifier gate says no
    mask = rle.decode(encoded["9.0"], (64, 64))
    assert mask[10:30, 10:30].all() and mask.sum() == 400  # drawn at the image's own size
    assert summary == {"images": 5, "with_mask": 1}


def test_invalid_submission_never_lands(tmp_path, test_set):
    index, predictions, ensemble = test_set
    out = tmp_path / "submission.csv"
    with pytest.raises(SubmissionError, match="1 test image"):
        write_submission(
            pd.concat([index, pd.DataFrame({"image_id": ["9.9"], "rows": [64], "columns": [64]})]),
            predictions,
            ensemble,
            out,
        )
    assert not out.exists() and not list(tmp_path.glob(".submission*"))


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["9.0,-1", "9.1,-1"], r"1 test image\(s\) missing, e.g. 9.2"),
        (["9.0,-1", "9.1,-1", "9.2,-1", "9.1,-1"], "line 5: ImageId 9.1 already on line 3"),
        (["9.0,-1", "9.1,-1", "9.2,-1", "7.7,-1"], "line 5: ImageId 7.7 is not a test image"),
        (["9.0,1 2 3", "9.1,-1", "9.2,-1"], "line 2: ImageId 9.0: RLE holds an odd number"),
        (["9.0,4000 200", "9.1,-1", "9.2,-1"], "line 2: ImageId 9.0: RLE run 0 ends at pixel 4200"),
        (["9.0,x 2", "9.1,-1", "9.2,-1"], "non-integer value 'x'"),
        (["9.0,-1,extra", "9.1,-1", "9.2,-1"], "line 2: 3 fields"),
        (["9.0,", "9.1,-1", "9.2,-1"], "line 2: ImageId 9.0: EncodedPixels is empty"),
    ],
)
def test_validator_rejects(tmp_path, rows, message):
    index = pd.DataFrame({"image_id": ["9.0", "9.1", "9.2"], "rows": [64] * 3, "columns": [64] * 3})
    path = _write(tmp_path / "s.csv", ["ImageId,EncodedPixels", *rows])
    with pytest.raises(SubmissionError, match=message):
        validate_submission(path, index)


def test_validator_rejects_a_wrong_header_and_accepts_a_good_file(tmp_path):
    index = pd.DataFrame({"image_id": ["9.0"], "rows": [64], "columns": [64]})
    with pytest.raises(SubmissionError, match="header"):
        validate_submission(_write(tmp_path / "a.csv", ["ImageId, EncodedPixels", "9.0,-1"]), index)
    validate_submission(_write(tmp_path / "b.csv", ["ImageId,EncodedPixels", "9.0,0 4"]), index)
