"""``python -m ecgcap.classify_ecg RECORD [...]``: label the beats of ECG records.

Beat positions come from the record's annotation file when it has one, else from wfdb's XQRS
detector; the output says which. ``--format wfdb`` writes ``RECORD.ANNOTATOR`` files with WFDB
beat symbols that PhysioNet's tools (bxb) and ``python -m ecgcap.score_ecg`` can score.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence

from ecgcap.runtime.cli import make_parser, run, say, setup_runtime


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("classify_ecg", "Classify the beats of WFDB records.", data=False)
    parser.add_argument("records", nargs="+", metavar="RECORD",
                        help="record paths without extension (e.g. mitdb/100)")
    parser.add_argument("--model", metavar="PATH", default=None,
                        help="a .keras model (default: the shipped model for --task)")
    parser.add_argument("--task", choices=("beats", "rhythm"), default="beats")
    parser.add_argument("--annotations", default="auto", metavar="ANNOTATOR",
                        help="beat positions: auto (the .atr file if any, else XQRS), xqrs, or "
                             "an annotator name such as atr")
    parser.add_argument("--lead", default=None, help="lead to use (default: the model's)")
    parser.add_argument("--format", choices=("table", "csv", "json", "wfdb"), default="table")
    parser.add_argument("--annotator", default="ecgcap",
                        help="annotation file extension written by --format wfdb")
    parser.add_argument("--out-dir", default=".", metavar="DIR",
                        help="where --format wfdb writes its annotation files")
    return parser


def _work(args: argparse.Namespace) -> int:
    setup_runtime(args)
    from ecgcap.ecg.inference import classify_record, load_classifier, write_wfdb

    model, info = load_classifier(args.model, args.task)
    results = [classify_record(model, info, r, annotations=args.annotations, lead=args.lead)
               for r in args.records]
    for r in results:
        say(args, f"{r['record']}: {len(r['beats'])} beats, positions from {r['positions']}")
    if args.format == "json":
        json.dump(results, sys.stdout, indent=1)
        print()
    elif args.format == "wfdb":
        for r in results:
            print(write_wfdb(r, args.annotator, args.out_dir))
    else:
        classes = info["classes"]
        rows = [[r["record"], b["sample"], b["label"], *(b["probabilities"][c] for c in classes)]
                for r in results for b in r["beats"]]
        header = ["record", "sample", "label", *(f"p_{c}" for c in classes)]
        if args.format == "csv":
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
        else:
            print("".join(f"{h:>9}" for h in header))
            for row in rows:
                print("".join(f"{v:>9}" if not isinstance(v, float) else f"{v:>9.3f}"
                              for v in row))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), _work, argv)


if __name__ == "__main__":
    sys.exit(main())
