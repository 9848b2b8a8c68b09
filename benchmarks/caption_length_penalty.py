"""Choose a captioner's beam-search length penalty on its selection split, and write it into
the model file as the default of ``caption`` and ``evaluate_caption``.

    ECGCAP_DATA=../shared/data python benchmarks/caption_length_penalty.py --model photo
    ECGCAP_DATA=../shared/data python benchmarks/caption_length_penalty.py --model rsicd \\
        --write models/rsicd_captioner.keras

Beam 3 with the trigram rule, for each ``--penalties`` value, scored with pycocoevalcap on the
split that chose the model's epoch: Flickr8k's dev split for a photo captioner, RSICD's
selection set (the official val images and the 5 % of training images held out by
``train_caption``'s default ``--val-holdout``, seed 0) for an RSICD one. Never a test split.
The best CIDEr wins (the rule every choice of the shipped captioners follows); ``--write OUT``
saves the same model (weights, vocabulary) with that penalty in its info (a shipped model's
LiteRT export must then be redone: ``python -m ecgcap.export NAME``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="photo", help="photo, rsicd or a captioner file")
    parser.add_argument("--penalties", type=float, nargs="+",
                        default=[0.5, 0.75, 1.0, 1.25, 1.5])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--write", type=Path, default=None, metavar="OUT",
                        help="save the model with the best penalty as OUT")
    args = parser.parse_args(argv)
    if any(p < 0 for p in args.penalties):
        parser.error("--penalties: each must be 0 or more")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from ecgcap.captioning.config import CaptionTrainConfig
    from ecgcap.captioning.datasets import load_captions
    from ecgcap.captioning.decoding import CaptionDecoder
    from ecgcap.captioning.evaluation import score_captions
    from ecgcap.captioning.images import load_images
    from ecgcap.captioning.inference import captioner_path, load_captioner
    from ecgcap.captioning.training import load_splits
    from ecgcap.runtime.modelfile import save_model

    model, info = load_captioner(args.model)
    if info.get("dataset") == "rsicd":
        # train_caption's default hold-out and seed, as the shipped model's run used
        _, split = load_splits(CaptionTrainConfig(dataset="rsicd"), data_dir=args.data_dir)
        name = "RSICD selection set (val + 5% of train held out)"
    else:
        split = load_captions("flickr8k", "val", data_dir=args.data_dir)
        name = "Flickr8k dev"
    decoder = CaptionDecoder(model)
    images = load_images(split.paths(), decoder.image_size)
    print(f"{captioner_path(args.model)} on {name}: {len(split)} images, beam 3, no repeated "
          f"trigram (its file names length penalty {info.get('length_penalty', 'none')})")
    print(f"{'penalty':>8} {'BLEU-4':>8} {'CIDEr':>8} {'distinct':>9} {'seconds':>8}")
    scores = {}
    for penalty in args.penalties:
        t = time.perf_counter()
        captions = decoder.caption(images, beam=3, length_penalty=penalty, no_repeat_ngram=3)
        s = scores[penalty] = score_captions(split.captions, captions, meteor=False)
        print(f"{penalty:>8g} {s['BLEU-4']:>8.4f} {s['CIDEr']:>8.4f} {s['distinct']:>9.0f} "
              f"{time.perf_counter() - t:>8.0f}", flush=True)
    best = max(scores, key=lambda p: scores[p]["CIDEr"])
    print(f"best CIDEr: length penalty {best:g}")
    if args.write:
        save_model(model, args.write, {**info, "length_penalty": best})
        print(f"{args.write}: the same model, length penalty {best:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
