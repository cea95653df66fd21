"""One cascade: the submission's path (a fold job's maps, member by member, then the blend read
back from the fold files) and `ptxseg predict`'s (every fold model on a batch) give the same
bytes and masks from the same models' outputs, on maps made to sit on the rounding boundaries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ptxseg.contracts.ensemble_spec import CLASSIFY, SEGMENT, EnsembleSpec, ModelKey, Preprocessing
from ptxseg.data.repack import Normalisation
from ptxseg.deploy.combine import ArchitectureMean, ModelOutput, predictions
from ptxseg.deploy.images import PreparedImage
from ptxseg.ensemble.submission import PredictionFiles, cascade_rows
from ptxseg.infer import test_set
from ptxseg.io import maps, rle
from ptxseg.layout import fold_name, head_source
from ptxseg.scoring.cascade import (
    Cascade,
    MemberSum,
    ProbabilitySum,
    architecture_map,
    blend_maps,
    fold_map,
    members_map,
    members_probability,
    quantise_probabilities,
    weighted_mean,
)

ARCHS = ("seg_a", "seg_b", "seg_c")
CLASSIFIERS = ("cls_a",)
FOLDS, MEMBERS = 5, ("best", "swa", "snapshot0")
IMAGES, SIDE = 7, 24
CASCADE = Cascade(gate=0.4, top=0.6, min_area=0.0, bottom=0.5)


def test_a_folds_map_is_its_members_rounded_mean_however_they_are_added():
    members = [np.array([[1, 2, 255]], np.uint8), np.array([[2, 2, 254]], np.uint8)]
    assert members_map(members).tolist() == [[2, 2, 255]]  # 1.5 -> 2, 254.5 -> 255: half up
    running = MemberSum((1, 3))
    for member in members:
        running.add(member[:, :2], (slice(None), slice(0, 2)))  # streamed in two parts
        running.add(member[:, 2:], (slice(None), slice(2, 3)))
        running.next_member()
    assert running.mean().tolist() == members_map(members).tolist()
    assert fold_map(np.array([255 * 257], np.uint32), 257).tolist() == [255]
    with pytest.raises(ValueError, match="uint16"):
        MemberSum(out=np.zeros(3, np.uint8))


@pytest.mark.parametrize("count", [1, 2, 3, 5, 7, 300])
def test_a_folds_map_rounds_every_possible_sum_half_up(count):
    sums = np.arange(255 * count + 1, dtype=np.uint32)
    assert np.array_equal(fold_map(sums, count), np.floor(sums / count + 0.5).astype(np.uint8))
    rng = np.random.default_rng(count)
    members = [rng.integers(0, 256, (2, 5, 5), dtype=np.uint8) for _ in range(count)]
    total = np.sum(members, axis=0, dtype=np.int64)  # past uint16 with 300 members
    assert np.array_equal(members_map(members), np.floor(total / count + 0.5).astype(np.uint8))


def test_a_weighted_mean_is_each_float32_term_added_in_order():
    rng = np.random.default_rng(0)
    maps_ = [rng.integers(0, 256, (3, 16, 16), dtype=np.uint8) for _ in range(4)]
    weights = [0.3, 0.0, 0.2, 0.45]
    expected = np.zeros((3, 16, 16), np.float32)
    for array, weight in zip(maps_, weights, strict=True):
        expected += np.float32(weight / sum(weights)) * array.astype(np.float32)
    assert np.array_equal(weighted_mean(maps_, weights), expected)  # bit for bit
    assert np.array_equal(blend_maps(maps_, weights), np.rint(expected).astype(np.uint8))


def test_a_sources_probability_is_summed_in_the_members_order():
    values = [np.float32([0.1]), np.float32([0.7]), np.float32([0.3])]
    expected = (values[0] + values[1] + values[2]) / np.float32(3)
    assert members_probability(values).tobytes() == expected.tobytes()
    running = ProbabilitySum(1)
    with pytest.raises(ValueError, match="at least one member"):
        running.mean()


def _outputs(seed: int = 0):
    """Float member outputs near the quantisation boundaries (k + 0.5) / 255, every model's: each
    image has its own grey level and probability, which the models scatter around."""
    rng = np.random.default_rng(seed)
    image_level = rng.integers(60, 200, size=IMAGES)[:, None, None]
    image_probability = rng.random(IMAGES).astype(np.float32)
    seg, heads, cls = {}, {}, {}
    for arch in ARCHS:
        for fold in range(FOLDS):
            for member in MEMBERS:
                levels = image_level + rng.integers(-15, 16, size=(IMAGES, SIDE, SIDE))
                jitter = rng.choice([-1e-4, 1e-4], size=levels.shape)
                seg[(arch, fold, member)] = ((levels + 0.5) / 255 + jitter).astype(np.float32)
                noise = rng.normal(0, 0.05, IMAGES).astype(np.float32)
                heads[(arch, fold, member)] = np.clip(image_probability + noise, 0, 1)
    for arch in CLASSIFIERS:
        for fold in range(FOLDS):
            for member in MEMBERS:
                noise = rng.normal(0, 0.05, IMAGES).astype(np.float32)
                cls[(arch, fold, member)] = np.clip(image_probability + noise, 0, 1)[:, None]
    return seg, heads, cls


def _spec() -> EnsembleSpec:
    return EnsembleSpec(
        source="ensemble.json",
        gate_weights={"cls_a": 0.3, head_source("seg_b"): 0.7},
        segmenter_weights={"seg_a": 0.5, "seg_b": 0.2, "seg_c": 0.3},
        members={CLASSIFY: list(MEMBERS), SEGMENT: list(MEMBERS)},
        cascade=CASCADE,
        preprocessing=Preprocessing(
            Normalisation(), {SIDE: (0.0, 1.0)}, {CLASSIFY: SIDE, SEGMENT: SIDE}, FOLDS, ["none"]
        ),
        calibration=None,
    )


class _Outputs:
    """`Runtime.predict_batches` of stand-in models: each member's stored outputs, in batches."""

    def __init__(self, table: dict, heads: dict | None, batch: int = 3) -> None:
        self.table, self.heads, self.batch = table, heads, batch

    def predict_batches(self, model, dataset, device, batch_size):
        for start in range(0, IMAGES, self.batch):
            rows = np.arange(start, min(start + self.batch, IMAGES))
            head = None if self.heads is None else self.heads[model][rows]
            yield rows, self.table[model][rows], head


def _submission_files(tmp_path, monkeypatch, seg, heads, cls) -> PredictionFiles:
    """What predict_segmenter and predict_classifier write, by their own member averaging."""
    monkeypatch.setattr(test_set, "load_member", lambda key, device: key)
    ids = [f"img{k}" for k in range(IMAGES)]
    files = PredictionFiles({}, {}, {})
    for arch in ARCHS:
        columns = {}
        files.segmenters[arch] = []
        for fold in range(FOLDS):
            keys = [(arch, fold, m) for m in MEMBERS]
            running = MemberSum((IMAGES, SIDE, SIDE))
            head = test_set._member_average(keys, ids, 3, None, _Outputs(seg, heads), running)
            path = tmp_path / f"{arch}_{fold}.h5"
            maps.write(path, running.mean())
            files.segmenters[arch].append(path)
            columns[fold_name(fold)] = head
        files.segmenter_ids[arch] = tmp_path / f"{arch}_ids.csv"
        pd.DataFrame({"image_id": ids, **columns}).to_csv(files.segmenter_ids[arch], index=False)
    for arch in CLASSIFIERS:
        columns = {}
        for fold in range(FOLDS):
            running = ProbabilitySum(IMAGES)
            keys = [(arch, fold, m) for m in MEMBERS]
            test_set._member_average(keys, ids, 3, None, _Outputs(cls, None), running)
            columns[fold_name(fold)] = running.mean()
        files.classifiers[arch] = tmp_path / f"{arch}.csv"
        pd.DataFrame({"image_id": ids, **columns}).to_csv(files.classifiers[arch], index=False)
    return files


def _predict(spec: EnsembleSpec, seg, heads, cls) -> list:
    """What the Predictor combines: every fold model's output on the batch, in the spec's order."""
    means: dict[tuple[str, str], ArchitectureMean] = {}
    for key in spec.model_keys():
        mean = means.setdefault((key.stage, key.arch), ArchitectureMean(FOLDS))
        which = (key.arch, key.fold, key.member)
        if key.stage == SEGMENT:  # one TTA pass: the head's pass is the head
            output = ModelOutput(seg[which], heads[which][:, None], heads[which])
        else:
            output = ModelOutput(cls[which], cls[which])
        mean.add(ModelKey(key.stage, key.arch, key.fold, key.member), output)
    batch = [
        PreparedImage(f"img{k}", None, np.zeros((SIDE, SIDE), np.uint8), {}) for k in range(IMAGES)
    ]
    return predictions(spec, batch, means, None)


def test_predict_and_the_submission_draw_the_same_masks_from_the_same_outputs(
    tmp_path, monkeypatch
):
    seg, heads, cls = _outputs()
    spec = _spec()
    files = _submission_files(tmp_path, monkeypatch, seg, heads, cls)
    ids = [f"img{k}" for k in range(IMAGES)]
    shapes = [(SIDE, SIDE)] * IMAGES
    submitted = dict(cascade_rows(ids, shapes, files, spec))
    predicted = _predict(spec, seg, heads, cls)
    drawn = [p for p in predicted if p.mask.any()]
    assert 0 < len(drawn) < IMAGES  # the gate empties some images, the rest draw masks
    for prediction in predicted:
        assert rle.encode(prediction.mask) == submitted[prediction.image_id]
    # The blended map is the steps' own result, to the byte.
    blended = blend_maps(_step_maps(seg), [spec.segmenter_weights[a] for a in ARCHS])
    for k, prediction in enumerate(predicted):
        assert np.array_equal(quantise_probabilities(prediction.probability_map), blended[k])


def _step_maps(seg) -> list[np.ndarray]:
    """Each architecture's map by the cascade's steps, from the members' outputs held together."""
    return [
        architecture_map(
            [members_map([quantise_probabilities(seg[(a, f, m)]) for m in MEMBERS])
             for f in range(FOLDS)]
        )
        for a in ARCHS
    ]  # fmt: skip


def test_averaging_floats_first_would_move_pixels():
    """The check above can fail: with the members' floats averaged before the quantisation (as
    predict did), many blended pixels of these maps move by a grey level."""
    seg, _, _ = _outputs()
    weights = [_spec().segmenter_weights[a] for a in ARCHS]
    floats = [
        np.mean([seg[(a, f, m)] for f in range(FOLDS) for m in MEMBERS], axis=0) * 255
        for a in ARCHS
    ]
    moved = blend_maps(_step_maps(seg), weights) != blend_maps(floats, weights)
    assert moved.mean() > 0.01
