"""Quality of a shipped captioner beside the two baselines, with the issue's bars.

    ECGCAP_DATA=../shared/data python benchmarks/caption_quality.py --model photo
    ECGCAP_DATA=../shared/data python benchmarks/caption_quality.py --model rsicd

``--model photo`` (or a photo captioner's file): Flickr8k's dev split (the photos present, five
references each); ``--model rsicd``: RSICD's public test split (593 images). Greedy and beam-3
captions are scored with pycocoevalcap (PTB tokenizer, BLEU-1..4, METEOR, ROUGE-L, CIDEr-D)
beside the best fixed training caption (chosen on val) and nearest-neighbour retrieval (the most
typical caption of the 10 nearest training images under the model's image vector, over every
training set the model was trained on). Bars (beam 3):

- photo, Flickr8k dev: BLEU-4 >= 0.18, CIDEr >= 0.42, >= 110 distinct captions, CIDEr at least
  0.10 above the nearest-neighbour baseline;
- rsicd, RSICD test: CIDEr >= 1.00, BLEU-4 >= 0.30.

The photo figures are on Flickr8k's dev split, the split that also chose the epoch (greedy
CIDEr, ecgcap tokens): no test photo is in the shared data; the test split is measured
elsewhere.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

BARS = {"flickr8k": {"BLEU-4": 0.18, "CIDEr": 0.42, "distinct": 110},
        "rsicd": {"CIDEr": 1.00, "BLEU-4": 0.30}}
SPLIT = {"flickr8k": "val", "rsicd": "test"}
NN_MARGIN = {"flickr8k": 0.10}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="photo", help="photo, rsicd or a captioner file")
    parser.add_argument("--dataset", choices=tuple(BARS), default=None,
                        help="default: the dataset the model was trained on")
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--no-repeat", type=int, default=3, metavar="N",
                        help="no caption repeats one of its own N-grams (0: off)")
    parser.add_argument("--length-penalty", type=float, default=None, metavar="X",
                        help="beam search's length normalisation (default: the model's own)")
    parser.add_argument("--no-meteor", action="store_true")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", default=None, help="also write the scores to this file")
    args = parser.parse_args(argv)

    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from ecgcap.captioning.api import evaluate_captioner
    from ecgcap.captioning.decoding import model_length_penalty
    from ecgcap.captioning.evaluation import format_scores
    from ecgcap.captioning.inference import load_captioner
    from ecgcap.runtime.device import configure_device

    print(configure_device("cpu"))
    model, info = load_captioner(args.model)
    dataset = args.dataset or info.get("dataset", "rsicd")
    split = SPLIT[dataset]
    extra = [d for d in info.get("datasets", []) if d != dataset]
    t = time.perf_counter()
    penalty = model_length_penalty(info, args.length_penalty)
    result = evaluate_captioner(model, dataset, split, beam=args.beam,
                                no_repeat_ngram=args.no_repeat, length_penalty=penalty,
                                data_dir=args.data_dir,
                                meteor=not args.no_meteor, train_datasets=extra, report=print)
    scores = result["scores"]
    print(f"\n{dataset} {split}: {len(result['images'])} images, scored in "
          f"{time.perf_counter() - t:.0f} s; length penalty {penalty:g}; fixed caption: "
          f"{result['fixed_caption']!r}; "
          f"nearest neighbour over {dataset}{''.join('+' + d for d in extra)} train\n")
    print(format_scores(scores))
    beam = scores[f"beam {args.beam}"]
    checks = [(f"beam {args.beam} {m} {beam[m]:.3f} >= {v}", beam[m] >= v)
              for m, v in BARS[dataset].items()]
    if dataset in NN_MARGIN and "nearest neighbour" in scores:
        nn = scores["nearest neighbour"]["CIDEr"]
        checks.append((f"CIDEr {beam['CIDEr']:.3f} >= nearest neighbour {nn:.3f} + "
                       f"{NN_MARGIN[dataset]}", beam["CIDEr"] >= nn + NN_MARGIN[dataset]))
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"dataset": dataset, "split": split, "scores": scores,
                       "fixed_caption": result["fixed_caption"]}, f, indent=2)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
