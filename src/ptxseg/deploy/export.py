"""`ptxseg export`: the final ensemble's fold models as ONNX graphs and one manifest.json.

Only the models prediction runs are written: the classifiers with gate weight above 0 and the
segmenters whose maps or head have weight, every fold and kept member. Each graph is the fold model
with its TTA (`TTAModule`): a dynamic batch axis, the stage's fixed image side. Every graph is
checked against PyTorch with onnxruntime on a batch of another size before the manifest, written
last, names it; an old manifest is removed first, so a failed export leaves no folder that looks
complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import ptxseg
from ptxseg.deploy.combine import output_names
from ptxseg.deploy.manifest import (
    FORMAT,
    FORMAT_VERSION,
    INPUT_NAME,
    MANIFEST,
    ExportError,
    prediction_keys,
    sha256,
)
from ptxseg.deploy.spec import EnsembleSpec, ModelKey
from ptxseg.deploy.torch_backend import TorchBackend
from ptxseg.deploy.tta_module import TTAModule
from ptxseg.io import atomic
from ptxseg.layout import fold_name

log = logging.getLogger(__name__)
# The exporter's passes log every step at INFO; what matters is in this module's own log.
for _name in ("onnx_ir", "onnxscript", "torch.onnx"):
    logging.getLogger(_name).setLevel(logging.WARNING)

OPSET = 18
PARITY = 1e-3  # the largest |onnxruntime - PyTorch| difference an exported graph may show


def onnx_name(key: ModelKey) -> str:
    return f"{key.stage}_{key.arch}_{fold_name(key.fold)}_{key.member}.onnx"


def _inputs(batch: int, side: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, side, side, generator=generator)


def _export_one(module: TTAModule, key: ModelKey, side: int, path: Path, opset: int) -> list[str]:
    """Write ``module``'s graph to ``path`` (atomically) once onnxruntime gives its outputs;
    returns their names. The graph stacks each scale's flips in one batch, so it holds the model
    once per scale rather than once per pass (a smaller graph, exported and loaded faster)."""
    import onnxruntime as ort

    graph = TTAModule(module.model, module.passes, stack_flips=True).eval()
    example = _inputs(2, side, seed=0)
    with torch.no_grad():
        names = list(output_names(key.stage, len(module(example))))
    with atomic.replace_when_complete(path) as tmp:
        quiet = io.StringIO()  # the exporter prints its progress; the log says what matters
        with contextlib.redirect_stdout(quiet), torch.no_grad():
            torch.onnx.export(
                graph,
                (example,),
                str(tmp),
                input_names=[INPUT_NAME],
                output_names=names,
                opset_version=opset,
                dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}},
                external_data=False,
                dynamo=True,
            )
        check = _inputs(3, side, seed=1)
        with torch.no_grad():
            expected = [t.float().numpy() for t in module(check)]
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = session.run(None, {INPUT_NAME: check.numpy()})
        worst = max(float(np.abs(a - b).max()) for a, b in zip(expected, got, strict=True))
        if not worst <= PARITY:
            raise ExportError(
                f"{path}: onnxruntime differs from PyTorch by {worst:.2e} (> {PARITY}) for {key}"
            )
    log.info("exported %s -> %s (max |onnx - torch| %.1e)", key, path.name, worst)
    return names


def export_onnx(
    results: str | os.PathLike, out_dir: str | os.PathLike, opset: int = OPSET
) -> dict[str, Any]:
    """Export the ensemble of ``results`` into ``out_dir``; returns the manifest written."""
    spec = EnsembleSpec.from_results(results)
    raw = Path(spec.source).read_bytes()
    backend = TorchBackend.load(results, spec, device="cpu")
    config_hash = f"sha256:{hashlib.sha256(raw).hexdigest()}"
    return write_export(json.loads(raw), spec, backend.modules, out_dir, config_hash, opset)


def write_export(
    ensemble: dict[str, Any],
    spec: EnsembleSpec,
    modules: dict[ModelKey, TTAModule],
    out_dir: str | os.PathLike,
    config_hash: str,
    opset: int = OPSET,
) -> dict[str, Any]:
    """Write ``modules`` (every model of ``spec``) as ONNX graphs and the manifest, ``ensemble``'s
    prediction keys in it; returns the manifest."""
    if opset < 17:
        raise ValueError(f"opset {opset}: the export needs opset 17 or later")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    started, models = time.perf_counter(), []
    for key in spec.model_keys():
        side = spec.sizes[key.stage]
        path = out / onnx_name(key)
        names = _export_one(modules[key], key, side, path, opset)
        models.append(
            {
                "stage": key.stage,
                "arch": key.arch,
                "fold": key.fold,
                "member": key.member,
                "file": path.name,
                "sha256": sha256(path),
                "input": {"name": INPUT_NAME, "shape": ["batch", 1, side, side]},
                "outputs": names,
                "tta_passes": [list(p) for p in modules[key].passes],  # those it was trained for
            }
        )
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ptxseg_version": ptxseg.__version__,
        "config_hash": config_hash,
        "config_hash_of": "ensemble.json: the sha256 of its bytes",
        "opset": opset,
        "tta_passes": [list(p) for p in spec.passes],
        **prediction_keys(ensemble),
        "models": models,
    }
    atomic.write_json(out / MANIFEST, manifest)
    log.info("%d models exported to %s in %.0f s", len(models), out, time.perf_counter() - started)
    return manifest
