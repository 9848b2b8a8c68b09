"""``python -m ecgcap.score_ecg RECORD [...] --annotator NAME``: AAMI scores of annotation files.

Matches each test beat to the reference beat within 150 ms (as PhysioNet's bxb does) and prints
the AAMI EC57 table over all records, with the beats missed and the extra beats.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ecgcap.runtime.cli import make_parser, run


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("score_ecg", "Score beat annotation files against the reference.",
                         data=False)
    parser.add_argument("records", nargs="+", metavar="RECORD",
                        help="reference record paths without extension (with their .atr)")
    parser.add_argument("--annotator", required=True, help="extension of the files to score")
    parser.add_argument("--ann-dir", default=None, metavar="DIR",
                        help="folder of the files to score (default: beside the records)")
    parser.add_argument("--reference", default="atr", help="reference annotator")
    return parser


def _work(args: argparse.Namespace) -> int:
    from ecgcap.ecg.evaluation import aami_report, format_confusion, format_table
    from ecgcap.ecg.scoring import score_annotations

    y_ref, y_test, missed, extra = [], [], 0, 0
    for record in args.records:
        r, t, m, e = score_annotations(record, args.annotator, args.ann_dir, args.reference)
        y_ref += r
        y_test += t
        missed += m
        extra += e
    report = aami_report(y_ref, y_test)
    print(format_table(report))
    print()
    print(format_confusion(report))
    print(f"\nmatched beats {len(y_ref)}, reference beats missed {missed}, "
          f"extra test beats {extra}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), _work, argv)


if __name__ == "__main__":
    sys.exit(main())
