"""``python -m ecgcap.export MODEL [--format litert|onnx|saved_model] [--out PATH] [--quantize
none|float16|int8 --calibration RECORD...]``: a captioner or an ECG classifier as LiteRT,
ONNX or a TensorFlow SavedModel.

A captioner is written as ``NAME.litert/`` beside ``NAME.keras`` (or ``--out DIR``): the
encoder, the decoder's initial state and one decoder step as three ``.tflite`` functions, and
``contract.json`` (image size, vocabulary, inputs and outputs, and the sha256 of the ``.keras``
file). ``caption`` then runs that model with the LiteRT interpreter instead of TensorFlow: the
same captions, and one image in about a second instead of ten.

An ECG classifier (``beats``, ``rhythm`` or a beat or rhythm ``.keras`` file) is written as
``NAME.tflite`` beside it (or ``--out FILE.tflite``) with ``NAME.contract.json`` (classes,
sampling rate, preprocessing, window or crop, inputs, sha256 of both files);
``--format onnx`` writes ``NAME.onnx`` instead (free batch size, run by onnxruntime);
``classify_ecg --model NAME.tflite`` (or ``NAME.onnx``) runs it (:mod:`ecgcap.ecg.export`,
``docs/export.md``).
``--quantize float16|int8`` makes it smaller (``NAME.float16.tflite``, ``NAME.int8.tflite``);
int8 needs ``--calibration`` records, real records the export is checked on (never test data).
``--format saved_model`` writes a TensorFlow SavedModel folder (``NAME.saved_model``: ECG
models with their contract beside it, signature ``serving_default``; captioners with
signatures ``encode``, ``init``, ``step`` and ``contract.json`` inside); ``--format onnx`` with
a captioner writes ``NAME.onnx/`` (three graphs, :mod:`ecgcap.captioning.onnx`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ecgcap.runtime.cli import make_parser, run, say


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("export", "Export a captioner or an ECG classifier as LiteRT, ONNX "
                         "or a TensorFlow SavedModel.",
                         data=False)
    parser.add_argument("model", metavar="photo|rsicd|beats|rhythm|MODEL.keras",
                        help="a shipped model by name, or a captioner, beat or rhythm .keras "
                             "file")
    parser.add_argument("--format", default="litert", metavar="litert|onnx|saved_model",
                        help="litert: TensorFlow Lite flatbuffers; onnx: ONNX graphs (float32; "
                             "needs tf2onnx and onnxruntime: pip install 'ecgcap[export]'); "
                             "saved_model: a TensorFlow SavedModel folder (float32; for TF "
                             "Serving and other TensorFlow runtimes)")
    parser.add_argument("--out", metavar="PATH", default=None,
                        help="captioner: the folder to write (default: NAME.litert, "
                             "NAME.onnx or NAME.saved_model beside NAME.keras), replaced whole; "
                             "ECG model: the .tflite or .onnx file or .saved_model folder "
                             "(default: beside NAME.keras), its contract beside it")
    parser.add_argument("--quantize", choices=("none", "float16", "int8"), default="none",
                        help="ECG classifiers: none (float32), float16 weights, or int8 "
                             "(dynamic-range: int8 weights, float32 inputs and outputs; needs "
                             "--calibration)")
    parser.add_argument("--calibration", nargs="+", metavar="RECORD", default=None,
                        help="records (paths without extension, or folders of records) whose "
                             "beats or rhythm crops the export is checked on; required for "
                             "int8. Use training records, never the test set")
    return parser


ECG_NAMES = ("beats", "rhythm")
FORMATS = ("litert", "onnx", "saved_model")


def _export_ecg(args: argparse.Namespace, path: Path) -> int:
    """An ECG classifier as NAME.tflite + NAME.contract.json."""
    import json

    from ecgcap.classify_ecg import expand_records
    from ecgcap.ecg.export import export_classifier
    from ecgcap.ecg.litert import contract_path

    calibration = None
    if args.calibration:
        calibration, errors = expand_records(args.calibration)
        if errors:
            raise errors[0]
    # no status line first: a refusal is one line
    target = export_classifier(path, args.out, args.quantize, calibration, fmt=args.format)
    size = (sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) if target.is_dir()
            else target.stat().st_size)
    line = f"{target}\t{size / 1e6:.2f} MB, contract {contract_path(target).name}"
    if args.quantize != "none" or calibration:
        contract = json.loads(contract_path(target).read_text(encoding="utf-8"))
        line += (f"; on {contract['checked_on']}: labels agree "
                 f"{100 * contract['checked_label_agreement']:.1f}%, max abs prob diff "
                 f"{contract['checked_max_abs_difference']:.2g}")
    print(line)
    return 0


def _work(args: argparse.Namespace) -> int:
    from ecgcap.runtime.errors import EcgcapError
    from ecgcap.runtime.modelfile import read_info

    if args.format not in FORMATS:
        raise EcgcapError(f"choose one of {', '.join(FORMATS)}", input=f"--format "
                          f"{args.format}")
    if args.quantize == "int8" and not args.calibration:
        raise EcgcapError("needs --calibration RECORD... (real records the model was not "
                          "tested on: the quantised export is checked on their beats)",
                          input="--quantize int8")
    if args.model in ECG_NAMES:
        from ecgcap.ecg.inference import SHIPPED

        return _export_ecg(args, SHIPPED[args.model])
    path = Path(args.model)
    if path.suffix == ".keras" and read_info(path).get("kind") in ("ecg-beats", "ecg-rhythm"):
        return _export_ecg(args, path)
    from ecgcap.captioning.inference import captioner_path
    from ecgcap.captioning.litert import export_captioner, read_contract

    path = captioner_path(args.model)
    kind = read_info(path).get("kind")
    if args.quantize != "none" or args.calibration:
        raise EcgcapError("quantised exports are for ECG classifiers so far",
                          input=f"--quantize {args.quantize}")
    if kind != "caption":
        raise EcgcapError(f"a {kind!r} model: exports are for captioners and ECG "
                          "classifiers", input=str(path))
    if args.format == "onnx":
        from ecgcap.captioning.onnx import export_captioner_onnx

        say(args, f"exporting {path} to ONNX")
        folder = export_captioner_onnx(path, args.out)
        contract = read_contract(folder)
        sizes = ", ".join(f"{f['file']} {(folder / f['file']).stat().st_size / 1e6:.1f} MB"
                          for f in contract["functions"].values())
        print(f"{folder}\t{sizes}")
        return 0
    if args.format == "saved_model":
        from ecgcap.captioning.savedmodel import export_captioner_saved_model

        say(args, f"exporting {path} to a TensorFlow SavedModel")
        folder = export_captioner_saved_model(path, args.out)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(f"{folder}\t{size / 1e6:.1f} MB, signatures encode, init, step")
        return 0
    say(args, f"exporting {path} to LiteRT")
    folder = export_captioner(path, args.out)
    contract = read_contract(folder)
    sizes = ", ".join(f"{f['file']} {(folder / f['file']).stat().st_size / 1e6:.1f} MB"
                      for f in contract["functions"].values())
    print(f"{folder}\t{sizes}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), _work, argv)


if __name__ == "__main__":
    sys.exit(main())
