"""`ptxseg export`: the final ensemble's fold models as ONNX graphs and one manifest.json.

Only the models prediction runs are written: the classifiers with gate weight above 0 and the
segmenters whose maps or head have weight, every fold and kept member. Each graph is the fold model
with its TTA (`TTAModule`): a dynamic batch axis, the stage's fixed image side. An architecture's
members and folds differ only in their weights: its first model is traced (torch.onnx's TorchScript
exporter: seconds a graph, where its dynamo exporter took tens of them for these CNNs), the others
are that graph with their own weights written in where every weight maps onto it. Every graph is
checked against PyTorch with onnxruntime on a batch of another size before the manifest, written
last, names it; an old manifest is removed first, so a failed export leaves no folder that looks
complete.

Resumable: each graph, once written and checked, gets a line in ``PROGRESS`` (its manifest entry,
the sha256 of the checkpoint it came from, the side, passes and opset). A rerun into the same
folder keeps every graph whose line matches and whose file still has its sha256, without loading
its model, and exports the others: a killed export loses only the graph it was writing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import ptxseg
from ptxseg.contracts.ensemble_spec import EnsembleSpec, ModelKey
from ptxseg.deploy.combine import output_names
from ptxseg.deploy.manifest import (
    FORMAT,
    FORMAT_VERSION,
    INPUT_NAME,
    MANIFEST,
    ExportError,
    sha256,
)
from ptxseg.deploy.torch_backend import TorchBackend, model_files
from ptxseg.deploy.tta_module import TTAModule
from ptxseg.io import atomic
from ptxseg.layout import fold_name

log = logging.getLogger(__name__)
# The exporter's passes log every step at INFO; what matters is in this module's own log.
for _name in ("onnx_ir", "onnxscript", "torch.onnx"):
    logging.getLogger(_name).setLevel(logging.WARNING)

OPSET = 18
PARITY = 1e-3  # the largest |onnxruntime - PyTorch| difference an exported graph may show
PROGRESS = ".export-progress.jsonl"  # one line per graph written and checked (see the docstring)


def onnx_name(key: ModelKey) -> str:
    return f"{key.stage}_{key.arch}_{fold_name(key.fold)}_{key.member}.onnx"


def _inputs(batch: int, side: int, seed: int) -> torch.Tensor:
    """Image-like inputs for the trace and the parity check: a smooth random field (normal values
    on a grid of a sixteenth of the side, bilinearly enlarged) plus white noise of a tenth its
    size, in the normalised range the models see. Not white noise alone: nothing like a
    radiograph, it drives a network whose BatchNorm statistics came from smooth images so far
    out of range that float rounding moves its outputs by up to 1.0 (the four efficientnet-b4 SWA
    members of a full-config structure run: 0.81-1.0 on white noise, <= 1.4e-5 on these)."""
    generator = torch.Generator().manual_seed(seed)
    grid = max(side // 16, 2)
    coarse = torch.randn(batch, 1, grid, grid, generator=generator)
    smooth = F.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    return smooth + 0.1 * torch.randn(batch, 1, side, side, generator=generator)


def _graph(module: TTAModule) -> TTAModule:
    """The module as exported: each scale's flips stacked in one batch, so the graph holds the
    model once per scale rather than once per pass (smaller, exported and loaded faster)."""
    return TTAModule(module.model, module.passes, stack_flips=True).eval()


def _trace(
    module: TTAModule, side: int, names: list[str], path: Path, opset: int, optimize: bool = False
) -> None:
    """torch.onnx's TorchScript exporter on ``module`` into ``path``, the batch axis dynamic.
    Without constant folding, and with BatchNorm kept as it is (``TrainingMode.PRESERVE`` on a
    module in eval mode): every parameter and buffer stays an initializer under its state_dict
    name, so another member's weights can be swapped in (`_swap_weights`); onnxruntime folds them
    itself when it loads the graph. ``optimize``: the exporter's folding (BatchNorm into the
    convolutions), for a member whose unfolded graph does not reproduce PyTorch."""
    quiet = io.StringIO()  # the exporter prints its progress; the log says what matters
    folding = (
        {"do_constant_folding": True}
        if optimize
        else {
            "do_constant_folding": False,
            "training": torch.onnx.TrainingMode.PRESERVE,
        }
    )
    batch = {0: "batch"}
    with contextlib.redirect_stdout(quiet), torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter warns that dynamo is the future and about traced branches on
        # shapes: the graph is checked against PyTorch on another batch size below.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _graph(module),
            (_inputs(2, side, seed=0),),
            str(path),
            input_names=[INPUT_NAME],
            output_names=names,
            opset_version=opset,
            dynamic_axes={name: batch for name in (INPUT_NAME, *names)},
            dynamo=False,
            **folding,
        )


def _swap_weights(template: Path, module: TTAModule, path: Path) -> bool:
    """``template``'s graph (the same architecture, side and passes) with ``module``'s weights
    written into ``path``; False where a weight's shape differs from its initializer's (then the
    member is traced itself). Seconds, where tracing takes tens of them."""
    import onnx
    from onnx import numpy_helper

    weights = {
        name: tensor.detach().cpu().numpy()
        for name, tensor in _graph(module).state_dict().items()
        if tensor.is_floating_point()
    }
    graph = onnx.load(str(template))
    initializers = {i.name: i for i in graph.graph.initializer}
    # Weights not in the template's graph are left out: those the network never uses (the
    # efficientnet encoder's conv head and last BatchNorm, which a U-Net does not call), and
    # those the exporter merged into an initializer of equal value (in a ResNet block the
    # shortcut's BatchNorm bias and the second BatchNorm's start at zero and get the same
    # gradient, as they add into one sum, so they are equal in every member). Where a member's
    # merged weights differ, its outputs do: the parity check on every swapped graph sends it to
    # be traced itself.
    present = {n: v for n, v in weights.items() if n in initializers}
    for name, value in present.items():
        old = initializers[name]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(old.data_type)
        new = numpy_helper.from_array(value.astype(dtype), name)
        if tuple(new.dims) != tuple(old.dims):
            return False
        old.CopyFrom(new)
    onnx.save(graph, str(path))
    return True


def _export_one(
    module: TTAModule,
    key: ModelKey,
    side: int,
    path: Path,
    opset: int,
    template: Path | None = None,
) -> tuple[list[str], bool]:
    """Write ``module``'s graph to ``path`` (atomically) once onnxruntime gives PyTorch's outputs
    on a batch of another size; returns the outputs' names and whether the graph may serve as a
    template. ``template``: an exported graph of the same architecture, side and passes whose
    weights are swapped for this member's (traced afresh where that fails)."""
    import onnxruntime as ort

    example = _inputs(2, side, seed=0)
    with torch.no_grad():
        names = list(output_names(key.stage, len(module(example))))

    def parity(graph: Path, batch: int) -> float:
        check = _inputs(batch, side, seed=1)
        with torch.no_grad():
            expected = [t.float().numpy() for t in module(check)]
        session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        got = session.run(None, {INPUT_NAME: check.numpy()})
        return max(float(np.abs(a - b).max()) for a, b in zip(expected, got, strict=True))

    with atomic.replace_when_complete(path) as tmp:
        swapped = template is not None and _swap_weights(template, module, Path(tmp))
        # A batch of another size than the trace's (2): the dynamic axis; a swapped graph's axis
        # is its template's, already checked, so one image checks its weights.
        worst = parity(Path(tmp), 1) if swapped else None
        if swapped and not worst <= PARITY:
            # The swapped weights do not reproduce PyTorch (a weight the template's graph
            # folded, inlined, or merged with one this member holds another value in): this
            # member is traced itself.
            log.warning(
                "%s: %s's graph with its weights differs from PyTorch by %.2e; tracing it",
                key,
                template.name,
                worst,
            )
            swapped = False
        if not swapped:
            _trace(module, side, names, Path(tmp), opset)
            worst = parity(Path(tmp), 3)
        template_ok = worst <= PARITY
        if not template_ok:
            # A second chance with the exporter's optimiser (constant folding, BatchNorm folded
            # into the convolutions), kept out of the templates. Added when the check ran on
            # white noise (see `_inputs`); on image-like inputs no member of the full config's
            # structure run has needed it.
            log.warning("%s: graph differs from PyTorch by %.2e; traced optimised", key, worst)
            _trace(module, side, names, Path(tmp), opset, optimize=True)
            worst = parity(Path(tmp), 3)
        if not worst <= PARITY:
            raise ExportError(
                f"{path}: onnxruntime differs from PyTorch by {worst:.2e} (> {PARITY}) for {key}"
            )
    how = f"weights into {template.name}" if swapped else "traced"
    log.info("exported %s -> %s (%s; max |onnx - torch| %.1e)", key, path.name, how, worst)
    return names, swapped or template_ok


def export_onnx(
    results: str | os.PathLike, out_dir: str | os.PathLike, opset: int = OPSET
) -> dict[str, Any]:
    """Export the ensemble of ``results`` into ``out_dir``, keeping the graphs an earlier run
    finished there (see the module's docstring); returns the manifest written."""
    spec = EnsembleSpec.from_results(results)
    raw = Path(spec.source).read_bytes()
    # Models loaded as each graph needs them, and only those not kept from an earlier run.
    backend = TorchBackend.load(results, spec, device="cpu")
    config_hash = f"sha256:{hashlib.sha256(raw).hexdigest()}"
    sources = model_files(results, spec)
    return write_export(spec, backend.modules, out_dir, config_hash, opset, sources)


def _progress(out: Path) -> dict[ModelKey, dict[str, Any]]:
    """The graphs an earlier run wrote and checked in ``out``, by key (the last line of a key
    wins; a line cut short by a kill is ignored)."""
    path = out / PROGRESS
    done = {}
    if not path.is_file():
        return done
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
            key = ModelKey(entry["stage"], entry["arch"], int(entry["fold"]), entry["member"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        done[key] = entry
    return done


def _kept(entry: dict[str, Any] | None, out: Path, recipe: dict[str, Any]) -> bool:
    """Whether an earlier run's graph stands: made the same way from the same checkpoint, and its
    file as that run wrote it."""
    if entry is None or any(entry.get(k) != v for k, v in recipe.items()):
        return False
    path = out / str(entry.get("file"))
    return path.is_file() and sha256(path) == entry.get("sha256")


def write_export(
    spec: EnsembleSpec,
    modules: Mapping[ModelKey, TTAModule],
    out_dir: str | os.PathLike,
    config_hash: str,
    opset: int = OPSET,
    sources: Mapping[ModelKey, str | os.PathLike] | None = None,
) -> dict[str, Any]:
    """Write ``modules`` (every model of ``spec``; a `Resident` loads each when its graph is
    made) as ONNX graphs and the manifest, ``spec``'s prediction keys in it; returns the manifest.
    ``sources``: each model's checkpoint, by whose sha256 a rerun keeps the graphs an earlier run
    finished; without them every graph is made afresh."""
    if opset < 17:
        raise ValueError(f"opset {opset}: the export needs opset 17 or later")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    started, models, kept = time.perf_counter(), [], 0
    done = _progress(out) if sources is not None else {}
    templates: dict[tuple, Path] = {}  # one traced graph per architecture, side and passes
    with open(out / PROGRESS, "a") as progress:
        for key in spec.model_keys():
            side = spec.sizes[key.stage]
            path = out / onnx_name(key)
            recipe = {
                "source_sha256": sha256(sources[key]) if sources is not None else None,
                "side": side,
                "opset": opset,
                "ensemble_passes": [list(p) for p in spec.passes],
            }
            entry = done.get(key)
            if recipe["source_sha256"] is not None and _kept(entry, out, recipe):
                kept += 1
                passes = tuple(map(tuple, entry["tta_passes"]))
                template = bool(entry.get("template"))
            else:
                module = modules[key]
                passes = tuple(map(tuple, module.passes))
                shape = (key.stage, key.arch, side, passes)
                names, template = _export_one(module, key, side, path, opset, templates.get(shape))
                del module  # one not kept loaded is freed before the next loads
                entry = {
                    "stage": key.stage,
                    "arch": key.arch,
                    "fold": key.fold,
                    "member": key.member,
                    "file": path.name,
                    "sha256": sha256(path),
                    "input": {"name": INPUT_NAME, "shape": ["batch", 1, side, side]},
                    "outputs": names,
                    "tta_passes": [list(p) for p in passes],  # those it was trained for
                    "template": template,
                    **recipe,
                }
                # Written and checked: recorded at once, so a kill after this keeps it.
                progress.write(json.dumps(entry) + "\n")
                progress.flush()
                os.fsync(progress.fileno())
            shape = (key.stage, key.arch, side, passes)
            if template and shape not in templates:  # unoptimised and checked: weights swap in
                templates[shape] = path
            models.append({k: v for k, v in entry.items() if k not in (*recipe, "template")})
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ptxseg_version": ptxseg.__version__,
        "config_hash": config_hash,
        "config_hash_of": "ensemble.json: the sha256 of its bytes",
        "opset": opset,
        "tta_passes": [list(p) for p in spec.passes],
        **spec.prediction_dict(),
        "models": models,
    }
    atomic.write_json(out / MANIFEST, manifest)
    log.info(
        "%d models exported to %s in %.0f s (%d kept from an earlier run)",
        len(models),
        out,
        time.perf_counter() - started,
        kept,
    )
    return manifest
