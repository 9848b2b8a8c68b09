"""``python -m ecgcap.evaluate_caption``: score a captioner with the COCO caption evaluation code.

Greedy and beam captions side by side with two baselines on the same images (the best fixed
training caption, chosen on val; nearest-neighbour retrieval under the model's image vector),
BLEU-1..4, METEOR, ROUGE-L, CIDEr (pycocoevalcap, PTB tokenizer) and distinct captions; writes
``scores.json``, ``captions.json`` and ``sheet.html`` to ``--out``; with ``--teacher-forcing``
also the teacher-forced / free-running gap (``teacher_forcing.json``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ecgcap.runtime.cli import (
    length_penalty,
    make_parser,
    ngram_size,
    positive_int,
    run,
    say,
    setup_runtime,
)


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("evaluate_caption", "Score a captioner against reference captions.")
    parser.add_argument("--model", metavar="photo|rsicd|PATH", default=None,
                        help="a shipped captioner or a .keras file (default: rsicd for "
                             "--dataset rsicd, else photo)")
    parser.add_argument("--dataset", default="rsicd",
                        help="rsicd, flickr8k, or a caption file (.json Karpathy or COCO, .jsonl)")
    parser.add_argument("--image-dir", metavar="DIR", default=None,
                        help="images of a caption file (default: images/ beside it)")
    parser.add_argument("--split", choices=("val", "test"), default="test")
    parser.add_argument("--beam", type=positive_int, default=3,
                        help="beam width scored beside greedy")
    parser.add_argument("--no-repeat", type=ngram_size, default=3, metavar="N",
                        help="no caption repeats one of its own N-grams (default 3; 0: off)")
    parser.add_argument("--length-penalty", type=length_penalty, default=None, metavar="X",
                        help="beam search's length normalisation (default: the model's own; "
                             "1.0 unless its file names another)")
    parser.add_argument("--limit", type=positive_int, default=None,
                        help="score only the first N images")
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (Java, slow)")
    parser.add_argument("--teacher-forcing", action="store_true",
                        help="also measure the gap between teacher-forced and free-running "
                             "decoding (loss, next-word accuracy, BLEU-4): teacher_forcing.json")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="folder for scores.json, captions.json, sheet.html "
                             "(default: runs/eval-<dataset>-<split>)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


def _work(args: argparse.Namespace) -> int:
    setup_runtime(args)
    from ecgcap.captioning.api import evaluate_from_args
    from ecgcap.captioning.evaluation import format_scores

    scores, out_dir = evaluate_from_args(args)
    print(format_scores(scores["scores"]))
    if "teacher_forcing" in scores:
        from ecgcap.captioning.diagnostics import format_gap

        print("\nteacher forcing vs free running, on the same images and references:")
        print(format_gap(scores["teacher_forcing"]))
    say(args, f"scores.json, captions.json and sheet.html written to {out_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), _work, argv)


if __name__ == "__main__":
    sys.exit(main())
