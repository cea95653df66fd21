"""Start-up, memory and throughput of prediction, and the export's time: the loading path before
the change of 2026-12-07 (its copy below, the baseline) against the package's, in the same run.

Each measurement runs in a child process of its own (its peak memory, VmHWM, is its own: file pages
a memory-mapped model touches count in it too):

- PyTorch (``Predictor.from_results``, the results folder's fold models) and onnxruntime
  (``Predictor.from_export``, one export folder for both), old against new: the time to the first
  image (a child's start to its prediction, predicting one image: what `ptxseg predict one.dcm`
  waits), then on all the images the images per second after the first batch, the peak memory of
  each, and the predictions themselves (old and new must agree: PyTorch's bit for bit);
- ``ptxseg export`` of the ensemble: the old exporter (torch.onnx's dynamo exporter, every model
  loaded first; about 30 minutes for the demo on 2 busy cores) against the new one, then the new
  one rerun into its finished folder (every graph kept).

    python benchmarks/bench_predict.py [RESULTS] [--images 55] [--batch-size 8] [--threads N]
        [--skip-old-export] [--work DIR] [--json F]

RESULTS defaults to ``results`` (a finished ``make demo``). The images are its SIIM test DICOMs,
cycled to ``--images`` (as ``bench_onnx.py``). Prints one RATIO line per comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_onnx import peak_gib, test_images

# ------------------------------------------------------------------------------------------------
# THE OLD PATH (the baseline): a faithful copy of how ptxseg loaded models and exported before the
# change of 2026-12-07 (commit f7c4dd5). Used by this benchmark only.
# ------------------------------------------------------------------------------------------------


def old_load_member(path, device):
    """infer.test_set.load_member as it was: the checkpoint read for its meta, then read again by
    build_model, which builds the model with a random initialisation and copies the weights in."""
    from ptxseg.models import build_model
    from ptxseg.runtime import checkpoint
    from ptxseg.runtime.predict import mark_trained

    meta = checkpoint.load(path).get("meta", {})
    if "arch" not in meta:
        raise ValueError(f"{path}: no architecture recorded in the model file's meta")
    model = build_model(meta["arch"], 1, weights=str(path), **meta.get("options", {}))
    return mark_trained(model, meta).to(device)


def old_torch_backend(results, spec, device="auto", threads=None):
    """TorchBackend.load as it was: every fold model loaded before the first image."""
    import torch

    from ptxseg.deploy.torch_backend import TorchBackend, model_files
    from ptxseg.deploy.tta_module import TTAModule
    from ptxseg.runtime.device import pick_device

    if threads is not None:
        torch.set_num_threads(threads)
    torch_device = pick_device(device)
    modules = {
        key: TTAModule(old_load_member(path, torch_device), spec.passes).eval()
        for key, path in model_files(results, spec).items()
    }
    return TorchBackend(modules, torch_device)


def old_onnx_backend(folder, providers=None, threads=None):
    """OnnxBackend.load as it was: every file hashed, then every session made, before the first
    image."""
    import onnxruntime as ort

    from ptxseg.contracts.ensemble_spec import EnsembleSpec, ModelKey
    from ptxseg.deploy.manifest import MANIFEST, ExportError, read_manifest, sha256
    from ptxseg.deploy.onnx_backend import OnnxBackend

    folder = Path(folder)
    manifest = read_manifest(folder)
    where = str(folder / MANIFEST)
    spec = EnsembleSpec.from_dict(manifest, where)
    entries = {
        ModelKey(e["stage"], e["arch"], int(e["fold"]), e["member"]): e for e in manifest["models"]
    }
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False
    if threads is not None:
        options.intra_op_num_threads = threads
    sessions = {}
    for key in spec.model_keys():
        path = folder / entries[key]["file"]
        if sha256(path) != entries[key]["sha256"]:
            raise ExportError(f"{path}: sha256 differs from {MANIFEST}'s")
        sessions[key] = ort.InferenceSession(
            str(path), options, providers=providers or ["CPUExecutionProvider"]
        )
    return spec, OnnxBackend(spec, sessions)


def old_trace(module, side, names, path, opset, optimize=False):
    """export._trace as it was: torch.onnx's dynamo exporter."""
    import torch

    from ptxseg.deploy.export import _graph, _inputs
    from ptxseg.deploy.manifest import INPUT_NAME

    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), torch.no_grad():
        torch.onnx.export(
            _graph(module),
            (_inputs(2, side, seed=0),),
            str(path),
            input_names=[INPUT_NAME],
            output_names=names,
            opset_version=opset,
            dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}},
            external_data=False,
            dynamo=True,
            optimize=optimize,
        )


def old_export(results, out_dir, opset=18):
    """export.export_onnx and write_export as they were: every model loaded first, each graph
    traced by the dynamo exporter or its weights swapped into its architecture's first, checked,
    the manifest written at the end; nothing kept from an earlier run. (_export_one and
    _swap_weights are unchanged; _export_one calls the module's _trace, set to the old one.)"""
    import ptxseg
    from ptxseg.contracts.ensemble_spec import EnsembleSpec
    from ptxseg.deploy import export
    from ptxseg.deploy.manifest import FORMAT, FORMAT_VERSION, INPUT_NAME, MANIFEST, sha256
    from ptxseg.io import atomic

    export._trace = old_trace
    spec = EnsembleSpec.from_results(results)
    raw = Path(spec.source).read_bytes()
    modules = old_torch_backend(results, spec, device="cpu").modules
    config_hash = f"sha256:{hashlib.sha256(raw).hexdigest()}"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    models, templates = [], {}
    for key in spec.model_keys():
        side = spec.sizes[key.stage]
        path = out / export.onnx_name(key)
        shape = (key.stage, key.arch, side, tuple(map(tuple, modules[key].passes)))
        names, template = export._export_one(
            modules[key], key, side, path, opset, templates.get(shape)
        )
        if template and shape not in templates:
            templates[shape] = path
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
                "tta_passes": [list(p) for p in modules[key].passes],
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
        **spec.prediction_dict(),
        "models": models,
    }
    atomic.write_json(out / MANIFEST, manifest)
    return manifest


# ------------------------------------------------------------------------------------------------
# The measurements (the same for both paths)
# ------------------------------------------------------------------------------------------------


def predictor(mode: str, source: str, threads: int | None):
    from ptxseg.contracts.ensemble_spec import EnsembleSpec
    from ptxseg.deploy import Predictor

    if mode == "torch-old":
        spec = EnsembleSpec.from_results(source)
        return Predictor(spec, old_torch_backend(source, spec, "cpu", threads))
    if mode == "torch-new":
        return Predictor.from_results(source, "cpu", threads)
    if mode == "onnx-old":
        return Predictor(*old_onnx_backend(source, threads=threads))
    return Predictor.from_export(source, threads=threads)


def predict_child(mode: str, source: str, images: list[str], batch: int, threads) -> dict:
    started = time.perf_counter()
    loaded_predictor = predictor(mode, source, threads)
    loaded = time.perf_counter()
    first, digest = None, hashlib.sha256()
    for k, prediction in enumerate(loaded_predictor.predict_many(images, batch_size=batch)):
        if k == 0:
            first = time.perf_counter()
        digest.update(repr((prediction.probability, prediction.uncertainty)).encode())
        digest.update(prediction.probability_map.tobytes() + prediction.mask.tobytes())
    end = time.perf_counter()
    after_first = len(images) - min(batch, len(images))  # the first batch yields together
    return {
        "mode": mode,
        "load_s": loaded - started,
        "first_s": first - started,
        "images_per_s": after_first / (end - first) if after_first else float("nan"),
        "peak_gib": peak_gib(),
        "digest": digest.hexdigest(),
        "torch_imported": "torch" in sys.modules,
    }


def export_child(mode: str, results: str, out: str) -> dict:
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    if mode == "export-old":
        manifest = old_export(results, out)
    else:
        from ptxseg.deploy.export import export_onnx

        manifest = export_onnx(results, out)
    size = sum(f.stat().st_size for f in Path(out).glob("*.onnx"))
    return {
        "mode": mode,
        "export_s": time.perf_counter() - started,
        "graphs": len(manifest["models"]),
        "gb": size / 1e9,
        "peak_gib": peak_gib(),
    }


def run_child(*args: str) -> dict:
    command = [sys.executable, __file__, "--child", *args]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode:
        raise SystemExit(f"child {args[0]} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", nargs="?", type=Path, default=Path("results"))
    parser.add_argument("--images", type=int, default=55)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, help="CPU threads (default: every core)")
    parser.add_argument("--skip-old-export", action="store_true", help="(it takes ~30 min)")
    parser.add_argument(
        "--skip-export", action="store_true", help="reuse --work's export_new, not timed again"
    )
    parser.add_argument("--work", type=Path, help="folder for the exports (default: a temp one)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--listing", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child.startswith("export"):
            figures = export_child(args.child, str(args.results), args.out)
        else:
            images = json.loads(args.listing.read_text())
            figures = predict_child(
                args.child, str(args.results), images, args.batch_size, args.threads
            )
        print(json.dumps(figures))
        return 0
    if not (args.results / "ensemble" / "ensemble.json").is_file():
        raise SystemExit(f"{args.results}: no ensemble/ensemble.json (run `make demo` first)")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_predict_"))
    images = test_images(args.results, args.images)
    listing = work / "images.json"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text(json.dumps(images))
    load = os.getloadavg()
    print(
        f"{len(images)} images, batches of {args.batch_size}, threads {args.threads or 'all'}; "
        f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    figures = {}
    new_export = work / "export_new"
    if not (args.skip_export and (new_export / "manifest.json").is_file()):
        shutil.rmtree(new_export, ignore_errors=True)
        for mode in ("export-new", "export-rerun"):  # the rerun keeps every graph
            figures[mode] = run_child("export-new", str(args.results), "--out", str(new_export))
    one = work / "one_image.json"
    one.write_text(json.dumps(images[:1]))
    threads = ["--threads", str(args.threads)] if args.threads else []
    for mode in ("torch-old", "torch-new", "onnx-old", "onnx-new"):
        source = str(args.results if mode.startswith("torch") else new_export)
        figures[f"{mode} one image"] = run_child(mode, source, "--listing", str(one), *threads)
        figures[mode] = run_child(
            mode, source, "--batch-size", str(args.batch_size), "--listing", str(listing), *threads
        )
    if not args.skip_old_export:
        old = work / "export_old"
        shutil.rmtree(old, ignore_errors=True)
        figures["export-old"] = run_child("export-old", str(args.results), "--out", str(old))
        shutil.rmtree(old, ignore_errors=True)
    for mode, f in figures.items():
        if mode.startswith("export"):
            print(
                f"{mode:>22}: {f['graphs']} graphs, {f['gb']:.2f} GB, {f['export_s']:.0f} s, "
                f"peak {f['peak_gib']:.2f} GiB"
            )
        elif mode.endswith("one image"):
            print(f"{mode:>22}: {f['first_s']:.1f} s, peak {f['peak_gib']:.2f} GiB")
        else:
            print(
                f"{mode:>22}: models loaded {f['load_s']:.1f} s, first image {f['first_s']:.1f} s, "
                f"then {f['images_per_s']:.2f} images/s, peak {f['peak_gib']:.2f} GiB"
            )
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    assert figures["torch-old"]["digest"] == figures["torch-new"]["digest"], "PyTorch differs"
    assert figures["onnx-old"]["digest"] == figures["onnx-new"]["digest"], "onnxruntime differs"
    assert not figures["onnx-new"]["torch_imported"], "the ONNX path imported torch"
    for backend in ("torch", "onnx"):
        old, new = figures[f"{backend}-old"], figures[f"{backend}-new"]
        old1, new1 = figures[f"{backend}-old one image"], figures[f"{backend}-new one image"]
        print(
            f"RATIO {backend} new vs old: first image {new1['first_s'] / old1['first_s']:.2f} of "
            f"the old time ({new1['first_s']:.1f} against {old1['first_s']:.1f} s; target <= 10 "
            f"s); peak memory {new['peak_gib'] / old['peak_gib']:.2f} ({new['peak_gib']:.2f} "
            f"against {old['peak_gib']:.2f} GiB; target <= 3); images/s "
            f"{new['images_per_s'] / old['images_per_s']:.2f}x (target >= 1)"
        )
    new = figures.get("export-new")
    if new and "export-old" in figures:
        old = figures["export-old"]
        print(
            f"RATIO export new vs old: {new['export_s'] / old['export_s']:.2f} of the old time "
            f"({new['export_s']:.0f} against {old['export_s']:.0f} s; target <= 300 s)"
        )
    if new:
        rerun = figures["export-rerun"]["export_s"]
        print(
            f"RATIO export rerun into the finished folder: {rerun:.0f} s, "
            f"{rerun / new['export_s']:.2f} of the export"
        )
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
