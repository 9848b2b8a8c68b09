"""CinC 2017 rhythm quality: LSTM and SimpleRNN side by side under 5-fold cross-validation.

Each model is trained with the shipped defaults on every fold, once per seed (the folds are
the same for every seed: stratified by label with a fixed split seed; the epoch, and early
stopping where the schedule uses it, chosen on a validation part carved out of the training
folds, never on the test fold), and scored on its test fold. The first seed is the headline
(the shipped kind of model: one network). With more than one seed, each fold's seed models are
also averaged into one ensemble (mean probabilities,
:func:`ecgcap.ecg.rhythm_training.ensemble_rhythm_runs`) and every seed and ensemble is scored
beside it. Prints the per-fold validation and test challenge scores, their mean and spread,
per-class F1, the pooled confusion matrix and training times, and checks the bars. Finished
folds are reused (``train_ecg --resume`` trains only what is missing), so the script can be
stopped and started again; a run folder trained under other options than those given is
refused with one line naming them (exit 2), so results of different settings never mix (the
30-epoch runs, for example, need ``--epochs 30``).

    ECGCAP_DATA=../shared/data python benchmarks/ecg_rhythm_quality.py [--seeds 0 1] \
        [--layers N] [--epochs N] [--patience N] [--schedule cosine|plateau] \
        [--crop-seconds S] [--ema M] [--ship]

``--ship`` copies the first seed's LSTM fold model with the best *validation* score to models/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from ecgcap.ecg.api import rhythm_config_from_args
from ecgcap.ecg.evaluation import format_confusion, side_by_side
from ecgcap.ecg.rhythm_training import check_rhythm_config
from ecgcap.runtime.errors import EcgcapError
from ecgcap.train_ecg import build_parser

BAR = 0.80  # mean F1 over N, A and O on held-out recordings, for the LSTM


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["lstm", "simplernn"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--runs-dir", default="runs/ecg_rhythm_quality")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--layers", type=int, default=None,
                        help="recurrent layers for every model (default: train_ecg's)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="maximum epochs for every model (default: train_ecg's)")
    parser.add_argument("--patience", type=int, default=None,
                        help="early-stopping patience for every model (default: train_ecg's)")
    parser.add_argument("--ema", type=float, default=None,
                        help="weight-average momentum for every model (default: train_ecg's)")
    parser.add_argument("--schedule", default=None, choices=("plateau", "cosine"),
                        help="learning-rate schedule for every model (default: train_ecg's)")
    parser.add_argument("--crop-seconds", type=float, default=None,
                        help="crop length for every model (default: train_ecg's)")
    parser.add_argument("--ship", action="store_true")
    args = parser.parse_args()

    runs: dict[str, dict] = {}       # "lstm-seed0" -> report
    ensembles: dict[str, dict] = {}  # "lstm-ensemble" -> report (with more than one seed)
    for model in args.models:
        for seed in args.seeds:
            runs[f"{model}-seed{seed}"] = finished_run(args, model, seed)
        if len(args.seeds) > 1:
            members = [Path(args.runs_dir) / f"{model}-seed{s}" for s in args.seeds]
            name = f"{model}-ensemble"
            ensembles[name] = ensemble(members, Path(args.runs_dir) / name, args)
    headline = {m: runs[f"{m}-seed{args.seeds[0]}"] for m in args.models}
    what = f"seed {args.seeds[0]}"

    print(f"\nCinC 2017 ({args.folds}-fold cross-validation over the shared subset), "
          f"{what}, test folds pooled:\n")
    print(side_by_side({m: r["test"] for m, r in headline.items()}))
    print("\nper fold, challenge score (mean F1 of N, A, O), validation | test:")
    columns = {**runs, **ensembles}
    print(f"{'fold':6}" + "".join(f"{c:>19}" for c in columns))
    for k in map(str, range(1, args.folds + 1)):
        print(f"{k:6}" + "".join(f"{r['folds'][k]['val_score']:>11.3f} |"
                                 f"{r['folds'][k]['test_score']:>6.3f}"
                                 for r in columns.values()))
    print(f"{'mean':6}" + "".join(
        f"{statistics.mean(f['val_score'] for f in r['folds'].values()):>11.3f} |"
        f"{r['test_score']['mean']:>6.3f}" for r in columns.values()))

    means = {}
    print(f"\nmean +- std over folds ({what}):")
    print(f"{'':12}" + "".join(f"{m:>22}" for m in args.models))
    for label, key in [("score", None), *((f"F1 {c}", c) for c in "NAO~")]:
        cells = []
        for m in args.models:
            s = headline[m]["test_score"] if key is None else headline[m]["test_f1"][key]
            means[(m, label)] = s["mean"]
            cells.append(f"{s['mean']:.3f} +- {s['std']:.3f}")
        print(f"{label:12}" + "".join(f"{c:>22}" for c in cells))
    for m in args.models:
        for seed in args.seeds:
            folds = runs[f"{m}-seed{seed}"]["folds"].values()
            secs = [f["train_seconds"] for f in folds]
            epochs = [f"{f['best_epoch']}/{f['epochs_run']}" for f in folds]
            print(f"{m} seed {seed}: training per fold {statistics.mean(secs) / 60:.1f} min "
                  f"(max {max(secs) / 60:.1f}); best/run epochs {' '.join(epochs)}")
        print(format_confusion(headline[m]["test"]))

    if "lstm" in args.models:
        score = means[("lstm", "score")]
        print(f"\nbar: LSTM ({what}) mean challenge score {score:.3f} >= {BAR:.2f}: "
              f"{'PASS' if score >= BAR else 'FAIL'}")
        for k in [k for k in columns if k.startswith("lstm-")][1:]:
            other = columns[k]["test_score"]["mean"]
            print(f"  {k}: {other:.3f} {'PASS' if other >= BAR else 'FAIL'}")
        if "simplernn" in args.models:
            for kind in [*(f"seed{s}" for s in args.seeds), *(["ensemble"] if ensembles else [])]:
                a = columns[f"lstm-{kind}"]["test_score"]["mean"]
                b = columns[f"simplernn-{kind}"]["test_score"]["mean"]
                print(f"LSTM {a:.3f} vs SimpleRNN {b:.3f} ({kind}): "
                      f"{'PASS' if a > b else 'FAIL'}")
    if args.ship:
        best = headline["lstm"]["best_fold"]
        folder = Path(args.runs_dir) / f"lstm-seed{args.seeds[0]}"
        target = Path("models/cinc2017_lstm_rhythm.keras")
        shutil.copy(folder / f"fold{best}" / "model.keras", target)
        shutil.copy(folder / "report.json", Path("models/cinc2017_lstm_rhythm.report.json"))
        print(f"\nshipped fold {best} of {folder} (best validation score "
              f"{headline['lstm']['folds'][str(best)]['val_score']:.3f}) as {target}")
    return 0


def finished_run(args: argparse.Namespace, model: str, seed: int) -> dict:
    """The report of ``model`` trained from ``seed`` on every fold, training what is missing.

    A finished run is reused only if it was trained under exactly the options given (the
    ``config`` in its ``report.json``); otherwise one line says which options differ (exit 2).
    An unfinished one goes on with ``train_ecg --resume``, which refuses the same way."""
    name = f"{model}-seed{seed}"
    run = Path(args.runs_dir) / name
    options = ["--db", "cinc2017", "--model", model, "--folds", str(args.folds),
               "--seed", str(seed), "--runs-dir", args.runs_dir, "--name", name]
    for option in ("layers", "epochs", "patience", "ema", "schedule", "crop_seconds"):
        value = getattr(args, option)
        options += [f"--{option.replace('_', '-')}", str(value)] if value is not None else []
    options += ["--data-dir", args.data_dir] if args.data_dir else []
    done = run / "report.json"
    if done.is_file() and len(json.loads(done.read_text()).get("folds", {})) == args.folds:
        config = rhythm_config_from_args(build_parser().parse_args(options))
        check_rhythm_config([done, *sorted(run.glob("fold*/state.json"))], config, strict=True)
        return json.loads(done.read_text())
    cmd = [sys.executable, "-m", "ecgcap.train_ecg", *options, "--device", "cpu", "-q"]
    cmd += ["--resume"] if run.is_dir() else []
    print("running:", " ".join(cmd[1:]), flush=True)
    returncode = subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode
    if returncode:
        sys.exit(returncode if returncode > 0 else 1)  # train_ecg has said why on stderr
    return json.loads(done.read_text())


def ensemble(members: list[Path], folder: Path, args: argparse.Namespace) -> dict:
    """The fold-by-fold ensemble of ``members``, rebuilt when missing or older than them."""
    report = folder / "report.json"
    if report.is_file() and json.loads(report.read_text()).get("members") == \
            [str(m) for m in members] and all(
            (m / "report.json").stat().st_mtime <= report.stat().st_mtime for m in members):
        return json.loads(report.read_text())
    from ecgcap.ecg.api import locate_or_download
    from ecgcap.ecg.databases import get_database
    from ecgcap.ecg.rhythm_training import ensemble_rhythm_runs
    from ecgcap.runtime.device import configure_device

    configure_device("cpu")
    print(f"averaging {', '.join(map(str, members))} into {folder}", flush=True)
    return ensemble_rhythm_runs(members, get_database("cinc2017"),
                                locate_or_download("cinc2017", args.data_dir), folder)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except EcgcapError as err:
        print(f"{Path(sys.argv[0]).name}: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
