"""AAMI EC57 quality of the beat classifiers under the inter-patient protocol (DS1 -> DS2).

Trains the LSTM and the SimpleRNN baseline with the shipped defaults for several seeds
(every choice made inside DS1: early stopping on the patient-wise validation hold-out, or with
``--fixed-epochs`` a number of epochs from the DS1 cross-validation), prints each run's
DS2 table side by side, the mean and spread over seeds, and checks the bars. Finished runs are
reused (their report.json), so the script can be stopped and started again.

    ECGCAP_DATA=../shared/data python benchmarks/ecg_quality.py [--seeds 0 1 2] [--ship]
        [--fixed-epochs lstm=N simplernn=M]

``--fixed-epochs`` trains each named model on all of DS1 for its number of epochs, without a
validation hold-out or early stopping (``train_ecg --val-records none --epochs N``); the numbers
come from the DS1 cross-validation (``benchmarks/ecg_ds1_cv.py --per-epoch``), never from DS2.

Each model's seeds are also averaged into one ensemble (mean probabilities of the seeds' best
models, :func:`ecgcap.ecg.training.ensemble_runs`), scored beside them. ``--ship`` copies the
LSTM ensemble to models/ (the rule was fixed before its DS2 figures were seen).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from ecgcap.ecg.evaluation import side_by_side

BARS = [("macro_f1", None, 0.60), ("sensitivity", "V", 0.85), ("ppv", "V", 0.80),
        ("sensitivity", "S", 0.60), ("ppv", "S", 0.45)]


def figure(report: dict, metric: str, cls: str | None) -> float:
    value = report[metric] if cls is None else report["per_class"][cls][metric]
    return float(value or 0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["lstm", "simplernn"])
    parser.add_argument("--runs-dir", default="runs/ecg_quality")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--ship", action="store_true")
    parser.add_argument("--fixed-epochs", nargs="+", default=[], metavar="MODEL=N",
                        help="train MODEL on all of DS1 for N epochs, no validation hold-out")
    args = parser.parse_args()
    fixed = {m: int(n) for m, n in (item.split("=") for item in args.fixed_epochs)}

    reports: dict[str, dict] = {}
    for model in args.models:
        for seed in args.seeds:
            name = f"{model}-seed{seed}"
            run = Path(args.runs_dir) / name
            done = run / "report.json"
            wanted = ([], fixed[model]) if model in fixed else (None, None)
            if done.is_file() and wanted[0] is not None:  # a run of the other protocol
                config = json.loads(done.read_text())["config"]
                if (config["val_records"], config["epochs"]) != wanted:
                    done.unlink()
            if not done.is_file():
                cmd = [sys.executable, "-m", "ecgcap.train_ecg", "--db", "mitdb", "--model", model,
                       "--seed", str(seed), "--runs-dir", args.runs_dir, "--name", name,
                       "--device", "cpu", "-q", "--overwrite"]
                if args.data_dir:
                    cmd += ["--data-dir", args.data_dir]
                if model in fixed:
                    cmd += ["--val-records", "none", "--epochs", str(fixed[model])]
                print("running:", " ".join(cmd[1:]), flush=True)
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            reports[name] = json.loads((run / "report.json").read_text())

    from ecgcap.runtime.device import configure_device

    configure_device("cpu")
    ensembles = {}
    for model in args.models:
        folder = Path(args.runs_dir) / f"{model}-ensemble"
        members = [Path(args.runs_dir) / f"{model}-seed{s}" for s in args.seeds]
        report = folder / "report.json"
        if not report.is_file() or json.loads(report.read_text())["members"] != \
                [str(m) for m in members] or any(
                (m / "model.keras").stat().st_mtime > report.stat().st_mtime for m in members):
            ensemble(members, folder, args.data_dir)  # none yet, or of other or older runs
        ensembles[model] = json.loads(report.read_text())

    print("\nDS2 (test records), one column per run:\n")
    print(side_by_side({**{k: r["test"] for k, r in reports.items()},
                        **{f"{m}-ensemble": e["test"] for m, e in ensembles.items()}}))
    print("\nmean (spread = sample std) over seeds, DS2:")
    rows = [("macro-F1", "macro_f1", None)] + [
        (f"{c} {label}", m, c) for c in "NSVF" for label, m in (("Se", "sensitivity"),
                                                               ("+P", "ppv"), ("F1", "f1"))]
    print(f"{'':12}" + "".join(f"{m:>22}" for m in args.models))
    means = {}
    for label, metric, cls in rows:
        cells = []
        for model in args.models:
            vals = [figure(reports[f"{model}-seed{s}"]["test"], metric, cls) for s in args.seeds]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            means[(model, metric, cls)] = statistics.mean(vals)
            cells.append(f"{statistics.mean(vals):.3f} +- {sd:.3f}")
        print(f"{label:12}" + "".join(f"{c:>22}" for c in cells))
    times = {m: statistics.mean(reports[f"{m}-seed{s}"]["seconds"]["train"] for s in args.seeds)
             for m in args.models}
    print("mean training time (s): " + ", ".join(f"{m} {t:.0f}" for m, t in times.items()))

    if "lstm" in args.models:
        print("\nbars for the LSTM on DS2 (mean over seeds | ensemble of the seeds):")
        for metric, cls, bar in BARS:
            value = means[("lstm", metric, cls)]
            whole = figure(ensembles["lstm"]["test"], metric, cls)
            name = metric if cls is None else f"{cls} {metric}"
            print(f"  {name:16} {value:.3f} {'PASS' if value >= bar else 'FAIL'} | "
                  f"{whole:.3f} {'PASS' if whole >= bar else 'FAIL'}   (bar {bar:.2f})")
        if "simplernn" in args.models:
            a, b = means[("lstm", "macro_f1", None)], means[("simplernn", "macro_f1", None)]
            ea = ensembles["lstm"]["test"]["macro_f1"]
            eb = ensembles["simplernn"]["test"]["macro_f1"]
            print(f"  LSTM macro-F1 {a:.3f} vs SimpleRNN {b:.3f} (seed means): "
                  f"{'PASS' if a > b else 'FAIL'}; ensembles {ea:.3f} vs {eb:.3f}: "
                  f"{'PASS' if ea > eb else 'FAIL'}")
    if args.ship:
        folder = Path(args.runs_dir) / "lstm-ensemble"
        target = Path("models/mitdb_lstm_beats.keras")
        shutil.copy(folder / "model.keras", target)
        shutil.copy(folder / "report.json", Path("models/mitdb_lstm_beats.report.json"))
        print(f"\nshipped the LSTM ensemble of seeds {ensembles['lstm']['member_seeds']} "
              f"as {target}")
    return 0


def ensemble(runs: list[Path], folder: Path, data_dir: str | None) -> dict:
    from ecgcap.ecg.api import locate_or_download
    from ecgcap.ecg.databases import get_database
    from ecgcap.ecg.training import ensemble_runs

    folder.mkdir(parents=True, exist_ok=True)
    return ensemble_runs(runs, get_database("mitdb"), locate_or_download("mitdb", data_dir),
                         folder)


if __name__ == "__main__":
    sys.exit(main())
