"""Bad configs: the DAG refuses to build, or the job stops at once, with a message naming the key."""

from __future__ import annotations

import pytest
from dag import files_config, snakemake, train_first_segmenter_fold, write_config

from ptxseg.data.folds import patient_groups, read_overlap
from ptxseg.data.siim import read_index

pytestmark = pytest.mark.workflow


def dry_run(tmp_path, config):
    result = snakemake(tmp_path, "-n", "--configfile", config, check=False)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        (
            {"repack": {"sizez": [64]}},
            "config key 'repack.sizez' is unknown; did you mean 'sizes'?",
        ),
        (
            {"folds": {"n_folds": "five"}},
            "config key 'folds.n_folds': 'five' is not of type 'integer'",
        ),
        (
            {"segment": {"archs": {"unet_resnet35": {}}}},
            "config key 'segment.archs.unet_resnet35': unknown model 'unet_resnet35'; did you mean 'unet_resnet34'?",
        ),
        (
            {"classify": {"archs": {"unet_resnet34": {}}}},
            "config key 'classify.archs.unet_resnet34': 'unet_resnet34' is a segmenter, not a classifier",
        ),
        (
            {"segment": {"archs": {"unet_resnet34": {"weights": "/no/such/weights.pt"}}}},
            "config key 'segment.archs.unet_resnet34.weights': checkpoint file '/no/such/weights.pt' does not exist",
        ),
        (
            {"ensemble": {"members": {"segment": ["snapshot7"]}}},
            "config key 'ensemble.members.segment' names 'snapshot7'",
        ),
    ],
)
def test_config_fault_stops_the_dag_naming_the_key(tmp_path, sections, message):
    code, output = dry_run(
        tmp_path, write_config(tmp_path / "bad.yaml", "configs/tiny.yaml", **sections)
    )
    assert code != 0 and message in output
    assert not (tmp_path / "results").exists()


def test_more_folds_than_positive_patients(tmp_path, data):
    config = files_config(tmp_path, data)
    config.write_text(config.read_text().replace("n_folds: 2", "n_folds: 7"))
    result = snakemake(
        tmp_path, "results/data/siim_folds.csv", "--cores", 1, "--configfile", config, check=False
    )
    assert result.returncode != 0
    log = (tmp_path / "results" / "logs" / "folds_siim" / "folds_siim.log").read_text()
    # The counts in the message are the positive and negative patient groups of what the run kept.
    data_dir = tmp_path / "results" / "data"
    index = read_index(data_dir / "siim_index.csv")  # the finished steps are kept
    train = index[index["split"] == "train"].reset_index(drop=True)
    groups = patient_groups(train, read_overlap(data_dir / "nih_siim_overlap.csv"))["group"]
    labels = train["has_pneumothorax"].astype(int)
    positive, negative = groups[labels == 1].nunique(), groups[labels == 0].nunique()
    assert positive < 7 and negative > 0
    assert (
        f"folds.n_folds is 7, but there are only {positive} positive and {negative} negative groups"
        in log
    )
    assert not (tmp_path / "results" / "data" / "siim_folds.csv").exists()


def test_missing_imagenet_weights_fail_at_once_naming_the_file(tmp_path):
    config = write_config(
        tmp_path / "w.yaml",
        "configs/tiny.yaml",
        models={"weights_dir": str(tmp_path / "w")},
        segment={"archs": {"unet_resnet34": {"weights": "imagenet"}}},
    )
    assert (
        snakemake(
            tmp_path,
            "results/repack/siim/stats_32.json",
            "--cores",
            2,
            "--configfile",
            config,
            check=False,
        ).returncode
        == 0
    )
    result, log = train_first_segmenter_fold(tmp_path, config)
    assert result.returncode != 0
    assert (
        "resnet34-b627a593.pth" in log
        and "models.weights_dir" in log
        and "download.pytorch.org" in log
    )
    # It stops as the model is built: no download tried (torch.hub prints "Downloading:" and,
    # offline, retries for minutes) and no epoch trained or saved.
    assert "Downloading:" not in log + str(result.stdout) + str(result.stderr)
    assert "resume state saved" not in log and "epoch 1" not in log
    assert not (
        tmp_path / "results" / "segment" / "unet_resnet34" / "fold0" / "metrics.csv"
    ).exists()
