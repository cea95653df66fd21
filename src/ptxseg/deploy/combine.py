"""From each fold model's output on a batch to the batch's predictions: the architectures' means,
the gate's blend, its spread, the calibration, the segmenters' blend and the cascade.

One implementation for both backends, in NumPy (no torch), by the steps of the cascade every
path shares (``ptxseg.scoring.cascade``): a model's map quantised to uint8, a fold's members'
rounded mean, the folds' float32 mean, the blend rounded once; a source's members' then folds'
mean. So predict draws what the submission draws from the same models' outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ptxseg.contracts.ensemble_spec import CLASSIFY, SEGMENT, EnsembleSpec, ModelKey
from ptxseg.deploy.images import PreparedImage
from ptxseg.deploy.prediction import Prediction
from ptxseg.layout import head_arch
from ptxseg.scoring.cascade import (
    MemberSum,
    ProbabilitySum,
    architecture_map,
    binarise,
    blend_maps,
    folds_probability,
    gate_probability,
    quantise_probabilities,
    weighted_mean,
)

# The output names of an exported model, in the order its graph returns them (and the PyTorch
# TTA module too): a classifier's, a segmenter's, a segmenter's with a classification head.
CLASSIFIER_OUTPUTS = ("probabilities", "pass_probabilities")
SEGMENTER_OUTPUTS = ("maps",)
HEAD_OUTPUTS = ("maps", "head", "head_passes")


def output_names(stage: str, count: int) -> tuple[str, ...]:
    """The names of a fold model's ``count`` outputs."""
    if stage == CLASSIFY:
        names = CLASSIFIER_OUTPUTS
    else:
        names = HEAD_OUTPUTS if count == len(HEAD_OUTPUTS) else SEGMENTER_OUTPUTS
    if len(names) != count:
        raise ValueError(f"a {stage} model returns {count} outputs, expected {len(names)}")
    return names


@dataclass(frozen=True)
class ModelOutput:
    """One fold model on one batch, averaged over the TTA passes: ``main`` the classifier's
    probabilities (B, K) or the segmenter's maps (B, H, W); ``passes`` the image-level probability
    of every pass (B, P) (the classifier's first class, or the head's); ``head`` the head's (B,)."""

    main: np.ndarray
    passes: np.ndarray | None = None
    head: np.ndarray | None = None

    @classmethod
    def from_named(cls, names: Sequence[str], arrays: Sequence[np.ndarray]) -> ModelOutput:
        named = dict(zip(names, arrays, strict=True))
        if "probabilities" in named:
            return cls(named["probabilities"], named["pass_probabilities"][:, :, 0])
        return cls(named["maps"], named.get("head_passes"), named.get("head"))


class ArchitectureMean:
    """One architecture's fold models on a batch, by the cascade's steps
    (`ptxseg.scoring.cascade`): per fold, its members' quantised maps summed or their
    probabilities (and heads') summed; then the folds' mean, as the submission takes it."""

    def __init__(self, n_folds: int, n_flips: int = 1) -> None:
        self.n_flips = n_flips
        self.maps: dict[int, MemberSum] = {}
        # The same maps unquantised, for outputs that keep full precision (a Parametric Map).
        self.float_maps: dict[int, ProbabilitySum] = {}
        self.probabilities: dict[int, ProbabilitySum] = {}
        self.heads: dict[int, ProbabilitySum] = {}
        self.fold_passes: list[list[np.ndarray]] = [[] for _ in range(n_folds)]

    def add(self, key: ModelKey, output: ModelOutput) -> None:
        main = output.main
        if main.ndim == 3:  # a segmenter's maps
            running = self.maps.setdefault(key.fold, MemberSum(main.shape))
            running.add(quantise_probabilities(main))
            precise = self.float_maps.setdefault(key.fold, ProbabilitySum(main.shape))
            precise.add(main)
            precise.next_member()
        else:  # a classifier's probabilities: its first class
            running = self.probabilities.setdefault(key.fold, ProbabilitySum(len(main)))
            running.add(main[:, 0])
        running.next_member()
        if output.head is not None:
            head = self.heads.setdefault(key.fold, ProbabilitySum(len(output.head)))
            head.add(output.head)
            head.next_member()
        if output.passes is not None:  # (B, scales x flips) -> (B, flips), scales averaged
            passes = output.passes
            by_flip = passes.reshape(len(passes), -1, self.n_flips).mean(axis=1, dtype=np.float32)
            self.fold_passes[key.fold].append(by_flip)

    def map(self) -> np.ndarray:
        """A segmenter's map: the mean of its folds' uint8 maps, float32 (0-255)."""
        return architecture_map([self.maps[fold].mean() for fold in sorted(self.maps)])

    def float_map(self) -> np.ndarray:
        """`map` without the uint8 steps: the folds' mean of their members' float maps (0-1)."""
        return architecture_map([self.float_maps[fold].mean() for fold in sorted(self.float_maps)])

    def probability(self) -> np.ndarray:
        """A classifier's probability (B,): its folds' mean of their members' mean."""
        return _folds_mean(self.probabilities)

    def head(self) -> np.ndarray | None:
        """The head's probability (B,) as `probability`; None without a head."""
        return _folds_mean(self.heads) if self.heads else None

    def by_fold_and_pass(self) -> np.ndarray:
        """(B, folds, flips): each fold's members averaged, per TTA flip. A model's scale passes
        of one flip are averaged first: models trained at one size take only the flips
        (`ptxseg.runtime.tta.passes_for`), so the gate's sources line up, and as every flip has
        as many scales, the mean over (fold, flip) is still the mean over every pass."""
        return np.stack([np.mean(f, axis=0) for f in self.fold_passes], axis=1)


def _folds_mean(by_fold: dict[int, ProbabilitySum]) -> np.ndarray:
    return folds_probability(np.stack([by_fold[f].mean() for f in sorted(by_fold)], axis=1))


@dataclass
class Gate:
    probability: np.ndarray  # (B,) float32
    spread: np.ndarray  # (B,) float64


def gate(spec: EnsembleSpec, means: dict[tuple[str, str], ArchitectureMean]) -> Gate | None:
    """The gate's blend of its sources, and its standard deviation over (fold, pass)."""
    if not spec.has_gate:
        return None
    sources, by_pass, weights = [], [], []
    for source, weight in spec.gate_weights.items():
        if weight <= 0:
            continue
        arch = head_arch(source)
        if arch is None:
            mean = means[(CLASSIFY, source)]
            sources.append(mean.probability())
        else:
            mean = means[(SEGMENT, arch)]
            head = mean.head()
            if head is None:
                raise ValueError(
                    f"{spec.source}: the gate weighs {source!r}, but that segmenter's models "
                    "have no classification head"
                )
            sources.append(head)
        by_pass.append(mean.by_fold_and_pass())
        weights.append(weight)
    spread = weighted_mean(by_pass, weights).astype(np.float64).std(axis=(1, 2))
    return Gate(gate_probability(sources, weights), spread)


def _at(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A map at the image's ``shape`` (bilinear where the model's size differs)."""
    if array.shape == shape:
        return array
    return cv2.resize(array, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def predictions(
    spec: EnsembleSpec,
    batch: list[PreparedImage],
    means: dict[tuple[str, str], ArchitectureMean],
    calibrate: Callable[[np.ndarray], np.ndarray] | None,
) -> list[Prediction]:
    """The batch's predictions from its architectures' means."""
    gated = gate(spec, means)
    archs = spec.segmenters
    maps = [means[(SEGMENT, arch)].map() for arch in archs]
    weights = [spec.segmenter_weights[a] for a in archs]
    blended = blend_maps(maps, weights)
    precise = weighted_mean([means[(SEGMENT, arch)].float_map() for arch in archs], weights)
    calibrated = None
    if gated is not None:
        calibrated = gated.probability if calibrate is None else calibrate(gated.probability)
    out = []
    for i, prepared in enumerate(batch):
        shape = prepared.image.shape
        probability = None if gated is None else float(gated.probability[i])
        mask = binarise(blended[i], spec.cascade, probability, out_shape=shape)
        resized, precise_resized = _at(blended[i], shape), _at(precise[i], shape)
        out.append(
            Prediction(
                image_id=prepared.image_id,
                mask=mask,
                probability_map=resized.astype(np.float32) / np.float32(255),
                float_probability_map=np.clip(precise_resized, 0.0, 1.0).astype(np.float32),
                probability=probability,
                calibrated_probability=None if calibrated is None else float(calibrated[i]),
                uncertainty=None if gated is None else float(gated.spread[i]),
                source=prepared.source,
                image=prepared.image,
            )
        )
    return out
