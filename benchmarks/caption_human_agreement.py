"""How well people agree with each other on a caption split: each of the five reference
captions scored, as if it were a model's, against the other four (pycocoevalcap, the scorer of
``caption_quality.py``). It tells what a bar on that split means: RSICD fills an image's five
references by repeating the ones it has, so a reference that has a copy among the others scores
far above any real description.

    ECGCAP_DATA=../shared/data python benchmarks/caption_human_agreement.py [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import sys

SPLITS = (("flickr8k", "val"), ("rsicd", "test"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)

    from ecgcap.captioning.datasets import load_captions
    from ecgcap.captioning.evaluation import score_captions

    print(f"{'split':16}{'images':>8}{'repeated refs':>15}  {'reference':>9}"
          f"{'BLEU-4':>8}{'CIDEr':>8}")
    for dataset, split in SPLITS:
        refs = load_captions(dataset, split, data_dir=args.data_dir, report=lambda line: None)
        sets = [caps for caps in refs.captions if len(caps) >= 5]
        repeated = sum(len(set(caps)) < len(caps) for caps in sets)
        for k in range(5):
            scores = score_captions([caps[:k] + caps[k + 1:5] for caps in sets],
                                    [caps[k] for caps in sets], meteor=False)
            name = f"{dataset} {split}" if k == 0 else ""
            counts = f"{len(sets):>8}{repeated:>15}" if k == 0 else " " * 23
            print(f"{name:16}{counts}  {k + 1:>9}{scores['BLEU-4']:8.3f}{scores['CIDEr']:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
