"""What `ptxseg predict --dicom-out DIR` writes for a DICOM input: a DICOM Segmentation of the
mask, a Secondary Capture of the radiograph with the mask outlined (``--fill``: tinted too) and the
probability drawn, and with ``--dicom-probability`` a Parametric Map of the pixel probabilities at
full precision (``io.dicom_outputs``, highdicom). Every DICOM input is checked before any image is predicted, so a source without a valid
StudyInstanceUID stops the run at once, naming its file, before anything is written."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pydicom

from ptxseg import __version__
from ptxseg.deploy.inputs import is_dicom
from ptxseg.deploy.prediction import Prediction
from ptxseg.io.dicom_outputs import (
    check_source,
    write_probability_map,
    write_secondary_capture,
    write_segmentation,
)

log = logging.getLogger(__name__)

SUFFIXES = {"seg": "_seg.dcm", "capture": "_capture.dcm", "probability": "_probability.dcm"}


@dataclass(frozen=True)
class DicomOutputs:
    out_dir: Path
    probability_map: bool = False
    fill: bool = False

    def check(self, paths: list[str | os.PathLike]) -> int:
        """Check every DICOM input's identifiers and image before prediction; the count."""
        dicoms = [p for p in paths if is_dicom(p)]
        for path in dicoms:
            check_source(pydicom.dcmread(path, stop_before_pixels=True), path)
        if len(dicoms) < len(paths):
            log.info(
                "--dicom-out: %d of %d inputs are not DICOM; they get PNG outputs only",
                len(paths) - len(dicoms),
                len(paths),
            )
        return len(dicoms)

    def write(self, prediction: Prediction) -> list[Path]:
        """The DICOM outputs of one prediction whose source is a DICOM file (none otherwise)."""
        if prediction.source is None or not is_dicom(prediction.source):
            return []
        source = pydicom.dcmread(prediction.source)
        stem = self.out_dir / prediction.image_id
        written = [Path(f"{stem}{SUFFIXES['seg']}"), Path(f"{stem}{SUFFIXES['capture']}")]
        write_segmentation(source, prediction.mask, written[0], algorithm_version=__version__)
        write_secondary_capture(
            source,
            prediction.mask,
            prediction.calibrated_probability,
            written[1],
            algorithm_version=__version__,
            image=prediction.image,
            fill=self.fill,
        )
        if self.probability_map:
            written.append(Path(f"{stem}{SUFFIXES['probability']}"))
            # The models' float blend where the prediction has it, not the PNG's 1/255 steps.
            precise = prediction.float_probability_map
            probability = prediction.probability_map if precise is None else precise
            write_probability_map(source, probability, written[-1], algorithm_version=__version__)
        return written
