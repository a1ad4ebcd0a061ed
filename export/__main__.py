"""`python -m export --model PATH.keras [--out DIR] [--formats ...] [--calib DATA]`."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from engine.core.cliargs import Parser
from engine.core.errors import cli_main
from engine.core.formats import names

#: --formats' default: every format export writes (engine/core/formats.py's table; parse_formats checks the names)
FORMAT_HELP = ",".join(names())


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m export",
        description=(
            "Convert a trained .keras emotion model to TFLite and ONNX, verify every file against Keras "
            "with its own runtime on validation faces, and write them (plus labels.json and an export "
            "report) next to each other. Nothing is written unless every check passes."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, help="the trained .keras model (its labels.json should sit next to it)")
    p.add_argument("--out", default=None, help="output folder (default: the model's folder)")
    p.add_argument("--formats", default=FORMAT_HELP, help="comma list of formats to write")
    p.add_argument("--calib", default=None,
                   help="data ROOT (train/ and validation/<class>/ images) or fer2013.csv for int8 calibration and "
                        "verification (default: the training data named in the model's labels.json)")
    p.add_argument("--calib-size", type=int, default=500, help="class-stratified training faces used to calibrate int8")
    p.add_argument("--verify-size", type=int, default=None, help="validation faces to verify on (default: the whole split)")
    p.add_argument("--threads", type=int, default=1, help="runtime threads for verification and timing")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="only warn when a file misses the parity thresholds (tiny test models)")
    p.add_argument("--cache-dir", default=None, help="decoded-dataset cache folder (default ~/.cache/emotion-engine)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from export.prepare import parse_formats
    from export.run import export_model

    export_model(
        args.model,
        args.out,
        calib=args.calib,
        formats=parse_formats(args.formats),
        calib_size=args.calib_size,
        verify_size=args.verify_size,
        check=args.check,
        threads=args.threads,
        cache_dir=args.cache_dir,
    )
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
