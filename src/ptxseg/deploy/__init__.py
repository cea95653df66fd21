"""Prediction outside the DAG: the `Predictor` API (PyTorch or onnxruntime), the ONNX export and the
files `ptxseg predict` writes.

Above ``ensemble``, below ``cli``. Importing it imports no torch: only `Predictor.from_results`
and the export do, so `Predictor.from_export` predicts without PyTorch.
"""

from ptxseg.deploy.prediction import Prediction
from ptxseg.deploy.predictor import Predictor

__all__ = ["Prediction", "Predictor"]
