"""``python -m ecgcap.caption image.jpg [...]``: one caption per image.

Prints ``IMAGE<TAB>caption`` lines (or ``--json``: a list of ``{"image", "caption"}``), with the
photo captioner shipped in ``models/`` unless ``--model`` names another (``rsicd`` for aerial
images, or a file). ``--attention out.png`` draws where the model looked for each word.
Folders are expanded to their image files; images are decoded and captioned in batches. An
unreadable image is reported on stderr in one line and the others are still captioned; the
exit code is then 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ecgcap.runtime.cli import length_penalty, make_parser, ngram_size, positive_int, run


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("caption", "Describe images in one sentence each.", data=False)
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files or folders of images")
    parser.add_argument("--model", metavar="photo|rsicd|PATH", default="photo",
                        help="photo: the shipped captioner of ordinary photographs (Flickr8k + "
                             "Flickr30k); rsicd: the shipped one of aerial and satellite images "
                             "(RSICD); or a captioner .keras file")
    parser.add_argument("--runtime", choices=("auto", "litert", "keras"), default="auto",
                        help="auto: the model's LiteRT export when it has a current one (the "
                             "shipped models do; no TensorFlow import, same captions), else "
                             "Keras; litert / keras: insist on one")
    parser.add_argument("--beam", type=positive_int, default=3, help="beam width (1 = greedy)")
    parser.add_argument("--no-repeat", type=ngram_size, default=3, metavar="N",
                        help="never repeat one of the caption's own N-grams (default 3; 0: off)")
    parser.add_argument("--length-penalty", type=length_penalty, default=None, metavar="X",
                        help="beam search divides a caption's log-probability by its length to "
                             "the power X (default: the model's own; 1.0 unless its file names "
                             "another; 0: none)")
    parser.add_argument("--attention", metavar="OUT.png", default=None,
                        help="with one image: draw where the model looked for each word "
                             "(models with soft attention over a feature grid)")
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
