"""configs/full.yaml as one: every rule it plans, every lever as shipped, on a handful of demo images.

Only counts and sizes shrink, through tests/workflow/full_structure.yaml (tests/structure.py says
how); `weights: imagenet` loads stand-ins of the official files. The run asks for `all` and the
optional targets (the RandAugment search, the compound-scaling search, the ablation), then
`ptxseg export` and `ptxseg predict --dicom-out` on its outputs with the cascade's thresholds
lowered until masks are drawn (predict's rows must equal the submission's: one cascade), then the
mean-teacher variant of the second round. A lever that breaks the full config, or a key full.yaml gains that the override
does not place, fails here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import structure
import yaml
from dag import ROOT, freed_after, snakemake, snakemake_command
from imagenet_files import write_stand_in

from ptxseg.config import validate
from ptxseg.contracts.ensemble_spec import EnsembleSpec
from ptxseg.data.siim import read_index
from ptxseg.ensemble.submission import PredictionFiles, validate_submission, write_submission
from ptxseg.io import maps, rle
from ptxseg.layout import OOF_SUMMARY, RESULTS, SUMMARY, Layout, head_arch, round2_name
from ptxseg.scoring.cascade import Cascade

pytestmark = pytest.mark.workflow

CORES = 2  # the CI machine's, and Snakemake caps every rule's threads at them
OVERRIDE = Path(__file__).with_name("full_structure.yaml")
OPTIONAL = [
    "results/augsearch/summary.csv",
    "results/scaling/summary.csv",
    "results/ablation/summary.csv",
]


def shipped() -> dict:
    return structure.load(ROOT / "configs" / "full.yaml")


def test_the_override_places_every_key_of_the_full_config_and_keeps_the_levers():
    full, override = shipped(), structure.load(OVERRIDE)
    assert structure.unplaced(full, override) == [], (
        "configs/full.yaml has keys that tests/workflow/full_structure.yaml does not place "
        "(add each to sizes, areas, counts, replaced or kept)"
    )
    assert structure.stale(full, override) == []
    derived = structure.derive(full, override, weights="/weights")
    assert structure.kept_values_differ(full, derived, override) == []
    config = validate(derived)
    assert config["segment"]["size"] * override["factor"] == full["segment"]["size"]


def test_a_key_the_full_config_gains_is_refused_until_placed():
    full, override = shipped(), structure.load(OVERRIDE)
    full["segment"]["recipe"]["new_lever"] = {"enabled": True}
    assert structure.unplaced(full, override) == ["segment.recipe.new_lever.enabled"]


def _imagenet_stand_ins(config: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    wanted = []
    if config["pretrain"]["weights"] == "imagenet":
        wanted += [(arch, {}) for arch in config["pretrain"]["archs"]]
    for stage in ("classify", "segment"):
        for arch, entry in config[stage]["archs"].items():
            if entry.get("weights") == "imagenet":
                wanted.append((arch, entry.get("options") or {}))
    for arch, options in wanted:
        write_stand_in(arch, folder, options)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, request):
    """The full config's structure: `all` and the optional targets, run once (its ~8 GB freed
    when the module's tests pass)."""
    with freed_after(request, tmp_path_factory.mktemp("full_structure")) as workdir:
        yield _run_full(workdir)


def _run_full(workdir: Path):
    derived = structure.derive(
        shipped(), structure.load(OVERRIDE), weights=str(workdir / "weights")
    )
    _imagenet_stand_ins(derived, workdir / "weights")
    config = workdir / "full_structure.yaml"
    config.write_text(yaml.safe_dump(derived))
    run = snakemake(
        workdir,
        "--cores",
        CORES,
        "all",
        *OPTIONAL,
        "--configfile",
        config,
        check=False,
        timeout=1800,
    )
    assert run.returncode == 0, run.stderr[-6000:]
    return workdir, config, run.stderr


def _planned_rules(workdir: Path, config: Path, *targets: str) -> set[str]:
    command = snakemake_command(workdir, "-n", "--forceall", *targets, "--configfile", config)
    dry = subprocess.run(command, capture_output=True, text=True, check=True)
    return set(re.findall(r"^(?:local)?rule (\w+):", dry.stdout, re.MULTILINE)) - {"all"}


def test_every_rule_the_full_config_plans_runs_to_the_end(full_run):
    workdir, config, output = full_run
    planned = _planned_rules(workdir, config, "all", *OPTIONAL)
    # The levers' own rules are in the plan: both rounds, heads, the searches, the model card.
    for rule in (
        "pretrain_nih",
        "train_classifier",
        "train_segmenter",
        "pseudo_label_nih",
        "train_segmenter_round2",
        "ensemble",
        "submission",
        "model_card",
        "augsearch_point",
        "scaling_candidate",
    ):
        assert rule in planned, rule
    ran = set(re.findall(r"^(?:local)?rule (\w+):", output, re.MULTILINE)) - {"all"}
    assert planned <= ran, f"planned but never run: {sorted(planned - ran)}"
    results = workdir / "results"
    index = read_index(results / "data" / "siim_index.csv")
    validate_submission(results / "submission.csv", index[index["split"] == "test"])
    for target in OPTIONAL:
        assert len(pd.read_csv(workdir / target)) > 0, target
    ensemble = EnsembleSpec.from_results(results)
    round2 = [name for name in ensemble.segmenter_weights if name.endswith("-round2")]
    assert len(round2) == 3  # every architecture's second round reaches the blend
    heads = [name for name in ensemble.gate_weights if name.startswith("head:")]
    assert len(heads) == 6  # a head per segmenter of both rounds reaches the gate's search
    # The last stage keeps the members the ensemble asks for: best, SWA, three snapshots.
    fold = results / "segment" / "unet_efficientnet_b4" / "fold0"
    assert sorted(p.stem for p in fold.glob("model_*.pt")) == sorted(
        f"model_{m}" for m in ("best", "swa", "snapshot0", "snapshot1", "snapshot2")
    )
    assert (results / "model_card.md").stat().st_size > 0


def test_the_levers_meet_where_they_used_to_break(full_run):
    """Each crash the full config once had, on its own run: the RandAugment point trains every
    stage of the recipe (it found the 512 stage's repack), and scale TTA reaches only the models
    trained across scales (a classifier's 0.75 pass fell below its smallest input)."""
    workdir, config, _ = full_run
    derived = yaml.safe_load(config.read_text())
    stage_sizes = [s["size"] for s in derived["segment"]["recipe"]["stages"]]
    point = sorted((workdir / "results" / "augsearch").glob("*/metrics.csv"))[0]
    assert sorted(set(pd.read_csv(point)["size"])) == sorted(stage_sizes)

    def passes(stage, arch):  # as the prediction job took them (ptxseg.train.oof)
        path = workdir / RESULTS.fold_file(stage, arch, 0, OOF_SUMMARY)
        return [tuple(p) for p in json.loads(path.read_text())["tta"]]

    flips = [("none", 1.0), ("hflip", 1.0)]
    assert derived["train"]["tta"] == ["none", "hflip", 0.75, 1.0]  # as full.yaml ships it
    assert passes("segment", "unet_resnet34") == [("none", 0.75), ("hflip", 0.75), *flips]
    for arch in derived["classify"]["archs"]:
        assert passes("classify", arch) == flips
    assert passes("segment", round2_name("unet_resnet34")) == flips  # one stage, one size


def ptxseg(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ptxseg.cli", *map(str, args)], capture_output=True, text=True
    )


def _drawing_cascade(results: Path, ensemble: EnsembleSpec) -> Cascade:
    """The run's cascade with its thresholds lowered to where the test maps draw masks: top and
    bottom at the 90th percentile of the first blended segmenter's test pixels, no minimum area,
    no gate (a few epochs on 16 images rarely draw a mask at the searched thresholds)."""
    arch = next(a for a, w in ensemble.segmenter_weights.items() if w > 0)
    stack = maps.read_rows(Layout(str(results)).test_maps(arch, 0), slice(None))
    threshold = float(np.percentile(stack, 90)) / 255
    return Cascade(gate=0.0, top=threshold, min_area=0.0, bottom=threshold)


@pytest.fixture(scope="module")
def drawn(full_run, tmp_path_factory):
    """The run's results with its cascade lowered until masks are drawn (`_drawing_cascade`),
    the submission those thresholds give, the test DICOMs and their shapes."""
    workdir, config, _ = full_run
    results = workdir / "results"
    ensemble = EnsembleSpec.from_results(results)
    ensemble = replace(ensemble, cascade=_drawing_cascade(results, ensemble))
    folder = workdir / "drawn"  # a results folder whose ensemble draws: the run's files, linked
    folder.mkdir()
    for entry in results.iterdir():
        if entry.name != "ensemble":
            (folder / entry.name).symlink_to(entry)
    shutil.copytree(results / "ensemble", folder / "ensemble")
    ensemble.write(folder / "ensemble" / "ensemble.json")
    index = read_index(results / "data" / "siim_index.csv")
    test = index[index["split"] == "test"]
    n_folds = yaml.safe_load(config.read_text())["folds"]["n_folds"]
    files = PredictionFiles.at(
        Layout(str(results)),
        [s for s in ensemble.gate_weights if head_arch(s) is None],  # weight 0 too
        list(ensemble.segmenter_weights),
        n_folds,
    )
    submission = tmp_path_factory.mktemp("drawn") / "submission.csv"
    write_submission(test, files, ensemble, submission)
    expected = pd.read_csv(submission, dtype=str, keep_default_na=False)
    assert (expected["EncodedPixels"] != rle.EMPTY).any(), "the cascade drew no mask"
    by_id = test.set_index("image_id")
    shapes = [
        (int(by_id.loc[i, "rows"]), int(by_id.loc[i, "columns"])) for i in expected["ImageId"]
    ]
    # In the order the test set's prediction took them (by ImageId): on a CPU, a model's float
    # sums can depend on an image's place in the batch.
    dicoms = [str(workdir / p) for p in test.sort_values("image_id")["path"]]
    return folder, expected, dicoms, shapes


def _predicted(out: Path, expected: pd.DataFrame, dicoms: list[str]) -> list[str]:
    predicted = pd.read_csv(out / "predictions.csv", dtype=str, keep_default_na=False)
    assert len(predicted) == len(dicoms)
    return predicted.set_index("ImageId").loc[expected["ImageId"], "EncodedPixels"].tolist()


def test_dicom_predict_draws_what_the_submission_draws(full_run, drawn, tmp_path):
    """One cascade: `ptxseg predict --dicom-out` on the test DICOMs, from the full config's
    results (PyTorch), writes submission.csv's rows byte for byte where masks are drawn, and a
    SEG and a capture per DICOM."""
    _, config, _ = full_run
    folder, expected, dicoms, _ = drawn
    out, dicom_out = tmp_path / "out", tmp_path / "dicom"
    # The prediction jobs' threads and one batch (the test images are fewer than either job's
    # batch): byte for byte needs the same float sums (an SWA member's BatchNorm statistics from
    # a handful of images amplify a change of summation order to a grey level or more).
    threads = yaml.safe_load(config.read_text())["resources"]["predict"]["threads"]
    run = ptxseg(
        "predict",
        *dicoms,
        "--results",
        folder,
        "--out",
        out,
        "--dicom-out",
        dicom_out,
        "--threads",
        min(threads, CORES),
        "--batch-size",
        len(dicoms),
        "--quiet",
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert _predicted(out, expected, dicoms) == expected["EncodedPixels"].tolist()
    assert len(list(dicom_out.iterdir())) == 2 * len(dicoms)


def test_export_predicts_what_the_submission_draws(drawn, tmp_path):
    """`ptxseg export` of the full config's ensemble, and `ptxseg predict --model` on the test
    DICOMs: the submission's rows up to onnxruntime's float rounding."""
    folder, expected, dicoms, shapes = drawn
    export, out = tmp_path / "export", tmp_path / "out"
    run = ptxseg("export", "--results", folder, "--out", export)
    assert run.returncode == 0, run.stderr[-4000:]
    assert len(json.loads((export / "manifest.json").read_text())["models"]) > 0
    run = ptxseg("predict", *dicoms, "--model", export, "--out", out, "--quiet")
    assert run.returncode == 0, run.stderr[-4000:]
    # onnxruntime's float sums differ from PyTorch's by ~1e-6: a pixel on a quantisation
    # boundary at the threshold may move; the images drawn are the same, the pixels nearly.
    rows = _predicted(out, expected, dicoms)
    for got, want, shape in zip(rows, expected["EncodedPixels"], shapes, strict=True):
        a, b = rle.decode(got, shape), rle.decode(want, shape)
        assert a.any() == b.any() and (a != b).mean() <= 1e-3


def test_the_mean_teacher_variant_trains_every_second_round(full_run):
    """The 5th place's mean teacher instead of pseudo-labels: every architecture's second round
    retrains with it, on fold 0 (the other fold is the same rule; what follows it, prediction
    and the ensemble, is the rules that ran above)."""
    workdir, config, _ = full_run
    derived = yaml.safe_load(config.read_text())
    derived["pseudo_labels"]["mean_teacher"] = {"enabled": True}
    teacher = workdir / "mean_teacher.yaml"
    teacher.write_text(yaml.safe_dump(derived))
    targets = [
        RESULTS.fold_file("segment", round2_name(arch), 0, SUMMARY)
        for arch in derived["segment"]["archs"]
    ]
    run = snakemake(
        workdir, "--cores", CORES, *targets, "--configfile", teacher, check=False, timeout=1200
    )
    assert run.returncode == 0, run.stderr[-6000:]
    ran = re.findall(r"^(?:local)?rule (\w+):", run.stderr, re.MULTILINE)
    assert ran.count("train_segmenter_round2") == len(targets)
    assert "pseudo_label_nih" not in ran and "train_segmenter" not in ran
    for target in targets:
        assert json.loads((workdir / target).read_text())["images_held_out"] > 0
    # With full.yaml's crop stage (which once raised "Can not find mask" on the unlabelled NIH
    # images, now cropped anywhere), every architecture's round 2 ran the mean teacher.
    assert derived["pseudo_labels"]["recipe"]["stages"][-1]["crop"]["size"]
    for arch in derived["segment"]["archs"]:
        log = workdir / RESULTS.log("train_segmenter_round2", f"{arch}_fold0")
        assert "mean teacher on" in log.read_text()
