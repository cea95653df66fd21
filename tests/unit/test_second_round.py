"""The NIH second round: candidates without SIIM images, pseudo-labels of one fold's models,
batches that mix them at a share, fold isolation, the mean teacher, and resuming inside round 2."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from test_levers import SMALL, STAGED, _siim_repacks

from ptxseg import config as config_module
from ptxseg.data.pseudo_labels import Bands, read_pseudo_labels, sample_candidates
from ptxseg.infer.pseudo_labels import pseudo_label_fold
from ptxseg.layout import METRICS, model_file, round2_name
from ptxseg.models import build_model
from ptxseg.recipes import round2_archs, segmenter_names, segmenter_recipe
from ptxseg.runtime import checkpoint
from ptxseg.runtime.options import Runtime
from ptxseg.train import run as run_module
from ptxseg.train.mean_teacher import MeanTeacher, rampup
from ptxseg.train.run import NihImages, train_fold
from ptxseg.train.sampling import mixed_order
from ptxseg.train.settings import FitSettings, MeanTeacherSpec

ROOT = Path(__file__).resolve().parents[2]
ROUND2 = replace(STAGED, stages=(), epochs=3, pseudo_share=0.5)


# ----------------------------------------------------------------------------- candidates


def _nih_index(root: Path, n: int = 10) -> tuple[Path, Path]:
    ids = [f"000000{k:02d}_000" for k in range(n)]
    index = pd.DataFrame({"image_id": ids, "path": [f"images/{i}.png" for i in ids]})
    index.to_csv(root / "nih_pretrain_index.csv", index=False)
    overlap = pd.DataFrame({"nih_image_id": ["00000099_000"], "siim_image_id": ["1.2.3"]})
    overlap.to_csv(root / "overlap.csv", index=False)
    return root / "nih_pretrain_index.csv", root / "overlap.csv"


def test_candidates_are_a_seeded_sample_of_the_nih_images_that_are_not_siim_images(tmp_path):
    index, overlap = _nih_index(tmp_path)
    a = sample_candidates(index, overlap, 4, 3, tmp_path / "a.csv")
    b = sample_candidates(index, overlap, 4, 3, tmp_path / "b.csv")
    c = sample_candidates(index, overlap, 4, 4, tmp_path / "c.csv")
    assert len(a) == 4 and a["image_id"].tolist() == b["image_id"].tolist()
    assert a["image_id"].tolist() != c["image_id"].tolist()
    assert a["image_id"].is_monotonic_increasing
    assert len(sample_candidates(index, overlap, None, 0, tmp_path / "all.csv")) == 10


def test_a_planted_siim_image_among_the_candidates_is_refused(tmp_path):
    index, overlap = _nih_index(tmp_path)
    planted = pd.read_csv(overlap, dtype=str)
    planted.loc[0, "nih_image_id"] = "00000003_000"  # an NIH image of the index is a SIIM image
    planted.to_csv(overlap, index=False)
    with pytest.raises(ValueError, match=r"matched to SIIM images .*00000003_000"):
        sample_candidates(index, overlap, None, 0, tmp_path / "c.csv")
    assert not (tmp_path / "c.csv").exists()


# ----------------------------------------------------------------------------- batches


def test_mixed_batches_hold_the_share_and_every_labelled_image_once():
    rng = np.random.default_rng(0)
    labelled = rng.permutation(10)
    order = mixed_order(labelled, rng, extra=3, offset=10, share=0.5, batch_size=4)
    batches = [order[i : i + 4] for i in range(0, len(order), 4)]
    assert all((b >= 10).sum() == 2 for b in batches)  # half of each batch
    assert order[order < 10].tolist() == labelled.tolist()  # the labelled order is kept
    assert set(order[order >= 10]) == {10, 11, 12}  # every pseudo-label, in passes
    assert (
        mixed_order(labelled, rng, extra=0, offset=10, share=0.5, batch_size=4) is labelled
    )  # nothing to weave in
    one = mixed_order(labelled, rng, extra=5, offset=10, share=0.01, batch_size=4)
    assert ((one[:4] >= 10).sum(), len(one)) == (1, 14)  # at least one per batch


# ----------------------------------------------------------------------------- training


def _pseudo_labels(root: Path, size: int = 64, n: int = 6) -> NihImages:
    """NIH candidates at ``size`` and a fold's labels.csv: even ones positive, odd ones empty,
    the last one left out as uncertain."""
    labels_dir = root / "pseudo" / "fold0"
    (labels_dir / "masks").mkdir(parents=True)
    rng = np.random.default_rng(1)
    ids = [f"0000010{k}_000" for k in range(n)]
    manifest = _write_candidates(
        root / "nih_candidates",
        {i: rng.integers(60, 200, (size, size)).astype(np.uint8) for i in ids},
        size,
    )
    labels = []
    cv2.imwrite(str(labels_dir / "masks" / "empty.png"), np.zeros((size, size), np.uint8))
    for k, image_id in enumerate(ids):
        kept = "" if k == n - 1 else ("positive" if k % 2 == 0 else "empty")
        mask = ""
        if kept == "positive":
            drawn = np.zeros((size, size), np.uint8)
            drawn[10:30, 5:25] = 255
            cv2.imwrite(str(labels_dir / "masks" / f"{image_id}.png"), drawn)
            mask = f"masks/{image_id}.png"
        elif kept == "empty":
            mask = "masks/empty.png"
        labels.append({"image_id": image_id, "kept": kept, "mask": mask, "why": "x"})
    pd.DataFrame(labels).to_csv(labels_dir / "labels.csv", index=False)
    return NihImages(manifest, size, labels_dir / "labels.csv")


def _write_candidates(folder: Path, images: dict[str, np.ndarray], size: int) -> Path:
    """A candidates' repack as repack_nih writes it: PNGs at ``size`` and their manifest."""
    (folder / str(size)).mkdir(parents=True, exist_ok=True)
    for image_id, image in images.items():
        cv2.imwrite(str(folder / str(size) / f"{image_id}.png"), image)
    manifest = folder / f"manifest_{size}.csv"
    pd.DataFrame(
        {
            "image_id": list(images),
            "split": "nih",
            "size": size,
            "image": [f"{size}/{i}.png" for i in images],
            "mask": "",
        }
    ).to_csv(manifest, index=False)
    return manifest


def _train_round2(root, repacks, nih, name, settings=ROUND2, stop_after_epoch=None, **extra):
    return train_fold(
        kind="segmenter",
        arch="unet_resnet34",
        fold=0,
        folds_csv=root / "folds.csv",
        manifest_csv=repacks[64][0],
        stats_json=repacks[64][1],
        size=64,
        settings=settings,
        options=SMALL,
        out_dir=root / name,
        state_path=root / "checkpoints" / f"{name}.pt",
        stop_after_epoch=stop_after_epoch,
        nih=nih,
        **extra,
    )


def test_a_second_round_trains_on_the_folds_siim_images_and_the_kept_pseudo_labels_only(
    tmp_path, monkeypatch
):
    repacks = _siim_repacks(tmp_path, sizes=(64,), n=12)
    nih = _pseudo_labels(tmp_path)
    seen = {}
    original = run_module.fit

    def spy(model, train_set, val_set, task, *args, **kwargs):
        seen["train"], seen["val"], seen["task"] = train_set, val_set, task
        return original(model, train_set, val_set, task, *args, **kwargs)

    monkeypatch.setattr(run_module, "fit", spy)
    _train_round2(tmp_path, repacks, nih, "run", replace(ROUND2, epochs=1))
    folds = pd.read_csv(tmp_path / "folds.csv", dtype={"image_id": str})
    held_out = set(folds.loc[folds["fold"] == 0, "image_id"])
    siim, pseudo = seen["train"].datasets
    assert not held_out & set(siim.image_ids) and not held_out & set(pseudo.image_ids)
    assert set(siim.image_ids) == set(folds["image_id"]) - held_out
    labels = pd.read_csv(nih.labels_csv, dtype=str, keep_default_na=False)
    assert pseudo.image_ids == labels.loc[labels["kept"] != "", "image_id"].tolist()
    assert set(seen["val"].image_ids) == held_out  # the held-out fold stays SIIM images
    # Its OOF predictions are the prediction job's (ptxseg.train.oof), on the same SIIM fold.
    assert not list((tmp_path / "run").glob("oof*"))
    # The pseudo-masks reach the batches: a positive's target has its drawn square.
    item = seen["train"][len(siim)]
    assert item["target"].shape == (1, 64, 64) and item["target"].sum() == 400
    assert seen["train"][len(siim) + 1]["target"].sum() == 0
    # Every batch of an epoch holds half pseudo-labels (indices after the SIIM ones).
    order = seen["task"].mix(np.arange(len(siim)), np.random.default_rng(0))
    assert all((order[i : i + 4] >= len(siim)).sum() == 2 for i in range(0, len(order), 4))


def test_the_pseudo_labels_read_back_refuse_a_kept_image_without_a_repacked_image(tmp_path):
    nih = _pseudo_labels(tmp_path)
    read = read_pseudo_labels(nih.labels_csv, nih.candidates_manifest, 64)
    assert len(read.image_ids) == 5 and all(p.exists() for p in read.images + read.masks)
    manifest = pd.read_csv(nih.candidates_manifest)
    manifest.iloc[1:].to_csv(nih.candidates_manifest, index=False)
    with pytest.raises(ValueError, match=r"labels.csv: 1 kept image.* 00000100_000"):
        read_pseudo_labels(nih.labels_csv, nih.candidates_manifest, 64)


def _same_weights(a_dir: Path, b_dir: Path, member: str = "best") -> None:
    a = checkpoint.load(model_file(a_dir, member))["model"]
    b = checkpoint.load(model_file(b_dir, member))["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("teacher", [False, True], ids=["pseudo_labels", "mean_teacher"])
def test_a_second_round_killed_midway_resumes_to_the_same_weights(tmp_path, teacher):
    repacks = _siim_repacks(tmp_path, sizes=(64,), n=12)
    nih = _pseudo_labels(tmp_path)
    settings = ROUND2
    if teacher:
        spec = MeanTeacherSpec(consistency_weight=2.0, rampup_epochs=2, ema_decay=0.9)
        settings = replace(ROUND2, pseudo_share=0.0, mean_teacher=spec)
    _train_round2(tmp_path, repacks, nih, "straight", settings)
    stopped = _train_round2(tmp_path, repacks, nih, "resumed", settings, stop_after_epoch=2)
    assert stopped == {"stopped_after_epoch": 2}
    _train_round2(tmp_path, repacks, nih, "resumed", settings)
    _same_weights(tmp_path / "straight", tmp_path / "resumed")
    straight = pd.read_csv(tmp_path / "straight" / METRICS).drop(columns="seconds")
    resumed = pd.read_csv(tmp_path / "resumed" / METRICS).drop(columns="seconds")
    pd.testing.assert_frame_equal(straight, resumed)
    # Each epoch's image count: 8 SIIM images, plus as many pseudo-labels without a teacher.
    assert straight["images"].tolist() == [8, 8, 8] if teacher else [16, 16, 16]


def test_a_second_round_from_round_one_starts_from_its_weights(tmp_path, monkeypatch):
    """init round1: the model built for round 2 holds round 1's weights before any step."""
    repacks = _siim_repacks(tmp_path, sizes=(64,), n=12)
    nih = _pseudo_labels(tmp_path)
    first = build_model("unet_resnet34", 1, **SMALL, classification_head=True)
    torch.nn.init.constant_(first.net.segmentation_head[0].bias, 0.25)
    path = tmp_path / "round1.pt"
    checkpoint.export_model(path, first, {"arch": "unet_resnet34", "options": SMALL})
    seen = {}
    original = run_module.fit

    def spy(model, *args, **kwargs):
        seen["bias"] = float(model.net.segmentation_head[0].bias.detach())
        return original(model, *args, **kwargs)

    monkeypatch.setattr(run_module, "fit", spy)
    _train_round2(tmp_path, repacks, nih, "init", replace(ROUND2, epochs=1), weights=str(path))
    assert seen["bias"] == pytest.approx(0.25)


# ----------------------------------------------------------------------------- mean teacher


def test_the_consistency_weight_ramps_up_as_a_sigmoid_over_the_rampup_epochs():
    assert rampup(0, 5) == pytest.approx(np.exp(-5))
    assert rampup(5, 5) == rampup(9, 5) == 1.0 and rampup(3, 0) == 1.0
    values = [rampup(e, 5) for e in range(6)]
    assert values == sorted(values)


def test_the_teacher_is_an_ema_of_the_student_and_the_loss_compares_their_maps(tmp_path):
    nih = _pseudo_labels(tmp_path)
    from ptxseg.data.datasets import RepackedImages

    manifest = pd.read_csv(nih.candidates_manifest)
    unlabelled = RepackedImages(
        manifest["image_id"].tolist(),
        [Path(nih.candidates_manifest).parent / p for p in manifest["image"]],
        mean=0.45,
        std=0.2,
    )
    torch.manual_seed(0)
    student = build_model("unet_resnet34", 1, **SMALL).eval()
    teacher = MeanTeacher(student, unlabelled, MeanTeacherSpec(1.0, 0, 0.5, 0.0), 4)
    teacher.start_epoch(0, 7)
    assert teacher.weight == 1.0
    # Same weights, no noise: no consistency loss.
    assert float(teacher.loss(student, torch.device("cpu"))) == pytest.approx(0.0, abs=1e-7)
    before = {k: v.clone() for k, v in teacher.teacher.module.state_dict().items()}
    with torch.no_grad():
        for p in student.net.segmentation_head.parameters():
            p.add_(0.5)
    teacher.update(student)  # decay 0.5: the teacher moves half-way to the student
    key = "net.segmentation_head.0.bias"
    expected = 0.5 * before[key] + 0.5 * student.state_dict()[key]
    torch.testing.assert_close(teacher.teacher.module.state_dict()[key], expected)
    assert float(teacher.loss(student, torch.device("cpu"))) > 0


# ----------------------------------------------------------------------------- pseudo-labelling


def _export(path: Path, bias: float) -> Path:
    """A saved segmenter whose map is sigmoid(bias) nearly everywhere (its last layer zeroed)."""
    model = build_model("unet_resnet34", 1, **SMALL)
    head = model.net.segmentation_head[0]
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.constant_(head.bias, bias)
    checkpoint.export_model(path, model, {"arch": "unet_resnet34", "options": SMALL})
    return path


class BrightMap(torch.nn.Module):
    """A 'segmenter' sure of its map: every pixel of a bright image in, of a dark image out."""

    size_multiple = 32

    def forward(self, x):
        return 40.0 * x


def _candidates(root: Path, n: int = 6, size: int = 64) -> Path:
    """NIH candidates at ``size``: the first half bright, the rest dark."""
    images = {
        f"0000020{k}_000": np.full((size, size), 230 if k < n // 2 else 20, np.uint8)
        for k in range(n)
    }
    return _write_candidates(root / "bright_dark", images, size)


def _label(root: Path, candidates: Path, segmenters: dict, bands: Bands, siim_images=()) -> dict:
    stats = root / "stats.json"
    stats.write_text(json.dumps({"64": {"mean": 0.45, "std": 0.2}}))
    out = root / "labels" / "fold0"
    return pseudo_label_fold(
        fold=0,
        segmenters=segmenters,
        classifiers={},
        candidates_manifest=candidates,
        segment_stats=stats,
        classify_stats=None,
        segment_size=64,
        classify_size=64,
        bands=bands,
        siim_images=list(siim_images),
        labels_csv=out / "labels.csv",
        summary_json=out / "summary.json",
        runtime=Runtime(amp=False, channels_last=False, tta=("none", "hflip")),
    )


def _labels(root: Path) -> pd.DataFrame:
    return pd.read_csv(
        root / "labels" / "fold0" / "labels.csv", dtype={"image_id": str}, keep_default_na=False
    )


def test_a_fold_is_pseudo_labelled_at_the_share_under_the_cap_with_its_masks(tmp_path, monkeypatch):
    import ptxseg.infer.pseudo_labels as module

    monkeypatch.setattr(module, "load_member", lambda path, device: BrightMap())
    candidates = _candidates(tmp_path)
    bands = Bands(positive_min_probability=0.9, min_confidence=0.9, max_images=4)
    summary = _label(tmp_path, candidates, {"a": ["m.pt"]}, bands)
    table = _labels(tmp_path)
    assert (summary["positive"], summary["empty"], summary["candidates"]) == (2, 2, 6)
    assert table["kept"].tolist() == ["positive"] * 2 + [""] + ["empty"] * 2 + [""]
    assert set(table.loc[table["kept"] == "", "why"]) == {"over the cap"}
    masks = tmp_path / "labels" / "fold0"
    for row in table[table["kept"] == "positive"].itertuples():
        assert cv2.imread(str(masks / row.mask), cv2.IMREAD_GRAYSCALE).min() == 255
    empty = cv2.imread(str(masks / "masks" / "empty.png"), cv2.IMREAD_GRAYSCALE)
    assert empty.shape == (64, 64) and empty.max() == 0
    # The third bright image's mask, written while predicting, went with the cap.
    assert len(list((masks / "masks").glob("*.png"))) == 3
    assert summary["models"] == ["m.pt"]


def test_a_blend_of_a_sure_and_an_unsure_model_is_left_out_as_unsure(tmp_path):
    nih = _pseudo_labels(tmp_path, n=6)
    sure = _export(tmp_path / "sure.pt", 6.0)  # p = 0.9975 everywhere
    bands = Bands(positive_min_probability=0.9, min_confidence=0.9)
    _label(tmp_path, nih.candidates_manifest, {"a": [sure], "b": [sure]}, bands)
    table = _labels(tmp_path)
    # Confident positives everywhere but no empty image: the share leaves nothing to keep.
    assert (table["kept"] == "").all() and set(table["why"]) == {"over the positive share"}
    assert (table["probability"] > 0.99).all() and (table["mask_pixels"] == 64 * 64).all()
    # Blended with an unsure model (p = 0.5): the mean map is 0.749, under the cascade's top...
    unsure = _export(tmp_path / "unsure.pt", 0.0)
    bands = Bands(positive_min_probability=0.7, min_confidence=0.9)
    _label(tmp_path, nih.candidates_manifest, {"a": [sure], "b": [unsure]}, bands)
    table = _labels(tmp_path)
    assert set(table["why"]) == {"no mask from the cascade"} and (table["mask_pixels"] == 0).all()
    # ... and where a lower top draws it, the region is as unsure as its pixels.
    _label(tmp_path, nih.candidates_manifest, {"a": [sure], "b": [unsure]}, replace(bands, top=0.7))
    table = _labels(tmp_path)
    assert table["region_confidence"].round(2).eq(0.75).all()
    assert set(table["why"]) == {"unsure region"}


def test_a_siim_image_among_the_candidates_stops_the_pseudo_labelling(tmp_path):
    nih = _pseudo_labels(tmp_path, n=6)
    sure = _export(tmp_path / "sure.pt", 6.0)
    planted = pd.read_csv(nih.candidates_manifest, dtype={"image_id": str})["image_id"][2]
    with pytest.raises(ValueError, match="are SIIM images"):
        _label(tmp_path, nih.candidates_manifest, {"a": [sure]}, Bands(), siim_images=[planted])
    assert not (tmp_path / "labels" / "fold0" / "labels.csv").exists()


# ----------------------------------------------------------------------------- config


def _config(extra: dict) -> dict:
    config = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    config["pseudo_labels"] = {**config.get("pseudo_labels", {}), **extra}
    return config_module.validate(config)


def test_the_second_round_keys_reach_its_settings_from_the_config_file():
    config = _config({"enabled": True, "batch_share": 0.25, "recipe": {"epochs": 2}})
    names = segmenter_names(config)
    arch = round2_archs(config)[0]
    assert round2_name(arch) in names and names[0] == arch
    recipe = segmenter_recipe(config, round2_name(arch))
    assert recipe["epochs"] == 2 and recipe["loss"] == segmenter_recipe(config, arch)["loss"]
    settings = FitSettings.from_config(recipe, 0, Runtime()).for_round2(config["pseudo_labels"])
    assert (settings.pseudo_share, settings.mean_teacher, settings.epochs) == (0.25, None, 2)
    teacher = _config(
        {"enabled": True, "mean_teacher": {"enabled": True, "consistency_weight": 3.0}}
    )
    settings = FitSettings.from_config(recipe, 0, Runtime()).for_round2(teacher["pseudo_labels"])
    assert settings.pseudo_share == 0 and settings.mean_teacher.consistency_weight == 3.0
    assert round2_archs(_config({"enabled": False})) == []


class SpeckAndRegion(torch.nn.Module):
    """A 'segmenter' sure of a 20 x 20 region (p 0.9) and a 2-pixel speck (p 0.99) on every
    image, both on a background at 0.02 and symmetric (the flip TTA leaves them), with an
    image-level head at 0.95."""

    size_multiple = 32

    def forward(self, x):
        logits = torch.full_like(x, -4.0)
        logits[..., 10:30, 22:42] = 2.2
        logits[..., 50, 31:33] = 4.6
        return logits, torch.full((len(x), 1), 3.0)


def test_the_pseudo_label_keys_reach_the_labelling_from_the_config_file(tmp_path, monkeypatch):
    """The rule's params are the BAND_KEYS of the config; Bands reads each of them."""
    import ptxseg.infer.pseudo_labels as module
    from ptxseg.data.pseudo_labels import BAND_KEYS

    schema = config_module.load_schema()["properties"]["pseudo_labels"]["properties"]
    assert set(BAND_KEYS) <= set(schema)
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    assert "for key in BAND_KEYS" in common
    assert "bands=pseudo_label_bands()" in (ROOT / "workflow" / "rules" / "pseudo.smk").read_text()
    tiny = _config({})["pseudo_labels"]
    assert Bands.from_config(tiny) == Bands(**{k: tiny[k] for k in BAND_KEYS})
    assert (Bands.from_config(tiny).top, Bands.from_config(tiny).min_area) == (0.5, 512)

    monkeypatch.setattr(module, "load_member", lambda path, device: SpeckAndRegion())
    candidates = _candidates(tmp_path, n=2)

    def labelled(**keys) -> pd.Series:
        bands = Bands.from_config(_config(keys)["pseudo_labels"])
        _label(tmp_path, candidates, {"a": ["m.pt"]}, bands)
        return _labels(tmp_path).iloc[0]

    # top 0.95: only the speck reaches it, and 2 pixels are under min_area (2 at 64 px: 512).
    row = labelled(top=0.95, min_area=1024, positive_min_probability=0.9, min_confidence=0.9)
    assert row["why"] == "no mask from the cascade"
    # min_area 512 (2 pixels): the speck alone makes the cascade draw, at the bottom threshold
    # pixel_threshold 0.5: the region and the speck.
    row = labelled(top=0.95, min_area=512, positive_min_probability=0.9, min_confidence=0.9)
    assert row["mask_pixels"] == 400 + 2 and row["region_confidence"] > 0.9
    # pixel_threshold 0.95: the speck alone; a gate above the head's 0.95: nothing.
    assert labelled(top=0.95, min_area=512, pixel_threshold=0.95)["mask_pixels"] == 2
    row = labelled(top=0.5, min_area=0, positive_min_probability=0.96, empty_max_probability=0.5)
    assert row["mask_pixels"] == 0 and row["why"] == "uncertain"
    # min_confidence above the region's: unsure.
    row = labelled(top=0.5, min_area=0, positive_min_probability=0.9, min_confidence=0.99)
    assert row["why"] == "unsure region"
    # As an empty image (head 0.95 under an empty band up to 0.96), its pixels keep it out
    # unless empty_max_pixel lets them through.
    keys = {"positive_min_probability": 0.97, "empty_max_probability": 0.96}
    assert labelled(**keys, empty_max_pixel=0.98)["why"] == "a pixel above empty_max_pixel"
    assert labelled(**keys, empty_max_pixel=0.995)["why"] == "over the positive share"


def test_the_config_refuses_a_second_round_of_an_unknown_arch_or_crossed_bands():
    with pytest.raises(config_module.ConfigError, match=r"pseudo_labels.archs.*'nope'"):
        _config({"enabled": True, "archs": ["nope"]})
    with pytest.raises(config_module.ConfigError, match="empty band must lie below"):
        _config({"empty_max_probability": 0.95, "positive_min_probability": 0.9})
