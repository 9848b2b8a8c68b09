"""What more training photos buy: the photo captioner's dev score against the share of training
photos it saw.

    # one run per share (same options, same seed), then:
    python -m ecgcap.train_caption --dataset flickr8k --dataset flickr30k --encoder mobilenet_v2 \\
        --train-fraction 0.25 --name photo_sat_f25
    python benchmarks/caption_learning_curve.py runs/photo_sat_f25 runs/photo_sat_f50 runs/photo_sat

Prints, from each finished run's ``report.json``: the share, the photos and captions trained on,
the best epoch, and the val (Flickr8k dev) CIDEr-D of greedy captions (ecgcap tokens, the
in-loop score that chose the epoch) with its distinct captions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders")
    args = parser.parse_args(argv)
    rows = []
    for run in args.runs:
        report_file = run / "report.json"
        if not report_file.is_file():
            print(f"{run}: no report.json (not finished)", file=sys.stderr)
            return 2
        report = json.loads(report_file.read_text())
        rows.append((report["config"].get("train_fraction", 1.0), report))
    print(f"{'share':>6}{'photos':>8}{'captions':>10}{'best epoch':>12}{'dev CIDEr':>11}"
          f"{'distinct':>10}")
    for share, r in sorted(rows, key=lambda row: row[0]):
        val = r.get("stage1_val", r["val"])
        print(f"{share:6.0%}{r['images']['train']:8d}{r['captions']['train']:10d}"
              f"{r['best_epoch']:>7d} of {r['epochs_run']:<3d}{val['cider_greedy']:11.3f}"
              f"{val['distinct_captions']:10d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
