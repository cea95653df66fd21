"""`Predictor`: a trained ensemble that segments new images, with PyTorch or with onnxruntime.

    predictor = Predictor.from_results("results")       # the pipeline's models (PyTorch)
    predictor = Predictor.from_export("model")          # an `ptxseg export` folder (no PyTorch)
    prediction = predictor.predict("image.dcm")
    for prediction in predictor.predict_many(paths, batch_size=8): ...

Every fold model is loaded once; images go through in batches, read one batch ahead, and each
model runs once per batch; predictions are yielded as their batch completes, so memory stays flat
in the number of images. Importing this module imports no torch: ``from_results`` does.
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


class Backend(Protocol):
    def outputs(self, keys: list[ModelKey], images: np.ndarray) -> Iterator[ModelOutput]:
        """Each model's output on the batch ``images`` (B, 1, S, S), in the order of ``keys``."""
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
        time and yielded in input order. With ``on_error``, an image that cannot be read is
        handed to it with the error and skipped; without, the error is raised."""
        for batch in prepared_batches(images, self.spec, batch_size, on_error):
            yield from self._predict_batch(batch)

    def _predict_batch(self, batch: list[PreparedImage]) -> list[Prediction]:
        means: dict[tuple[str, str], ArchitectureMean] = {}
        for stage in (CLASSIFY, SEGMENT):
            keys = self.spec.model_keys(stage)
            if not keys:
                continue
            side = self.spec.sizes[stage]
            inputs = np.stack([prepared.inputs[side] for prepared in batch])
            for key, output in zip(keys, self.backend.outputs(keys, inputs), strict=True):
                mean = means.setdefault(
                    (stage, key.arch), ArchitectureMean(self.spec.n_folds, self.spec.n_flips)
                )
                mean.add(key, output)
        return predictions(self.spec, batch, means, self._calibrate)
