"""`ptxseg predict` with onnxruntime (the export, CPU) against PyTorch (the results folder, CPU) on
the same images, in the same run: time to the first image (models loaded), per-image time after
it, images/s, peak memory, and the ratio of images/s.

Each backend runs in a child process of its own (its peak memory is its own; the ONNX child also
checks that it never imported torch). The images are the results' SIIM test DICOMs, cycled to
``--images``. Without a results folder the tiny config's ensemble is built first with Snakemake
(32 px models: a smoke run, not a measurement; give the demo's ``results/`` for figures).

    python benchmarks/bench_onnx.py [RESULTS] [--images 55] [--batch-size 8] [--export DIR]
        [--device cpu|cuda] [--providers CUDAExecutionProvider CPUExecutionProvider] [--json F]

``--device`` is PyTorch's device, ``--providers`` onnxruntime's execution providers in order of
preference (CPU by default; a provider the installed onnxruntime lacks is refused, naming those it
has).
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from snakemake_run import ROOT, snakemake_command


def build_tiny_ensemble(workdir: Path) -> Path:
    # The target after --cores: right after --configfile it would be read as a second config file.
    command = snakemake_command(
        workdir, ROOT / "configs" / "tiny.yaml", "--cores", "all", "results/ensemble/ensemble.json"
    )
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"building the tiny ensemble failed:\n{result.stderr[-3000:]}")
    return workdir / "results"


def test_images(results: Path, count: int) -> list[str]:
    import pandas as pd

    index = pd.read_csv(results / "data" / "siim_index.csv", dtype=str)
    paths = [str(results.parent / p) for p in index[index["split"] == "test"]["path"]]
    if not paths:
        raise SystemExit(f"{results}: no test images in the SIIM index")
    return list(itertools.islice(itertools.cycle(paths), count))


def peak_gib() -> float:
    """This process's peak RSS: VmHWM (ru_maxrss would count the parent's peak before exec)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def child(
    backend: str, source: str, images: list[str], batch_size: int, device: str, providers: list
) -> dict:
    """One backend's figures (run in its own process)."""
    started = time.perf_counter()
    from ptxseg.deploy import Predictor

    if backend == "onnx":
        import onnxruntime

        missing = sorted(set(providers) - set(onnxruntime.get_available_providers()))
        if missing:
            raise SystemExit(
                f"onnxruntime {onnxruntime.__version__} lacks {', '.join(missing)} (it has "
                f"{', '.join(onnxruntime.get_available_providers())})"
            )
        predictor = Predictor.from_export(source, providers=providers)
    else:
        predictor = Predictor.from_results(source, device=device)
    loaded = time.perf_counter()
    first, found = None, 0
    for prediction in predictor.predict_many(images, batch_size=batch_size):
        first = first or time.perf_counter()
        found += prediction.found
    end = time.perf_counter()
    return {
        "backend": backend,
        "load_s": loaded - started,
        "first_s": first - started,
        "per_image_s": (end - first) / max(1, len(images) - 1),
        "images_per_s": len(images) / (end - loaded),
        "peak_gib": peak_gib(),
        "found": found,
        "torch_imported": "torch" in sys.modules,
        "device": device if backend == "torch" else ",".join(providers),
    }


def run_child(
    backend: str, source: Path, images: list[str], batch_size: int, device: str, providers: list
) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json") as listing:
        json.dump(images, listing)
        listing.flush()
        command = [sys.executable, __file__, "--child", backend, str(source)]
        command += ["--listing", listing.name, "--batch-size", str(batch_size)]
        command += ["--device", device, *(["--providers", *providers] if providers else [])]
        result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{backend} child failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def report(figures: dict) -> str:
    return (
        f"{figures['backend']:>7} ({figures['device']}): models loaded {figures['load_s']:.1f} s, first image "
        f"{figures['first_s']:.1f} s, then {figures['per_image_s']:.3f} s an image, "
        f"{figures['images_per_s']:.2f} images/s, peak {figures['peak_gib']:.2f} GiB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", nargs="?", type=Path, help="a results folder with an ensemble")
    parser.add_argument("--images", type=int, default=55)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--export", type=Path, help="export folder (reused if it has a manifest)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--providers", nargs="+", default=["CPUExecutionProvider"])
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--backends", nargs="+", default=["torch", "onnx"], choices=["torch", "onnx"]
    )
    parser.add_argument("--child", choices=["torch", "onnx"], help=argparse.SUPPRESS)
    parser.add_argument("--listing", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        images = json.loads(args.listing.read_text())
        figures = child(
            args.child, str(args.results), images, args.batch_size, args.device, args.providers
        )
        print(json.dumps(figures))
        return 0
    results = args.results or build_tiny_ensemble(Path(tempfile.mkdtemp(prefix="bench_onnx_")))
    images = test_images(results, args.images)
    print(f"{len(images)} images (the test DICOMs, cycled), batches of {args.batch_size}")
    figures = {}
    if "torch" in args.backends:
        figures["torch"] = run_child("torch", results, images, args.batch_size, args.device, [])
        print(report(figures["torch"]))
    if "onnx" in args.backends:
        export = args.export or Path(tempfile.mkdtemp(prefix="bench_onnx_export_"))
        if not (export / "manifest.json").is_file():
            started = time.perf_counter()
            from ptxseg.deploy.export import export_onnx

            manifest = export_onnx(results, export)
            print(
                f"export: {len(manifest['models'])} models in {time.perf_counter() - started:.0f} s"
            )
        figures["onnx"] = run_child(
            "onnx", export, images, args.batch_size, args.device, args.providers
        )
        print(report(figures["onnx"]))
        assert not figures["onnx"]["torch_imported"], "the ONNX path imported torch"
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    if len(figures) == 2:
        torch_figures, onnx_figures = figures["torch"], figures["onnx"]
        assert onnx_figures["found"] == torch_figures["found"], (onnx_figures, torch_figures)
        print(
            f"RATIO onnxruntime vs PyTorch images/s: "
            f"{onnx_figures['images_per_s'] / torch_figures['images_per_s']:.2f}x; time to the "
            f"first image {onnx_figures['first_s'] / torch_figures['first_s']:.2f} of PyTorch's"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
