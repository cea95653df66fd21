"""Atomic writes keep the previous file on failure; unsafe ids and control characters never pass."""

from __future__ import annotations

import pandas as pd
import pytest

from ptxseg.data.ids import BadImageId, check_image_id, printable
from ptxseg.io import atomic


def test_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "out.json"
    atomic.write_json(target, {"epoch": 1})
    with pytest.raises(RuntimeError), atomic.atomic_open(target, "w") as handle:
        handle.write('{"epoch": 2, "half')
        raise RuntimeError("killed mid-write")
    assert target.read_text().strip().startswith('{\n  "epoch": 1')
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary left behind


def test_disk_full_while_writing_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "table.csv"
    atomic.write_csv(target, pd.DataFrame({"a": [1]}))

    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    with pytest.raises(OSError, match="No space left"):
        atomic.write_csv(target, pd.DataFrame({"a": [2]}))
    assert target.read_text() == "a\n1\n"
    assert len(list(tmp_path.iterdir())) == 1


def test_read_modes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="writes only"), atomic.atomic_open(tmp_path / "x", "rb"):
        pass


@pytest.mark.parametrize(
    "good",
    [
        "1.2.276.0.7230010.3.1.4.8323329.300.1517875162.258081",
        "00000001_000",
        "00000001_000.png",
        "a-b_c",
    ],
)
def test_safe_ids_pass(good):
    assert check_image_id(good, "here") == good


@pytest.mark.parametrize(
    "bad",
    ["../x", "..", ".hidden", "a/b", "a\\b", "", "x" * 201, "a\x00b", "a b", "1..2", None, 12],
)
def test_unsafe_ids_are_refused_naming_where(bad):
    with pytest.raises(BadImageId, match="file.csv: line 7: ImageId"):
        check_image_id(bad, "file.csv: line 7")


def test_printable_escapes_control_characters():
    assert printable("a\x1b[2Jb\nc\td") == "a\\x1b[2Jb\\x0ac\\x09d"
    assert printable("plain text") == "plain text"
