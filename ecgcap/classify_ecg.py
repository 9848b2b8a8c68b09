"""``python -m ecgcap.classify_ecg RECORD [...]``: label the beats (or the rhythm) of ECG records.

With a rhythm model (``--task rhythm``) each record gets one label and its probabilities. For
beat models, beat positions come from the record's annotation file when it has one, else from
wfdb's XQRS detector; the output says which. ``--format wfdb`` writes ``RECORD.ANNOTATOR``
files with WFDB beat symbols that PhysioNet's tools (bxb) and ``python -m ecgcap.score_ecg``
can score.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ecgcap.runtime.cli import make_parser, run, say, setup_runtime
from ecgcap.runtime.errors import EcgcapError


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("classify_ecg", "Classify the beats, or the rhythm, of WFDB records.",
                         data=False)
    parser.add_argument("records", nargs="+", metavar="RECORD",
                        help="record paths without extension (e.g. mitdb/100)")
    parser.add_argument("--model", metavar="PATH", default=None,
                        help="a .keras model (default: the shipped model for --task)")
    parser.add_argument("--task", choices=("beats", "rhythm"), default="beats",
                        help="which shipped model to use without --model: beats (a label per "
                             "beat, MIT-BIH) or rhythm (a label per record, CinC 2017)")
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
    from ecgcap.ecg.inference import load_classifier, write_wfdb

    model, info = load_classifier(args.model, args.task)
    rhythm = info.get("kind") == "ecg-rhythm"
    if rhythm and args.format == "wfdb":
        raise EcgcapError("a rhythm model labels whole records, not beats; use table, csv or "
                          "json", input="--format wfdb")
    out_dir = Path(args.out_dir)
    if args.format == "wfdb" and out_dir.exists() and not out_dir.is_dir():
        raise EcgcapError("is a file, not a folder", input=f"--out-dir {out_dir}")
    results = [_classify(model, info, r, args) for r in args.records]
    if rhythm:
        _print_rhythm(results, info["classes"], args.format)
        return 0
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
        _write_rows(["record", "sample", "label", *(f"p_{c}" for c in classes)], rows,
                    args.format)
    return 0


def _classify(model, info: dict, record: str, args: argparse.Namespace) -> dict:
    """One record's result; an error that does not name the record is prefixed with it."""
    from ecgcap.ecg.inference import classify_record

    try:
        return classify_record(model, info, record, annotations=args.annotations, lead=args.lead)
    except EcgcapError as exc:
        if record in str(exc):
            raise
        named = exc.input is not None and Path(record).name == exc.input  # "100" for ".../100"
        raise EcgcapError(exc.message if named else str(exc), input=record,
                          exit_code=exc.exit_code) from None


def _print_rhythm(results: list[dict], classes: Sequence[str], fmt: str) -> None:
    """Record labels and probabilities as JSON, CSV or a table."""
    if fmt == "json":
        json.dump(results, sys.stdout, indent=1)
        print()
        return
    rows = [[r["record"], r["label"], *(r["probabilities"][c] for c in classes)]
            for r in results]
    _write_rows(["record", "label", *(f"p_{c}" for c in classes)], rows, fmt)


def _write_rows(header: list[str], rows: list[list], fmt: str) -> None:
    """Rows as CSV or as a fixed-width table."""
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return
    print("".join(f"{h:>9}" for h in header))
    for row in rows:
        print("".join(f"{v:>9}" if not isinstance(v, float) else f"{v:>9.3f}" for v in row))


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), _work, argv)


if __name__ == "__main__":
    sys.exit(main())
