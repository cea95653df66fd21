"""NIH ChestX-ray14 label parsing and the patient-grouped split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ptxseg.data import nih


@pytest.mark.realdata
def test_full_real_label_file(real_data):
    labels = nih.read_labels(real_data / "labels" / "nih-Data_Entry_2017_v2020.csv.gz")
    assert len(labels) == 112120
    matrix = labels[list(nih.FINDINGS)].to_numpy()
    assert matrix.shape == (112120, 14) and set(np.unique(matrix)) == {0, 1}
    assert labels["patient_id"].nunique() == 30805
    # Published counts of ChestX-ray14: 60,361 'No Finding' images, 5,302 with Pneumothorax.
    assert int((matrix.sum(1) == 0).sum()) == 60361
    assert int(labels["Pneumothorax"].sum()) == 5302
    split = nih.patient_split(labels, val_fraction=0.1, seed=2019)
    train_patients = set(labels.loc[split == "train", "patient_id"])
    val_patients = set(labels.loc[split == "val", "patient_id"])
    assert not train_patients & val_patients
    assert 0.08 < (split == "val").mean() < 0.12


@pytest.mark.realdata
def test_real_sample_and_its_images(real_data):
    folder = real_data / "nih-cxr14-sample"
    index, rejects = nih.build_index(folder, folder / "Data_Entry_2017_v2020_sample.csv", 0.2, 0)
    assert len(index) == 30 and rejects.empty
    row = index.set_index("image_id").loc["00000100_000"]
    assert (row.Atelectasis, row.Effusion, row.Infiltration, row.Pneumothorax) == (1, 1, 1, 0)
    assert int(index["Pneumothorax"].sum()) == 9


def test_2017_layout_with_trailing_commas(tmp_path):
    path = tmp_path / "Data_Entry_2017.csv"
    path.write_text(
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n"
        "00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143,\n"
        "00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143,\n"
        "00000002_000.png,No Finding,0,2,81,M,PA,2500,2048,0.171,0.171,\n"
    )
    labels = nih.read_labels(path)
    assert list(labels["image_id"]) == ["00000001_000", "00000001_001", "00000002_000"]
    assert labels.loc[1, "Emphysema"] == 1 and labels.loc[1, "Cardiomegaly"] == 1
    assert labels.loc[2, list(nih.FINDINGS)].sum() == 0
    assert not any(c.startswith("Unnamed") for c in labels.columns)


def _write(path, rows, header="Image Index,Finding Labels,Patient ID"):
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_unknown_finding_names_the_line(tmp_path):
    path = _write(tmp_path / "l.csv", ["a_000.png,Effusion,1", "b_000.png,Effusion|Pneumothorx,2"])
    with pytest.raises(nih.NihLabelError, match=r"l.csv: line 3: unknown finding 'Pneumothorx'"):
        nih.read_labels(path)


def test_missing_column_and_empty_file(tmp_path):
    path = _write(tmp_path / "l.csv", ["a_000.png,1"], header="Image Index,Patient ID")
    with pytest.raises(nih.NihLabelError, match="missing column.*'Finding Labels'"):
        nih.read_labels(path)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(nih.NihLabelError, match="empty"):
        nih.read_labels(tmp_path / "empty.csv")


def test_unsafe_image_name_and_duplicates(tmp_path):
    path = _write(tmp_path / "l.csv", ["../x.png,Effusion,1"])
    with pytest.raises(ValueError, match=r"line 2: ImageId '../x.png'"):
        nih.read_labels(path)
    path = _write(tmp_path / "d.csv", ["a_000.png,Effusion,1", "a_000.png,Mass,1"])
    with pytest.raises(
        nih.NihLabelError, match="line 3: Image Index 'a_000.png' already on line 2"
    ):
        nih.read_labels(path)


def test_split_is_grouped_and_reproducible():
    labels = pd.DataFrame({"patient_id": np.repeat(np.arange(200), 3).astype(str)})
    first = nih.patient_split(labels, 0.25, seed=3)
    assert first.equals(nih.patient_split(labels, 0.25, seed=3))
    assert not first.equals(nih.patient_split(labels, 0.25, seed=4))
    per_patient = first.groupby(labels["patient_id"]).nunique()
    assert (per_patient == 1).all()


def test_pretraining_findings_leave_out_the_excluded_in_order():
    kept = nih.pretraining_findings(["Pneumothorax"])
    assert len(kept) == 13 and "Pneumothorax" not in kept
    assert kept == [name for name in nih.FINDINGS if name != "Pneumothorax"]
    assert nih.pretraining_findings([]) == list(nih.FINDINGS)
    with pytest.raises(
        ValueError, match=r"'pretrain\.exclude_findings'.*'Pnemothorax'.*'Pneumothorax'"
    ):
        nih.pretraining_findings(["Pnemothorax"])
    with pytest.raises(ValueError, match="leaves out all 14 findings"):
        nih.pretraining_findings(nih.FINDINGS)


def test_the_schema_knows_the_fourteen_findings_and_defaults_to_pneumothorax():
    from ptxseg import config

    schema = config.load_schema()
    listed = schema["properties"]["pretrain"]["properties"]["exclude_findings"]["items"]["enum"]
    assert tuple(listed) == nih.FINDINGS
    assert config.validate({})["pretrain"]["exclude_findings"] == ["Pneumothorax"]
    with pytest.raises(config.ConfigError, match=r"'pretrain\.exclude_findings\[1\]'.*'Hernie'"):
        config.validate({"pretrain": {"exclude_findings": ["Pneumothorax", "Hernie"]}})
    with pytest.raises(config.ConfigError, match=r"'pretrain\.exclude_findings'"):
        config.validate({"pretrain": {"exclude_findings": list(nih.FINDINGS)}})


def test_pretraining_without_a_validation_image_says_so(tmp_path):
    from ptxseg.train.run import pretrain_nih
    from ptxseg.train.settings import FitSettings

    index = pd.DataFrame(
        {"image_id": ["00000001_000"], "patient_id": ["1"], "split": ["train"]}
        | {name: [0] for name in nih.FINDINGS}
    )
    index.to_csv(tmp_path / "index.csv", index=False)
    manifest = {"image_id": ["00000001_000"], "split": ["nih"], "size": [32], "image": ["32/a.png"]}
    pd.DataFrame(manifest | {"mask": [""]}).to_csv(tmp_path / "manifest.csv", index=False)
    (tmp_path / "stats.json").write_text('{"32": {"mean": 0.5, "std": 0.25, "images": 1}}')
    with pytest.raises(ValueError, match=r"index\.csv: no image in the NIH val split"):
        pretrain_nih(
            arch="densenet169",
            nih_index=tmp_path / "index.csv",
            manifest_csv=tmp_path / "manifest.csv",
            stats_json=tmp_path / "stats.json",
            size=32,
            settings=FitSettings(epochs=1, batch_size=2, lr=0.001, seed=1),
            out_dir=tmp_path / "out",
            state_path=tmp_path / "state.pt",
            exclude_findings=["Pneumothorax"],
        )
