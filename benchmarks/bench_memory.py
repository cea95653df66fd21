"""Peak memory of the test-set path: per-fold prediction files -> blending -> cascade -> submission.

Synthetic but full-sized: 3,205 test images (the real stage-2 test set), 15 segmenter outputs
(3 architectures x 5 folds, uint8 maps streamed to disk batch by batch into compressed map
files, as the prediction rule writes them) and 4 classifiers; masks at 1024x1024.
Target: peak resident memory at most 16 GiB; the time taken is printed too. The baseline beside
it is the memory of all 15 outputs held in RAM at once, what a non-streaming pipeline would need.

    python benchmarks/bench_memory.py [--images 3205] [--size 512] [--workdir /tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import sys, time, numpy as np, pandas as pd, cv2
from pathlib import Path
from ptxseg.contracts.ensemble_spec import EnsembleSpec, Preprocessing
from ptxseg.data.repack import Normalisation
from ptxseg.ensemble.submission import PredictionFiles, write_submission
from ptxseg.scoring.cascade import Cascade
from ptxseg.io import maps
from ptxseg.layout import Layout, fold_name
root, n, size, step = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
layout = Layout(str(root))
ids = [f"1.2.3.{k}" for k in range(n)]
archs, folds = ["unet_resnet34", "unet_efficientnet_b4", "attention_unet"], range(5)
if step == "predict":  # what predict_segmenter writes: a map file filled batch by batch
    rng = np.random.default_rng(0)
    for arch in archs:
        Path(layout.test_ids(arch)).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"image_id": ids[::-1]}).to_csv(layout.test_ids(arch), index=False)
        for fold in folds:
            with maps.create(layout.test_maps(arch, fold), (n, size, size)) as out:
                for start in range(0, n, 16):
                    coarse = rng.normal(0, 1, (min(16, n - start), 8, 8)).astype(np.float32)
                    batch = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_CUBIC) for c in coarse])
                    out[slice(start, start + len(batch))] = np.clip(255 / (1 + np.exp(-(batch - 1.2) * 3)), 0, 255)
    for c in range(4):
        path = Path(layout.test_probabilities(f"c{c}"))
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"image_id": ids, **{fold_name(f): rng.random(n) for f in folds}}).to_csv(path, index=False)
else:
    files = PredictionFiles.at(layout, [f"c{c}" for c in range(4)], archs, len(folds))
    ensemble = EnsembleSpec(
        source="bench_memory", gate_weights={f"c{c}": 0.25 for c in range(4)},
        segmenter_weights={"unet_resnet34": 0.4, "unet_efficientnet_b4": 0.3, "attention_unet": 0.3},
        members={"classify": ["best"], "segment": ["best"]},
        cascade=Cascade(gate=0.3, top=0.7, min_area=2048, bottom=0.4),
        preprocessing=Preprocessing(Normalisation(), {size: (0.5, 0.25)},
                                    {"classify": size, "segment": size}, len(folds), ["none"]),
        calibration=None)
    index = pd.DataFrame({"image_id": ids, "rows": 1024, "columns": 1024})
    print(write_submission(index, files, ensemble, root / "submission.csv"))
# VmHWM: this process's own peak (ru_maxrss would carry the parent's over exec)
print("PEAK_KIB", next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
"""


def run_step(step: str, root: Path, images: int, size: int) -> tuple[float, float]:
    """(seconds, peak RSS in GiB) of one step in a fresh process."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), str(images), str(size), step],
        check=True,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    peak_kib = int(result.stdout.split("PEAK_KIB")[-1])  # the step's own VmHWM
    return seconds, peak_kib / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=3205)
    parser.add_argument("--size", type=int, default=512, help="the segmenters' map size")
    parser.add_argument("--workdir", default=None, help="where the maps go (default: a temp dir)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_memory_", dir=args.workdir))
    try:
        needed = 15 * args.images * args.size**2 / 2**30  # raw; the files hold less
        free = shutil.disk_usage(root).free / 2**30
        if free < needed * 0.5:
            print(
                f"needs {needed:.1f} GiB of disk in {root}, {free:.1f} free: use --workdir or --size",
                file=sys.stderr,
            )
            return 2
        predict_s, predict_peak = run_step("predict", root, args.images, args.size)
        submit_s, submit_peak = run_step("submit", root, args.images, args.size)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    in_ram = needed
    peak = max(predict_peak, submit_peak)
    print(
        f"{args.images} test images, 15 segmenter outputs at {args.size}px ({needed:.1f} GiB as raw uint8), "
        f"4 classifiers, masks at 1024x1024"
    )
    print(f"prediction files written: {predict_s:.0f} s, peak {predict_peak:.2f} GiB")
    print(f"blend + cascade + submission: {submit_s:.0f} s, peak {submit_peak:.2f} GiB")
    print(
        f"RATIO peak memory vs holding all outputs in RAM ({in_ram:.1f} GiB): {peak / in_ram:.3f}  "
        f"(target: peak <= 16 GiB: {'met' if peak <= 16 else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    sys.exit(main())
