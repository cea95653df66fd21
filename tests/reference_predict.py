"""The per-image prediction as `ptxseg predict` ran it before `ptxseg.Predictor` (one image at a
time through every fold model, `tta_predict` per model): the reference the Predictor's outputs
are compared with, in the unit tests (tiny models) and the workflow tests (the tiny run)."""

from __future__ import annotations

import numpy as np
import torch

from ptxseg.data.intensity import scale_intensities
from ptxseg.data.repack import normalise_histogram, resize_image
from ptxseg.deploy.spec import CLASSIFY, SEGMENT, EnsembleSpec, ModelKey
from ptxseg.ensemble.blend import weighted_mean
from ptxseg.layout import head_source
from ptxseg.runtime.predict import quantise_probabilities, tta_predict
from ptxseg.scoring.thresholds import binarise

CPU = torch.device("cpu")


def reference_predict(
    spec: EnsembleSpec, models: dict[ModelKey, torch.nn.Module], image: np.ndarray
) -> tuple[np.ndarray, float | None, np.ndarray]:
    """(mask at the image's size, the gate's probability, the blended uint8 map)."""
    normalised = normalise_histogram(image, spec.normalisation)

    def batch(side: int) -> torch.Tensor:
        mean, std = spec.stats[side]
        return torch.from_numpy(scale_intensities(resize_image(normalised, side), mean, std))[
            None, None
        ]

    def mean_probability(stage: str, arch: str) -> tuple[np.ndarray, float | None]:
        keys = [k for k in spec.model_keys(stage) if k.arch == arch]
        images = batch(spec.sizes[stage])
        total, heads = None, []
        for key in keys:
            p, head = tta_predict(models[key], images, spec.passes, CPU)
            total = p if total is None else total + p
            if head is not None:
                heads.append(float(head[0]))
        return (total / len(keys)).numpy()[0], (float(np.mean(heads)) if heads else None)

    sources = {arch: float(mean_probability(CLASSIFY, arch)[0][0]) for arch in spec.classifiers}
    maps = []
    for arch in spec.segmenters:
        probability_map, head = mean_probability(SEGMENT, arch)
        maps.append(probability_map)
        if head is not None:
            sources[head_source(arch)] = head
    gate = {s: w for s, w in spec.gate_weights.items() if w > 0}
    probability = None
    if gate:
        probability = float(
            weighted_mean([np.float32(sources[s]) for s in gate], list(gate.values()))
        )
    weights = [spec.segmenter_weights[a] for a in spec.segmenters]
    blended = quantise_probabilities(weighted_mean(maps, weights))
    mask = binarise(blended, spec.cascade, probability, out_shape=image.shape)
    return mask, probability, blended
