"""`Predictor`: a trained ensemble that segments new images, with PyTorch or with onnxruntime.

    predictor = Predictor.from_results("results")       # the pipeline's models (PyTorch)
    predictor = Predictor.from_export("model")          # an `ptxseg export` folder (no PyTorch)
    prediction = predictor.predict("image.dcm")
    for prediction in predictor.predict_many(paths, batch_size=8): ...

Images go through in batches, read one batch ahead, and batches in rounds: each fold model is
loaded (or taken from those kept loaded, `ptxseg.deploy.resident`) once per round and runs on the
round's batches, one after the other. The first round is the first batch alone, so the first
predictions come as soon as every model has run once; later rounds hold up to ``ROUND_IMAGES``
images, so a model's loading is shared by many. Predictions are yielded as their round completes,
so memory stays flat in the number of images. Importing this module imports no torch:
``from_results`` does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import numpy as np

from ptxseg.contracts.ensemble_spec import CLASSIFY, SEGMENT, EnsembleSpec, ModelKey
from ptxseg.deploy.combine import ArchitectureMean, ModelOutput, predictions
from ptxseg.deploy.images import ImageInput, PreparedImage, prepared_batches
from ptxseg.deploy.prediction import Prediction

# A round's images at most (see the module's docstring), and its pixels at the segmenters' side at
# most: each image holds a running sum per segmenter fold until its round ends (at 1024 px, 16
# images; at the demo's 64 px, 64).
ROUND_IMAGES = 64
ROUND_PIXELS = 16 << 20


class Backend(Protocol):
    def outputs(
        self, keys: list[ModelKey], batches: list[np.ndarray]
    ) -> Iterator[list[ModelOutput]]:
        """Each model's outputs on every batch of ``batches`` ((B, 1, S, S) each), in the order
        of ``keys``: each model loaded once for all of them."""
        ...


class Predictor:
    """The ensemble's cascade on new images; see the module's docstring and `Prediction`."""

    def __init__(self, spec: EnsembleSpec, backend: Backend) -> None:
        self.spec = spec
        self.backend = backend
        self._calibrate = spec.calibration.apply if spec.calibration is not None else None

    @classmethod
    def from_results(
        cls, path: str | os.PathLike = "results", device: str = "auto", threads: int | None = None
    ) -> Predictor:
        """The ensemble of a results folder (ensemble.json and the fold models), with PyTorch on
        ``device`` (auto: the GPU where one is visible) and ``threads`` CPU threads (None: PyTorch's
        default, every core; this sets them for the whole process)."""
        from ptxseg.deploy.torch_backend import TorchBackend

        spec = EnsembleSpec.from_results(path)
        return cls(spec, TorchBackend.load(path, spec, device, threads))

    @classmethod
    def from_export(
        cls,
        path: str | os.PathLike,
        providers: list[str] | None = None,
        threads: int | None = None,
    ) -> Predictor:
        """The ensemble of an `ptxseg export` folder, with onnxruntime (CPU unless ``providers``
        says otherwise) and ``threads`` threads per model (None: onnxruntime's default); PyTorch
        is not imported."""
        from ptxseg.deploy.onnx_backend import OnnxBackend

        backend = OnnxBackend.load(path, providers, threads)
        return cls(backend.spec, backend)

    def predict(self, image: ImageInput) -> Prediction:
        """One image: a DICOM or image file's path, or a 2-D array (named ``image_0``)."""
        return next(self.predict_many([image], batch_size=1))

    def predict_many(
        self,
        images: Iterable[ImageInput],
        batch_size: int = 8,
        on_error: Callable[[ImageInput, Exception], None] | None = None,
    ) -> Iterator[Prediction]:
        """Paths or arrays (the ``k``-th array named ``image_<k>``), predicted ``batch_size`` at a
        time and yielded in input order, a round of batches at a time (see the module's
        docstring). With ``on_error``, an image that cannot be read is handed to it with the
        error and skipped; without, the error is raised."""
        batches = prepared_batches(images, self.spec, batch_size, on_error)
        for round_ in self._rounds(batches, batch_size):
            yield from self._predict_round(round_)

    def round_images(self, batch_size: int) -> int:
        """The images of a round after the first (at least one batch)."""
        side = self.spec.sizes.get(SEGMENT) or self.spec.sizes.get(CLASSIFY) or 1
        return max(batch_size, min(ROUND_IMAGES, ROUND_PIXELS // side**2))

    def _rounds(
        self, batches: Iterable[list[PreparedImage]], batch_size: int
    ) -> Iterator[list[list[PreparedImage]]]:
        limit, round_, first = self.round_images(batch_size), [], True
        for batch in batches:
            round_.append(batch)
            if first or sum(map(len, round_)) + batch_size > limit:
                yield round_
                round_, first = [], False
        if round_:
            yield round_

    def _predict_round(self, batches: list[list[PreparedImage]]) -> Iterator[Prediction]:
        means: list[dict[tuple[str, str], ArchitectureMean]] = [{} for _ in batches]
        for stage in (CLASSIFY, SEGMENT):
            keys = self.spec.model_keys(stage)
            if not keys:
                continue
            side = self.spec.sizes[stage]
            inputs = [np.stack([prepared.inputs[side] for prepared in batch]) for batch in batches]
            for key, outputs in zip(keys, self.backend.outputs(keys, inputs), strict=True):
                for batch_means, output in zip(means, outputs, strict=True):
                    mean = batch_means.setdefault(
                        (stage, key.arch), ArchitectureMean(self.spec.n_folds, self.spec.n_flips)
                    )
                    mean.add(key, output)
        for batch, batch_means in zip(batches, means, strict=True):
            yield from predictions(self.spec, batch, batch_means, self._calibrate)
