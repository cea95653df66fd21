"""Prediction on new images with a trained ensemble: what a user runs on their own DICOMs or PNGs.

Everything needed is read from the results folder: ``ensemble/ensemble.json`` (weights, the
cascade's thresholds, the kept members, and the preprocessing the models were trained with) and
the fold models. Each image goes through the same steps as the test set: histogram
normalisation, resizing, every fold model with TTA, the blends, the gate and the triplet.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ptxseg.data.ids import check_image_id
from ptxseg.data.repack import Normalisation, normalise_histogram, resize_image
from ptxseg.data.transforms import scale_intensities
from ptxseg.ensemble.blend import weighted_mean
from ptxseg.infer.test_set import load_member
from ptxseg.io import atomic, rle
from ptxseg.io.dicom import read_image
from ptxseg.io.png import read_grey, write_png
from ptxseg.layout import Layout, head_arch, head_source
from ptxseg.runtime.device import pick_device
from ptxseg.runtime.predict import quantise_probabilities, tta_passes, tta_predict
from ptxseg.scoring.thresholds import Cascade, binarise

log = logging.getLogger(__name__)


class EnsembleNotFoundError(FileNotFoundError):
    """The results folder holds no trained ensemble."""


@dataclass
class Ensemble:
    config: dict
    classifiers: dict[str, list[torch.nn.Module]]  # arch -> one model per (fold, member)
    segmenters: dict[str, list[torch.nn.Module]]
    device: torch.device

    @classmethod
    def load(cls, results: str | os.PathLike, device: str = "auto") -> Ensemble:
        layout = Layout(str(results))
        path = Path(layout.ensemble("ensemble.json"))
        if not path.is_file():
            raise EnsembleNotFoundError(
                f"{path} not found: train the ensemble first "
                f"(snakemake --cores all results/ensemble/ensemble.json)"
            )
        config = json.loads(path.read_text())
        torch_device = pick_device(device)

        def models(stage: str, weights: dict) -> dict[str, list[torch.nn.Module]]:
            loaded = {}
            for arch, weight in weights.items():
                if weight <= 0:
                    continue
                files = [
                    Path(layout.model(stage, arch, k, m))
                    for k in range(config["preprocessing"]["n_folds"])
                    for m in config["members"][stage]
                ]
                missing = [str(f) for f in files if not f.is_file()]
                if missing:
                    raise EnsembleNotFoundError(
                        f"model file(s) missing from {results}: {', '.join(missing[:3])}"
                    )
                loaded[arch] = [load_member(f, torch_device).eval() for f in files]
            return loaded

        gate = config["classifier_weights"]
        classify = {a: w for a, w in gate.items() if head_arch(a) is None}
        # A segmenter is loaded where its maps or its head's probability have weight.
        segment = {
            a: max(w, gate.get(head_source(a), 0.0)) for a, w in config["segmenter_weights"].items()
        }
        return cls(config, models("classify", classify), models("segment", segment), torch_device)

    def _input(self, image: np.ndarray, size: int) -> torch.Tensor:
        stats = self.config["preprocessing"]["stats"][str(size)]
        scaled = scale_intensities(resize_image(image, size), stats["mean"], stats["std"])
        return torch.from_numpy(scaled)[None, None].to(self.device)

    def _mean_probability(
        self, models: list[torch.nn.Module], batch: torch.Tensor
    ) -> tuple[np.ndarray, float | None]:
        """The models' mean over the TTA passes: the probabilities (classifier (K,), segmenter
        map (H, W)) and a segmenter head's image probability (None without a head)."""
        passes = tta_passes(self.config["preprocessing"]["tta"])
        total, heads = None, []
        for model in models:
            p, head = tta_predict(model, batch, passes, self.device)
            total = p if total is None else total + p
            if head is not None:
                heads.append(float(head[0]))
        return (total / len(models)).cpu().numpy()[0], (float(np.mean(heads)) if heads else None)

    def predict(self, image: np.ndarray) -> tuple[np.ndarray, float | None, np.ndarray]:
        """(mask at the image's size, blended image-level probability (the gate's: classifiers
        and segmenter heads as the ensemble weighs them), blended uint8 map)."""
        prep = self.config["preprocessing"]
        normalised = normalise_histogram(image, Normalisation(**prep["normalisation"]))
        sources: dict[str, float] = {}
        if self.classifiers:
            batch = self._input(normalised, prep["classify_size"])
            for arch, models in self.classifiers.items():
                sources[arch] = float(self._mean_probability(models, batch)[0][0])
        batch = self._input(normalised, prep["segment_size"])
        maps = []
        for arch, models in self.segmenters.items():
            probability_map, head = self._mean_probability(models, batch)
            maps.append(probability_map)
            if head is not None:
                sources[head_source(arch)] = head
        gate_weights = self.config["classifier_weights"]
        probability = None
        if gate_weights:
            missing = sorted(set(gate_weights) - set(sources))
            if missing:
                raise EnsembleNotFoundError(f"no model gives the gate's source(s) {missing}")
            probability = float(
                weighted_mean(
                    [np.float32(sources[s]) for s in gate_weights], list(gate_weights.values())
                )
            )
        weights = [self.config["segmenter_weights"][a] for a in self.segmenters]
        blended = quantise_probabilities(weighted_mean(maps, weights))
        mask = binarise(
            blended, Cascade(**self.config["cascade"]), probability, out_shape=image.shape
        )
        return mask, probability, blended


def read_any(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """A DICOM (by its header) or any image OpenCV reads, as uint8 grey, with its ImageId."""
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(132)
    if path.suffix.lower() == ".dcm" or head[128:132] == b"DICM":
        image, header = read_image(path)
        image_id = header.sop_instance_uid or path.stem
    else:
        image, image_id = read_grey(path), path.stem
    return image, check_image_id(image_id, str(path))


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The radiograph in grey with the predicted region tinted red and outlined."""
    colour = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if mask.any():
        tint = colour.copy()
        tint[mask] = (0.6 * tint[mask] + 0.4 * np.array([0, 0, 255])).astype(np.uint8)
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        cv2.drawContours(tint, contours, -1, (0, 0, 255), max(1, image.shape[0] // 512))
        colour = tint
    return colour


def predict_files(
    paths: list[str | os.PathLike],
    results: str | os.PathLike,
    out_dir: str | os.PathLike,
    device: str = "auto",
) -> list[dict]:
    """Masks, overlays and RLE rows for each input file; returns one summary per image."""
    ensemble = Ensemble.load(results, device)
    out_dir = Path(out_dir)
    rows = []
    for path in paths:
        image, image_id = read_any(path)
        mask, probability, blended = ensemble.predict(image)
        write_png(out_dir / f"{image_id}_mask.png", mask.astype(np.uint8) * 255)
        write_png(out_dir / f"{image_id}_probability.png", cv2.resize(blended, image.shape[::-1]))
        atomic.write_bytes(
            out_dir / f"{image_id}_overlay.png",
            cv2.imencode(".png", overlay(image, mask))[1].tobytes(),
        )
        rows.append(
            {
                "ImageId": image_id,
                "EncodedPixels": rle.encode(mask),
                "source": str(path),
                "classifier_probability": "" if probability is None else round(probability, 4),
                "mask_pixels": int(mask.sum()),
            }
        )
        log.info(
            "%s: %s (%d pixels, classifier %.3f)",
            path,
            "pneumothorax" if mask.any() else "none",
            mask.sum(),
            probability if probability is not None else float("nan"),
        )
    with atomic.atomic_open(
        out_dir / "predictions.csv", "w", newline="", encoding="utf-8"
    ) as handle:
        writer = csv.DictWriter(
            handle,
            fieldnames=list(rows[0]) if rows else ["ImageId", "EncodedPixels"],
            lineterminator="\n",
        )
        writer.writeheader()
        writer.writerows(rows)
    return rows
