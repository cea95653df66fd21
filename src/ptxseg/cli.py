"""The ``ptxseg`` command: what a user runs outside the DAG.

ptxseg predict IMAGE... [--results results] [--out predictions] [--device auto]
ptxseg validate SUBMISSION [--index results/data/siim_index.csv]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ptxseg.layout import RESULTS

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def _predict(args: argparse.Namespace) -> int:
    from ptxseg.ensemble.predict_files import predict_files

    rows = predict_files(args.images, args.results, args.out, args.device)
    found = sum(r["EncodedPixels"] != "-1" for r in rows)
    print(
        f"{len(rows)} image(s), {found} with a pneumothorax; masks, overlays and predictions.csv in {args.out}"
    )
    return 0


def _validate(args: argparse.Namespace) -> int:
    from ptxseg.data.siim import read_index
    from ptxseg.ensemble.submission import validate_submission

    index = read_index(args.index)
    validate_submission(args.submission, index[index["split"] == "test"])
    print(f"{args.submission}: valid ({(index['split'] == 'test').sum()} test images)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ptxseg", description="Pneumothorax segmentation on chest X-rays."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser(
        "predict", help="segment DICOM or PNG files with a trained ensemble"
    )
    predict.add_argument("images", nargs="+", help="DICOM (.dcm) or image files")
    predict.add_argument(
        "--results",
        default=RESULTS.root,
        help=f"the pipeline's results folder (default: {RESULTS.root})",
    )
    predict.add_argument(
        "--out", default="predictions", help="output folder (default: predictions)"
    )
    predict.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    predict.set_defaults(run=_predict)
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
