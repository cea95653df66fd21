"""The ``ptxseg`` command: what a user runs outside the DAG.

ptxseg predict IMAGE... [--results results | --model DIR] [--out predictions] [--device auto]
               [--batch-size 8] [--quiet] [--dicom-out DIR [--dicom-probability]]
ptxseg export [--results results] --out DIR
ptxseg validate SUBMISSION [--index results/data/siim_index.csv]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from ptxseg.layout import RESULTS

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
log = logging.getLogger("ptxseg.predict")


def _predict(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    # Imported here: `ptxseg validate` and `--help` stay fast; --model never imports torch.
    from ptxseg.deploy import Predictor
    from ptxseg.deploy.files import write_predictions
    from ptxseg.deploy.images import image_id_of

    for path in args.images:  # every input's identifier checked before any model is loaded
        image_id_of(path)
    dicom = None
    if args.dicom_out is not None:  # every DICOM source checked before any image is predicted
        from ptxseg.deploy.dicom_files import DicomOutputs

        dicom = DicomOutputs(Path(args.dicom_out), args.dicom_probability)
        dicom.check(args.images)
    elif args.dicom_probability:
        raise ValueError("--dicom-probability needs --dicom-out DIR")
    if args.model is not None:
        predictor = Predictor.from_export(args.model, threads=args.threads)
    else:
        predictor = Predictor.from_results(args.results, args.device, args.threads)
    loaded = time.perf_counter() - started
    rows, timings = write_predictions(
        predictor.predict_many(args.images, batch_size=args.batch_size),
        args.out,
        total=len(args.images),
        quiet=args.quiet,
        started=started,
        dicom=dicom,
    )
    found = sum(r["EncodedPixels"] != "-1" for r in rows)
    log.info("models loaded in %.1f s; %s", loaded, timings)
    print(
        f"{len(rows)} image(s), {found} with a pneumothorax; masks, overlays and predictions.csv "
        f"in {args.out} ({timings})"
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    from ptxseg.deploy.export import export_onnx

    manifest = export_onnx(args.results, args.out, opset=args.opset)
    print(
        f"{len(manifest['models'])} ONNX model(s) and manifest.json in {args.out}; predict with "
        f"`ptxseg predict --model {args.out} IMAGE...`"
    )
    return 0


def _validate(args: argparse.Namespace) -> int:
    from ptxseg.data.siim import read_index
    from ptxseg.ensemble.submission import validate_submission

    index = read_index(args.index)
    validate_submission(args.submission, index[index["split"] == "test"])
    print(f"{args.submission}: valid ({(index['split'] == 'test').sum()} test images)")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ptxseg", description="Pneumothorax segmentation on chest X-rays."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser(
        "predict", help="segment DICOM or PNG files with a trained ensemble"
    )
    predict.add_argument("images", nargs="+", help="DICOM (.dcm) or image files")
    source = predict.add_mutually_exclusive_group()
    source.add_argument(
        "--results",
        default=RESULTS.root,
        help=f"the pipeline's results folder, run with PyTorch (default: {RESULTS.root})",
    )
    source.add_argument(
        "--model", help="an `ptxseg export` folder, run with onnxruntime (no PyTorch)"
    )
    predict.add_argument(
        "--out", default="predictions", help="output folder (default: predictions)"
    )
    predict.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cuda", "cpu"],
        help="PyTorch's device (--results only)",
    )
    predict.add_argument(
        "--batch-size", type=_positive, default=8, help="images per batch (default: 8)"
    )
    predict.add_argument(
        "--threads",
        type=_positive,
        help="CPU threads (default: every core); the prediction job's threads and batch give "
        "the submission's maps bit for bit",
    )
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    predict.add_argument(
        "--dicom-out",
        help="for DICOM inputs, also write a DICOM SEG and a Secondary Capture per image here",
    )
    predict.add_argument(
        "--dicom-probability",
        action="store_true",
        help="with --dicom-out, also a Parametric Map of the pixel probabilities",
    )
    predict.set_defaults(run=_predict)
    export = commands.add_parser(
        "export", help="write the trained ensemble as ONNX models and a manifest.json"
    )
    export.add_argument(
        "--results",
        default=RESULTS.root,
        help=f"the pipeline's results folder (default: {RESULTS.root})",
    )
    export.add_argument("--out", required=True, help="the export folder, e.g. model/")
    export.add_argument(
        "--opset", type=int, default=18, help="ONNX opset (17 or later; default: 18)"
    )
    export.set_defaults(run=_export)
    validate = commands.add_parser("validate", help="check a submission against the test index")
    validate.add_argument("submission")
    validate.add_argument("--index", default=RESULTS.data("siim_index.csv"))
    validate.set_defaults(run=_validate)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:  # bad input: a clear message, no traceback
        print(f"ptxseg {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
