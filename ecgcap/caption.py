"""``python -m ecgcap.caption image.jpg [...]``: one caption per image.

The captioning wing (``ecgcap.captioning``) is not built yet; this command parses its options and
says so clearly. See the captioning issue for what it will do.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ecgcap.runtime.cli import make_parser, positive_int, run


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("caption", "Describe aerial images in one sentence each.", data=False)
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files or folders of images")
    parser.add_argument("--model", metavar="PATH", default=None,
                        help="a captioner .keras file (default: the one shipped in models/)")
    parser.add_argument("--beam", type=positive_int, default=3, help="beam width (1 = greedy)")
    parser.add_argument("--json", action="store_true",
                        help='print a JSON list of {"image": path, "caption": text}')
    return parser


def _work(args: argparse.Namespace) -> int:
    from ecgcap import captioning

    return captioning.caption_command(args, out=sys.stdout)


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), _work, argv)


if __name__ == "__main__":
    sys.exit(main())
