"""The per-image prediction as `ptxseg predict` ran it before `ptxseg.Predictor` (one image at a
time through every fold model, `tta_predict` per model, the cascade's steps on the outputs held
together): the reference the Predictor's outputs (batched, fold models streamed) are compared
with, in the unit tests (tiny models) and the workflow tests (the tiny run)."""

from __future__ import annotations

import numpy as np
import torch

from ptxseg.contracts.ensemble_spec import CLASSIFY, SEGMENT, EnsembleSpec, ModelKey
from ptxseg.data.intensity import scale_intensities
from ptxseg.data.repack import normalise_histogram, resize_image
from ptxseg.layout import head_source
from ptxseg.runtime.predict import tta_predict
from ptxseg.scoring.cascade import (
    architecture_map,
    binarise,
    blend_maps,
    folds_probability,
    gate_probability,
    members_map,
    members_probability,
    quantise_probabilities,
)

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
        """The architecture's map (float32, 0-255) or probability, and its head's: per fold, the
        members' (each map quantised), then the folds' mean (`ptxseg.scoring.cascade`)."""
        images = batch(spec.sizes[stage])
        by_fold, heads = [], []
        for fold in range(spec.n_folds):
            keys = [k for k in spec.model_keys(stage) if k.arch == arch and k.fold == fold]
            outputs = [tta_predict(models[key], images, spec.passes, CPU) for key in keys]
            if stage == SEGMENT:
                by_fold.append(members_map([quantise_probabilities(p.numpy()) for p, _ in outputs]))
            else:
                by_fold.append(members_probability([p.numpy()[:, 0] for p, _ in outputs]))
            if outputs[0][1] is not None:
                heads.append(members_probability([h.numpy() for _, h in outputs]))
        head = float(folds_probability(np.stack(heads, axis=1))[0]) if heads else None
        if stage == SEGMENT:
            return architecture_map(by_fold)[0], head
        return folds_probability(np.stack(by_fold, axis=1)), head

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
            gate_probability([np.float32([sources[s]]) for s in gate], list(gate.values()))[0]
        )
    weights = [spec.segmenter_weights[a] for a in spec.segmenters]
    blended = blend_maps(maps, weights)
    mask = binarise(blended, spec.cascade, probability, out_shape=image.shape)
    return mask, probability, blended
