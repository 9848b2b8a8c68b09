"""``python -m ecgcap.export MODEL [--out DIR]``: a captioner as LiteRT files.

Writes ``NAME.litert/`` beside ``NAME.keras`` (or ``--out DIR``): the encoder, the decoder's
initial state and one decoder step as three ``.tflite`` functions, and ``contract.json`` (image
size, vocabulary, inputs and outputs, and the sha256 of the ``.keras`` file). ``caption`` then
runs that model with the LiteRT interpreter instead of TensorFlow: the same captions, and one
image in about a second instead of ten. ECG models are not exported yet.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ecgcap.runtime.cli import make_parser, run, say


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("export", "Export a captioner as LiteRT files.", data=False)
    parser.add_argument("model", metavar="photo|rsicd|MODEL.keras",
                        help="a shipped captioner by name, or a captioner .keras file")
    parser.add_argument("--format", choices=("litert",), default="litert",
                        help="litert: TensorFlow Lite flatbuffers, float32")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="folder to write (default: NAME.litert beside NAME.keras); "
                             "replaced whole")
    return parser


def _work(args: argparse.Namespace) -> int:
    from ecgcap.captioning.inference import captioner_path
    from ecgcap.captioning.litert import export_captioner, read_contract
    from ecgcap.runtime.errors import EcgcapError
    from ecgcap.runtime.modelfile import read_info

    path = captioner_path(args.model)
    kind = read_info(path).get("kind")
    if kind != "caption":
        raise EcgcapError(f"a {kind!r} model: only captioners export for now", input=str(path))
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
