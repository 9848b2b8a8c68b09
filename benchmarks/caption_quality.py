"""Quality of the shipped captioner on the RSICD test images, beside the two baselines.

    ECGCAP_DATA=../shared/data python benchmarks/caption_quality.py [--model PATH] [--split test]

Scores greedy and beam-3 captions of the 593 test images in ``rsicd/captions_test.json`` with
pycocoevalcap (PTB tokenizer, BLEU-1..4, METEOR, ROUGE-L, CIDEr) beside the best fixed training
caption (chosen on val) and nearest-neighbour retrieval under the model's image vector, then
checks the bars: CIDEr >= 0.60 and BLEU-4 >= 0.25 with beam 3, >= 150 distinct captions, and
ahead of both baselines on every metric.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

BARS = {"CIDEr": 0.60, "BLEU-4": 0.25, "distinct": 150}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="captioner (default: the shipped one)")
    parser.add_argument("--split", choices=("val", "test"), default="test")
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", default=None, help="also write the scores to this file")
    args = parser.parse_args(argv)

    from ecgcap.captioning.api import evaluate_captioner
    from ecgcap.captioning.evaluation import METRICS, format_scores
    from ecgcap.captioning.inference import load_captioner
    from ecgcap.runtime.device import configure_device

    print(configure_device("cpu"))
    model, _ = load_captioner(args.model)
    t = time.perf_counter()
    result = evaluate_captioner(model, "rsicd", args.split, beam=args.beam,
                                data_dir=args.data_dir, report=print)
    scores = result["scores"]
    print(f"\nRSICD {args.split}: {len(result['images'])} images, scored in "
          f"{time.perf_counter() - t:.0f} s; fixed caption: {result['fixed_caption']!r}\n")
    print(format_scores(scores))
    beam = scores[f"beam {args.beam}"]
    checks = [(f"beam {args.beam} {m} >= {v}", beam[m] >= v) for m, v in BARS.items()]
    for base in ("fixed caption", "nearest neighbour"):
        behind = [m for m in METRICS if beam[m] <= scores[base][m]]
        checks.append((f"ahead of {base} on every metric"
                       + (f" (not on {', '.join(behind)})" if behind else ""), not behind))
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"split": args.split, "scores": scores,
                       "fixed_caption": result["fixed_caption"]}, f, indent=2)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
