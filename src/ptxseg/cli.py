"""The ``ptxseg`` command: what a user runs outside the DAG.

ptxseg predict IMAGE_OR_FOLDER... [--results results | --model DIR] [--out predictions]
               [--resume | --overwrite] [--strict] [--device auto] [--batch-size 8] [--quiet]
               [--verbose] [--fill] [--dicom-out DIR [--dicom-probability]]
ptxseg export [--results results] --out DIR
ptxseg validate SUBMISSION [--index results/data/siim_index.csv]
ptxseg --version
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from ptxseg import __version__
from ptxseg.layout import RESULTS

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
log = logging.getLogger("ptxseg.predict")

EXIT_OK = 0
EXIT_ERROR = 2  # nothing predicted: bad arguments or inputs, a refused --out (argparse's too)
EXIT_SOME_FAILED = 3  # the readable inputs predicted, some inputs skipped (listed on stderr)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); the finished rows are kept


@contextlib.contextmanager
def _logging(verbose: bool) -> Iterator[None]:
    """Stderr for the command's duration: by default one line a stage (this command's and the
    deploy package's INFO lines, everyone's warnings); ``verbose`` adds every library's INFO lines
    (checkpoints, highdicom) and ptxseg's DEBUG lines (one an image). Undone at the end, as
    `main` may be called more than once in a process (tests)."""
    levels = {
        "": logging.INFO if verbose else logging.WARNING,
        "ptxseg": logging.DEBUG if verbose else logging.NOTSET,
        "ptxseg.predict": logging.DEBUG if verbose else logging.INFO,
        "ptxseg.deploy": logging.DEBUG if verbose else logging.INFO,
    }
    loggers = {name: logging.getLogger(name) for name in levels}
    before = {name: logger.level for name, logger in loggers.items()}
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    loggers[""].addHandler(handler)
    for name, level in levels.items():
        loggers[name].setLevel(level)
    try:
        yield
    finally:
        loggers[""].removeHandler(handler)
        for name, level in before.items():
            loggers[name].setLevel(level)


def _check_device(args: argparse.Namespace) -> None:
    """Refuse a --device the run cannot honour, before anything is read or loaded."""
    if args.device != "cuda":
        return
    if args.model is not None:
        raise ValueError(
            "--device cuda: an export (--model) runs with onnxruntime on the CPU; --device "
            "chooses PyTorch's device with --results"
        )
    from ptxseg.runtime.device import cuda_visible, no_gpu_reason

    if not cuda_visible():
        raise ValueError(
            f"--device cuda: no CUDA GPU is visible ({no_gpu_reason()}); --device cpu or auto "
            "predicts on the CPU"
        )


def _runs_on(predictor, device: str) -> str:
    """Where the models run, for the "models ready" line."""
    where = getattr(predictor.backend, "device", None)  # PyTorch's; onnxruntime runs on the CPU
    if where is None:
        return "onnxruntime on the CPU"
    if where.type == "cuda":
        return "PyTorch on the GPU"
    return "PyTorch on the CPU" + (" (no GPU visible)" if device == "auto" else "")


def _predict(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    # Imported here: `ptxseg validate` and `--help` stay fast; --model never imports torch.
    from ptxseg.deploy import Predictor
    from ptxseg.deploy.files import PREDICTIONS, write_predictions
    from ptxseg.deploy.inputs import Reject, check_inputs, reason_of
    from ptxseg.deploy.out_folder import NEW, OVERWRITE, RESUME, claim, read_done

    if args.dicom_probability and args.dicom_out is None:
        raise ValueError("--dicom-probability needs --dicom-out DIR")
    _check_device(args)
    out = Path(args.out)
    dicom_out = None if args.dicom_out is None else Path(args.dicom_out)
    # Every input is read and decoded before any model loads (seconds, not minutes, to a bad file).
    inputs = check_inputs(args.images, read_done(out / PREDICTIONS) if args.resume else ())
    for reject in inputs.rejects:
        print(f"ptxseg predict: skipped {reject}", file=sys.stderr)
    for note in inputs.notes:
        log.debug("%s", note)
    if inputs.rejects and args.strict:
        raise ValueError(f"--strict: {len(inputs.rejects)} input(s) cannot be read (listed above)")
    if not inputs.todo and not inputs.done:
        raise ValueError("no input could be read" if inputs.rejects else "no input given")
    mode = RESUME if args.resume else OVERWRITE if args.overwrite else NEW
    paths = [item.path for item in inputs.todo]
    claim(out, dicom_out, mode, paths)
    log.info(
        "inputs checked: %d to predict%s%s%s",
        len(paths),
        f", {len(inputs.rejects)} skipped (listed above)" if inputs.rejects else "",
        f", {len(inputs.done)} already in {out / PREDICTIONS} (--resume)" if inputs.done else "",
        f", {len(inputs.notes)} converted to 8-bit grey (--verbose names them)"
        if inputs.notes
        else "",
    )
    if not paths:
        print(f"nothing to predict: every readable input is in {out / PREDICTIONS}")
        return EXIT_SOME_FAILED if inputs.rejects else EXIT_OK
    dicom = None
    if dicom_out is not None:  # every DICOM source checked before any image is predicted
        from ptxseg.deploy.dicom_files import DicomOutputs

        dicom = DicomOutputs(dicom_out, args.dicom_probability, args.fill)
        dicom.check(paths)
    if args.model is not None:
        predictor = Predictor.from_export(args.model, threads=args.threads)
    else:
        predictor = Predictor.from_results(args.results, args.device, args.threads)
    # The models load when their first batch needs them (deploy/resident.py): this line counts and
    # places them; the time to the first image is in the "predicted" line's summary.
    log.info(
        "models ready: %d, %s (each loaded when first used)",
        len(predictor.spec.model_keys()),
        _runs_on(predictor, args.device),
    )
    failed = list(inputs.rejects)

    def unreadable(path, error: Exception) -> None:  # passed the check, then failed to read
        failed.append(Reject(str(path), reason_of(path, error)))
        print(f"ptxseg predict: skipped {failed[-1]}", file=sys.stderr)

    try:
        rows, timings = write_predictions(
            predictor.predict_many(paths, batch_size=args.batch_size, on_error=unreadable),
            out,
            total=len(paths),
            quiet=args.quiet,
            started=started,
            dicom=dicom,
            fill=args.fill,
        )
    except KeyboardInterrupt:
        print(
            f"ptxseg predict: interrupted; the finished images' rows are in "
            f"{out / PREDICTIONS}: --resume continues",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    found = sum(r["EncodedPixels"] != "-1" for r in rows)
    log.info("%d image(s) predicted, %d with a pneumothorax; %s", len(rows), found, timings)
    resumed = f" (and {len(inputs.done)} from before)" if inputs.done else ""
    dicoms = f"; DICOM outputs in {dicom_out}" if dicom_out is not None else ""
    print(
        f"outputs written: {len(rows)} image(s){resumed}, {found} with a pneumothorax; masks, "
        f"overlays and predictions.csv in {out}{dicoms} ({timings})"
    )
    if failed:
        print(f"ptxseg predict: {len(failed)} input(s) skipped (listed above)", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK


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


def _check_data(args: argparse.Namespace) -> int:
    import yaml

    from ptxseg.config import siim_layout, validate
    from ptxseg.data.siim import check_data

    start = time.monotonic()
    with open(args.config, encoding="utf-8") as handle:
        config = validate(yaml.safe_load(handle) or {})
    if config["data"]["source"] == "demo":
        print(
            f"{args.config}: data.source is 'demo': the pipeline makes its own data; nothing to check"
        )
        return EXIT_OK
    layout = siim_layout(config)  # a ConfigError (a ValueError) names the folder and the fix
    print(layout.describe())
    found = check_data(layout, config["data"]["stop_on_rejects"])
    for note in found.notes[len(layout.notes) :]:
        print(f"  note: {note}")
    print("  " + ", ".join(f"{count} {what}" for what, count in found.counts.items()))
    for problem in found.problems:
        print(f"problem: {problem}", file=sys.stderr)
    verdict = "ready to run" if not found.problems else f"{len(found.problems)} problem(s)"
    print(
        f"{args.config}: {verdict} ({time.monotonic() - start:.1f} s; pixel data is checked by "
        "the index)"
    )
    return EXIT_OK if not found.problems else EXIT_SOME_FAILED


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ptxseg", description="Pneumothorax segmentation on chest X-rays."
    )
    parser.add_argument("--version", action="version", version=f"ptxseg {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser(
        "predict",
        help="segment DICOM or PNG files with a trained ensemble",
        epilog=f"Exit status: {EXIT_OK} every input predicted; {EXIT_SOME_FAILED} some inputs "
        f"skipped (listed on stderr), the others predicted; {EXIT_ERROR} nothing predicted (bad "
        f"arguments or inputs, a refused --out); {EXIT_INTERRUPTED} interrupted, the finished "
        "images' rows kept in predictions.csv.",
    )
    predict.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE_OR_FOLDER",
        help="DICOM or image files, and folders searched recursively for *.dcm, *.png and "
        "DICOMs without an extension. Outputs are named by ImageId (a DICOM's SOPInstanceUID, "
        "else the file's stem); two inputs with one ImageId are an error naming both",
    )
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
        "--out",
        default="predictions",
        help="output folder (default: predictions); one holding another run's outputs is "
        "refused without --resume or --overwrite",
    )
    again = predict.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out: images already in its predictions.csv are skipped, "
        "new rows appended",
    )
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="first remove the files an earlier run wrote in --out (and --dicom-out): "
        "predictions.csv and *_mask/_probability/_overlay.png (*_seg/_capture/_probability.dcm); "
        "nothing else",
    )
    predict.add_argument(
        "--strict",
        action="store_true",
        help=f"stop before loading any model when an input cannot be read (exit "
        f"{EXIT_ERROR}); by default such inputs are listed, skipped, and the exit status is "
        f"{EXIT_SOME_FAILED}",
    )
    predict.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cuda", "cpu"],
        help="PyTorch's device with --results (auto: the GPU where one is visible); cuda without "
        "a visible GPU, or with --model (onnxruntime on the CPU), is refused",
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
        "--verbose",
        action="store_true",
        help="every log line (each model's checkpoint, highdicom's, one an image); by default "
        "one line a stage: inputs checked, models ready, images predicted, outputs written",
    )
    predict.add_argument(
        "--fill",
        action="store_true",
        help="tint the predicted region red in the overlays (PNG and Secondary Capture); by "
        "default it is only outlined, the lung under it left as it is",
    )
    predict.add_argument(
        "--dicom-out",
        help="for DICOM inputs, also write a DICOM SEG and a Secondary Capture (outline, "
        "probability and NOT FOR DIAGNOSTIC USE burned in) per image here",
    )
    predict.add_argument(
        "--dicom-probability",
        action="store_true",
        help="with --dicom-out, also a Parametric Map of the pixel probabilities (float32, the "
        "models' own, not the PNG's 1/255 steps)",
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
    check = commands.add_parser(
        "check-data",
        help="find the SIIM-ACR layout a config points at and check it, in seconds, before a run",
        epilog=f"Exit status: {EXIT_OK} ready to run; {EXIT_SOME_FAILED} problems found (listed "
        f"on stderr, each naming the file or folder and the fix); {EXIT_ERROR} the config or "
        "its data.siim folders cannot be used (the message says why).",
    )
    check.add_argument("config", help="the config file, e.g. configs/full.yaml")
    check.set_defaults(run=_check_data)
    args = parser.parse_args(argv)
    try:
        with _logging(getattr(args, "verbose", False)):
            return args.run(args)
    except (ValueError, FileNotFoundError) as error:  # bad input: a clear message, no traceback
        print(f"ptxseg {args.command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:  # before any row (predict reports its own after the first)
        print(f"ptxseg {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
