"""CinC 2017 rhythm quality: LSTM and SimpleRNN side by side under 5-fold cross-validation.

Each model is trained with the shipped defaults on every fold (stratified by label, fixed
seed; early stopping and checkpoint selection on a validation part carved out of the training
folds, never on the test fold), and scored on its test fold. Prints the per-fold challenge
scores, their mean and spread, per-class F1, the pooled confusion matrix and training times,
and checks the bar. Finished folds are reused, so the script can be stopped and started again.

    ECGCAP_DATA=../shared/data python benchmarks/ecg_rhythm_quality.py [--folds 5] [--ship]

``--ship`` copies the LSTM fold model with the best *validation* score to models/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from ecgcap.ecg.evaluation import format_confusion, side_by_side

BAR = 0.80  # mean F1 over N, A and O on held-out recordings, for the LSTM


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["lstm", "simplernn"])
    parser.add_argument("--runs-dir", default="runs/ecg_rhythm_quality")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--ship", action="store_true")
    args = parser.parse_args()

    reports: dict[str, dict] = {}
    for model in args.models:
        run = Path(args.runs_dir) / model
        done = run / "report.json"
        if not (done.is_file() and len(json.loads(done.read_text()).get("folds", {}))
                == args.folds):
            cmd = [sys.executable, "-m", "ecgcap.train_ecg", "--db", "cinc2017", "--model", model,
                   "--folds", str(args.folds), "--runs-dir", args.runs_dir, "--name", model,
                   "--device", "cpu", "-q"]
            cmd += ["--resume"] if run.is_dir() else []
            cmd += ["--data-dir", args.data_dir] if args.data_dir else []
            print("running:", " ".join(cmd[1:]), flush=True)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        reports[model] = json.loads(done.read_text())

    print(f"\nCinC 2017 ({args.folds}-fold cross-validation over the shared subset), test folds "
          "pooled:\n")
    print(side_by_side({m: r["test"] for m, r in reports.items()}))
    print("\nper fold, test challenge score (mean F1 of N, A, O):")
    print(f"{'fold':12}" + "".join(f"{m:>22}" for m in args.models))
    for k in map(str, range(1, args.folds + 1)):
        print(f"{k:12}" + "".join(f"{reports[m]['folds'][k]['test_score']:>22.3f}"
                                  for m in args.models))
    means = {}
    print("\nmean +- std over folds:")
    for label, key in [("score", None), *((f"F1 {c}", c) for c in "NAO~")]:
        cells = []
        for m in args.models:
            s = reports[m]["test_score"] if key is None else reports[m]["test_f1"][key]
            means[(m, label)] = s["mean"]
            cells.append(f"{s['mean']:.3f} +- {s['std']:.3f}")
        print(f"{label:12}" + "".join(f"{c:>22}" for c in cells))
    for m in args.models:
        folds = reports[m]["folds"].values()
        secs = [f["train_seconds"] for f in folds]
        epochs = [f"{f['best_epoch']}/{f['epochs_run']}" for f in folds]
        print(f"{m}: training per fold {statistics.mean(secs) / 60:.1f} min (max "
              f"{max(secs) / 60:.1f}); best/run epochs {' '.join(epochs)}")
        print(format_confusion(reports[m]["test"]))

    if "lstm" in args.models:
        score = means[("lstm", "score")]
        print(f"\nbar: LSTM mean challenge score {score:.3f} >= {BAR:.2f}: "
              f"{'PASS' if score >= BAR else 'FAIL'}")
        if "simplernn" in args.models:
            other = means[("simplernn", "score")]
            print(f"LSTM {score:.3f} vs SimpleRNN {other:.3f}: "
                  f"{'PASS' if score > other else 'FAIL'}")
    if args.ship:
        run = Path(args.runs_dir) / "lstm"
        best = reports["lstm"]["best_fold"]
        target = Path("models/cinc2017_lstm_rhythm.keras")
        shutil.copy(run / f"fold{best}" / "model.keras", target)
        shutil.copy(run / "report.json", Path("models/cinc2017_lstm_rhythm.report.json"))
        print(f"\nshipped fold {best} (best validation score "
              f"{reports['lstm']['folds'][str(best)]['val_score']:.3f}) as {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
