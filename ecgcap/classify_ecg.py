"""``python -m ecgcap.classify_ecg RECORD [...]``: label the beats (or the rhythm) of ECG records.

With a rhythm model (``--task rhythm``) each record gets one label and its probabilities. For
beat models, beat positions come from the record's annotation file when it has one, else from
wfdb's XQRS detector; the output says which, and each record ends with a summary (beats per
class, mean heart rate, where the ectopic beats are). ``--format wfdb`` writes
``RECORD.ANNOTATOR`` files with WFDB beat symbols that PhysioNet's tools (bxb) and
``python -m ecgcap.score_ecg`` can score.

A RECORD may be a folder (its ``RECORDS`` list, else its ``.hea`` files). A record that cannot
be read is reported in one line on stderr and the others are still classified; the exit code
is then 2. Records are checked (header, signal files) before the model is loaded, so a command
whose records are all bad answers at once.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import traceback
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ecgcap.runtime.cli import make_parser, run, say, setup_runtime
from ecgcap.runtime.errors import EXIT_FAILURE, EXIT_USAGE, EcgcapError

PROG = "python -m ecgcap.classify_ecg"
LABELS = """\
labels:
  beats (--task beats; AAMI EC57 classes, trained on MIT-BIH), one per beat:
    N  normal beat (also bundle branch block, nodal and atrial escape beats)
    S  supraventricular ectopic beat (premature atrial or nodal beat)
    V  ventricular ectopic beat (premature ventricular contraction)
    F  fusion of a ventricular and a normal beat
    Q  paced or unclassifiable beat
  rhythm (--task rhythm; PhysioNet/CinC Challenge 2017), one per recording:
    N  normal sinus rhythm
    A  atrial fibrillation
    O  another rhythm
    ~  too noisy to classify

exit codes: 0 every record classified; 2 bad usage, or records that could not be read (each
named in one line on stderr; the others are still classified and printed); 1 another failure.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("classify_ecg", "Classify the beats, or the rhythm, of WFDB records.",
                         data=False)
    parser.epilog = LABELS
    parser.formatter_class = _keep_epilog_lines(parser.formatter_class)
    parser.add_argument("records", nargs="+", metavar="RECORD",
                        help="record paths without extension (e.g. mitdb/100), or folders of "
                             "records (their RECORDS list, else their .hea files)")
    parser.add_argument("--model", metavar="PATH", default=None,
                        help="a .keras model, or a .tflite or .onnx export of one (python -m "
                             "ecgcap.export; run by LiteRT or onnxruntime, without "
                             "TensorFlow) (default: "
                             "the shipped model for --task)")
    parser.add_argument("--task", choices=("beats", "rhythm"), default="beats",
                        help="which shipped model to use without --model: beats (a label per "
                             "beat, MIT-BIH) or rhythm (a label per record, CinC 2017)")
    parser.add_argument("--annotations", default="auto", metavar="ANNOTATOR",
                        help="beat positions: auto (the .atr file if any, else XQRS), xqrs, or "
                             "an annotator name such as atr")
    parser.add_argument("--lead", default=None, help="lead to use (default: the model's)")
    parser.add_argument("--format", choices=("table", "csv", "json", "wfdb"), default="table",
                        help="table: aligned columns, then a summary of each record; csv: the "
                             "same columns; json: a list of per-record results; wfdb: "
                             "RECORD.ANNOTATOR annotation files (beats only) for bxb and "
                             "score_ecg. Summaries go to stderr except with table")
    parser.add_argument("--annotator", default="ecgcap",
                        help="annotation file extension written by --format wfdb")
    parser.add_argument("--out-dir", default=".", metavar="DIR",
                        help="where --format wfdb writes its annotation files")
    return parser


def _keep_epilog_lines(base: type) -> type:
    """``base`` (the parser's help formatter) keeping the line breaks of the epilog."""

    class Formatter(base):  # type: ignore[misc, valid-type]
        def _fill_text(self, text, width, indent):
            return "".join(indent + line for line in text.splitlines(keepends=True))

    return Formatter


def expand_records(inputs: Sequence[str]) -> tuple[list[str], list[EcgcapError]]:
    """Record paths for the command line's RECORDs: a folder stands for its ``RECORDS`` list,
    else for its ``.hea`` files. Returns the records and the errors of folders without any."""
    from ecgcap.ecg import io

    records: list[str] = []
    errors: list[EcgcapError] = []
    for item in inputs:
        folder = Path(item)
        if not folder.is_dir():
            records.append(item)
            continue
        if (folder / "RECORDS").is_file():
            try:
                records += [str(folder / name) for name in io.list_records(folder)]
            except EcgcapError as exc:
                errors.append(exc)
            continue
        found = sorted(str(p.with_suffix("")) for p in folder.glob("*.hea"))
        if not found:
            errors.append(EcgcapError("a folder with no records (no RECORDS file, no .hea "
                                      "files)", input=item))
        records += found
    return list(dict.fromkeys(records)), errors


class _Failures:
    """Bad records, each reported in one line on stderr as it is met."""

    def __init__(self, debug: bool):
        self.debug = debug
        self.codes: list[int] = []

    def report(self, record: str, exc: Exception) -> None:
        if self.debug:
            traceback.print_exc()
        if isinstance(exc, EcgcapError):
            line, code = str(_named(exc, record)), exc.exit_code
        else:  # a bug or an unforeseen file: still one line, still the next record
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            line = (f"{record}: {type(exc).__name__}: {detail} (run with --debug for the "
                    "traceback)")
            code = EXIT_FAILURE
        print(f"{PROG}: error: {line}", file=sys.stderr, flush=True)
        self.codes.append(code)

    def exit_code(self) -> int:
        if not self.codes:
            return 0
        return EXIT_USAGE if all(c == EXIT_USAGE for c in self.codes) else EXIT_FAILURE


def _named(exc: EcgcapError, record: str) -> EcgcapError:
    """``exc``, naming ``record`` first unless it names it (or one of its files) already."""
    if record in str(exc):
        return exc
    named = exc.input is not None and Path(record).name == exc.input  # "100" for ".../100"
    return EcgcapError(exc.message if named else str(exc), input=record,
                       exit_code=exc.exit_code)


def _check_inputs(args: argparse.Namespace, failures: _Failures) -> list[str]:
    """The records whose header and files look sound (checked without a model, before
    TensorFlow is imported); the others are reported."""
    from ecgcap.ecg import io

    out_dir = Path(args.out_dir)
    if args.format == "wfdb" and out_dir.exists() and not out_dir.is_dir():
        raise EcgcapError("is a file, not a folder", input=f"--out-dir {out_dir}")
    if args.format == "wfdb" and args.task == "rhythm" and args.model is None:
        raise EcgcapError("a rhythm model labels whole records, not beats; use table, csv or "
                          "json", input="--format wfdb")
    records, errors = expand_records(args.records)
    for exc in errors:
        failures.report(exc.input or "", exc)
    good = []
    for record in records:
        try:
            io.check_record(record)
            if args.annotations not in ("auto", "xqrs"):
                base = io._record_base(record)
                if not base.with_name(f"{base.name}.{args.annotations}").is_file():
                    raise EcgcapError(f"no annotation file .{args.annotations}",
                                      input=str(base))
        except EcgcapError as exc:
            failures.report(record, exc)
        else:
            good.append(record)
    return good


def _work(args: argparse.Namespace) -> int:
    failures = _Failures(args.debug)
    records = _check_inputs(args, failures)
    if not records:
        return failures.exit_code() or EXIT_USAGE
    if args.model is not None and Path(args.model).suffix == ".tflite":
        from ecgcap.ecg.litert import load_litert_classifier  # refused before TensorFlow

        model, info = load_litert_classifier(args.model)
    elif args.model is not None and (Path(args.model) / "saved_model.pb").is_file():
        raise EcgcapError("a TensorFlow SavedModel: classify_ecg runs .keras, .tflite and .onnx "
                          "models; call its serving_default signature from TensorFlow "
                          "(docs/export.md#savedmodel)", input=args.model)
    elif args.model is not None and Path(args.model).suffix == ".onnx":
        from ecgcap.ecg.onnx import load_onnx_classifier  # run by onnxruntime, no TensorFlow

        model, info = load_onnx_classifier(args.model)
    else:
        setup_runtime(args)
        from ecgcap.ecg.inference import load_classifier

        model, info = load_classifier(args.model, args.task)
    rhythm = info.get("kind") == "ecg-rhythm"
    if rhythm and args.format == "wfdb":
        raise EcgcapError("a rhythm model labels whole records, not beats; use table, csv or "
                          "json", input="--format wfdb")
    results = []
    for record in records:
        try:
            results.append(_classify(model, info, record, args))
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the others
            failures.report(record, exc)
    if results:
        (_print_rhythm if rhythm else _print_beats)(results, info["classes"], args)
    return failures.exit_code()


def _classify(model, info: dict, record: str, args: argparse.Namespace) -> dict:
    """One record's result (errors name the record)."""
    from ecgcap.ecg.inference import classify_record

    try:
        return classify_record(model, info, record, annotations=args.annotations, lead=args.lead)
    except EcgcapError as exc:
        raise _named(exc, record) from None


def _print_beats(results: list[dict], classes: Sequence[str], args: argparse.Namespace) -> None:
    """Beat labels as JSON, WFDB files, CSV or a table; each record's summary in the table's
    footer, or on stderr."""
    from ecgcap.ecg.inference import beat_summary, format_beat_summary, write_wfdb

    for r in results:
        lead = f", lead {r['lead']}" if r.get("lead") else ""
        say(args, f"{r['record']}: {len(r['beats'])} beats, positions from {r['positions']}"
                  f"{lead}")
    summary = [line for r in results
               for line in format_beat_summary(beat_summary(r, tuple(classes)))]
    if args.format == "json":
        json.dump(results, sys.stdout, indent=1)
        print()
    elif args.format == "wfdb":
        for r in results:
            print(write_wfdb(r, args.annotator, args.out_dir))
    else:
        rows = [[r["record"], b["sample"], b["label"], *(b["probabilities"][c] for c in classes)]
                for r in results for b in r["beats"]]
        _write_rows(["record", "sample", "label", *(f"p_{c}" for c in classes)], rows,
                    args.format)
    if args.format == "table":
        print()
        print("\n".join(summary))
    else:
        for line in summary:
            say(args, line)


def _print_rhythm(results: list[dict], classes: Sequence[str], args: argparse.Namespace
                  ) -> None:
    """Record labels and probabilities as JSON, CSV or a table; with several records, the
    count of each label in the table's footer, or on stderr."""
    if args.format == "json":
        json.dump(results, sys.stdout, indent=1)
        print()
    else:
        rows = [[r["record"], r["label"], *(r["probabilities"][c] for c in classes)]
                for r in results]
        _write_rows(["record", "label", *(f"p_{c}" for c in classes)], rows, args.format)
    if len(results) < 2:
        return
    counts = Counter(r["label"] for r in results)
    n = len(results)
    line = f"{n} records: " + ", ".join(
        f"{c} {counts[c]} ({100 * counts[c] / n:.1f}%)" if counts[c] else f"{c} 0"
        for c in classes)
    if args.format == "table":
        print()
        print(line)
    else:
        say(args, line)


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
