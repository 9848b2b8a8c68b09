"""Patient-wise 4-fold cross-validation inside MIT-BIH DS1, for choosing settings honestly.

The five-record validation hold-out that picks a run's epoch is too small to compare settings:
its macro-F1 (0.81-0.86) says little about new patients. Pooled out-of-fold predictions over
all 22 DS1 patients are the yardstick instead. DS2 is never loaded here.

Each fold is trained exactly as a shipped run (``ecgcap.ecg.training.train_beats`` with the
shipped defaults: class weights, augmentation, early stopping and epoch choice on a five-record
patient-wise validation part), with the fold's records as its test records and five of the
other DS1 records as its validation part. Finished folds are reused from ``--runs-dir``.

    ECGCAP_DATA=../shared/data python benchmarks/ecg_ds1_cv.py [--seeds 0 1] [--model lstm]
        [--class-weight-power 0.5] [--rr all|relative] [--runs-dir runs/ds1_cv]

``--per-epoch N`` asks how long to train without a validation part instead: each fold trains
on all the other DS1 records for N epochs (no early stopping), its held-out records are scored
after every epoch, and the pooled scores are printed per epoch (mean over ``--seeds``).

``--rr-irregularity off`` leaves out the ninth RR feature (on in the shipped defaults).
``--rr relative`` (the default, ``BeatConfig.rr_seconds=False``) blanks the four RR intervals
in seconds and keeps only their ratios to the patient's own rhythm; ``--rr all`` feeds both.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

# Folds of DS1 patients, each holding some of the S-rich records (209, 201, 207, 118, 220, 223).
FOLDS = (("209", "101", "106", "112", "115", "230"), ("201", "118", "108", "109", "122"),
         ("207", "220", "114", "116", "119", "203"), ("223", "124", "205", "215", "208"))
# Each fold's validation part: the shipped one (118 124 205 215 220) less the fold's own
# records, topped up to five with other records that hold S, V or F beats (from DS1's counts).
VALIDATION = (("118", "124", "205", "215", "220"), ("124", "205", "215", "220", "114"),
              ("118", "124", "205", "215", "108"), ("118", "220", "114", "116", "109"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--class-weight-power", type=float, default=0.5)
    parser.add_argument("--model", default="lstm", choices=("lstm", "simplernn"))
    parser.add_argument("--rr", default="relative", choices=("all", "relative"),
                        help="RR features: intervals in seconds and ratios, or only the ratios")
    parser.add_argument("--rr-irregularity", default="on", choices=("on", "off"),
                        help="the local rhythm's irregularity as an RR feature (default on)")
    parser.add_argument("--runs-dir", default="runs/ds1_cv")
    parser.add_argument("--per-epoch", type=int, default=0, metavar="N",
                        help="train N epochs on all other DS1 records; score every epoch")
    args = parser.parse_args()
    args.rr_irregularity = args.rr_irregularity == "on"
    if args.per_epoch and args.per_epoch < 3:
        parser.error("--per-epoch needs at least 3 epochs (the choice averages neighbours)")
    if args.per_epoch:
        return per_epoch(args)

    from ecgcap.ecg.api import locate_or_download
    from ecgcap.ecg.databases import MITDB_DS1, get_database
    from ecgcap.ecg.dataset import BeatConfig, load_beats
    from ecgcap.ecg.evaluation import aami_report, format_table
    from ecgcap.ecg.training import BEAT_MODEL, TrainConfig, train_beats
    from ecgcap.runtime.modelfile import load_model
    from ecgcap.runtime.seed import set_seed

    assert sorted(sum(FOLDS, ())) == sorted(MITDB_DS1)
    assert all(not set(v) & set(f) and len(v) == 5 for v, f in zip(VALIDATION, FOLDS, strict=True))
    mitdb = get_database("mitdb")
    db_dir = Path(locate_or_download("mitdb"))
    beats = BeatConfig(rr_seconds=args.rr == "all", rr_irregularity=args.rr_irregularity)
    data = load_beats(db_dir, mitdb, list(MITDB_DS1), beats, quiet=True)
    y = np.array([mitdb.classes.index(c) for c in data["label"]])
    setting = _setting(args)
    for seed in args.seeds:
        t0 = time.perf_counter()
        pred = np.zeros(len(y), dtype=np.int64)
        epochs = []
        for k, (fold, val) in enumerate(zip(FOLDS, VALIDATION, strict=True), start=1):
            run = Path(args.runs_dir) / setting / f"seed{seed}-fold{k}"
            if not (run / "model.keras").is_file():
                # The fold's own split: DS2 is replaced by the fold, so it is never read.
                db = replace(mitdb, split={**mitdb.split, "test": fold,
                                           "train": tuple(r for r in MITDB_DS1 if r not in fold)})
                config = TrainConfig(model=args.model, seed=seed, val_records=val, beats=beats,
                                     class_weight_power=args.class_weight_power)
                set_seed(seed)
                run.mkdir(parents=True, exist_ok=True)
                resume = (run / "checkpoint.keras").is_file() and (run / "state.json").is_file()
                train_beats(config, db, db_dir, run, resume=resume, quiet=True)
            model, _ = load_model(run / "model.keras", (BEAT_MODEL,))
            test = np.isin(data["record"], fold)
            probs = model.predict({"beat": data["beat"][test], "rr": data["rr"][test]},
                                  batch_size=2048, verbose=0)
            pred[test] = probs.argmax(-1)
            epochs.append(str(json.loads((run / "report.json").read_text())["best_epoch"]))
        report = aami_report(y, pred, mitdb.classes)
        print(f"\nseed {seed}: pooled out-of-fold DS1, {setting}, best epochs "
              f"{' '.join(epochs)} ({time.perf_counter() - t0:.0f} s)")
        print(format_table(report))
    return 0


def _setting(args: argparse.Namespace) -> str:
    """The runs' folder name for these settings."""
    return (f"{args.model}-rr_{args.rr}-cw{args.class_weight_power:g}"
            + ("-irregularity" if args.rr_irregularity else ""))


def per_epoch(args: argparse.Namespace) -> int:
    """Pooled out-of-fold scores after each epoch of training without a validation part."""
    import keras

    from ecgcap.ecg.api import locate_or_download
    from ecgcap.ecg.databases import MITDB_DS1, get_database
    from ecgcap.ecg.dataset import BeatConfig, load_beats
    from ecgcap.ecg.evaluation import aami_report
    from ecgcap.ecg.training import BeatBatches, TrainConfig, _weights, build_model
    from ecgcap.runtime.seed import set_seed

    class FoldScores(keras.callbacks.Callback):
        """Predicts the held-out fold after every epoch."""

        def __init__(self, x: dict, out: list):
            super().__init__()
            self.x, self.out = x, out

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.out.append(self.model.predict(self.x, batch_size=2048, verbose=0).argmax(-1))

    db = get_database("mitdb")
    beats = BeatConfig(rr_seconds=args.rr == "all", rr_irregularity=args.rr_irregularity)
    data = load_beats(locate_or_download("mitdb"), db, list(MITDB_DS1), beats, quiet=True)
    y = np.array([db.classes.index(c) for c in data["label"]])
    config = TrainConfig(model=args.model, class_weight_power=args.class_weight_power,
                         beats=beats)
    setting = _setting(args)
    folder = Path(args.runs_dir) / "per_epoch" / setting
    folder.mkdir(parents=True, exist_ok=True)
    scores = []
    for seed in args.seeds:
        preds = np.zeros((args.per_epoch, len(y)), dtype=np.int64)
        for k, fold in enumerate(FOLDS, start=1):
            test = np.isin(data["record"], fold)
            saved = folder / f"seed{seed}-fold{k}-{args.per_epoch}.npy"
            if not saved.is_file():
                set_seed(seed)
                train = ~test
                model = build_model(config, len(db.classes))
                model.get_layer("rr_norm").adapt(data["rr"][train])
                model.compile(keras.optimizers.Adam(config.learning_rate,
                                                    clipnorm=config.clipnorm),
                              "sparse_categorical_crossentropy")
                w = _weights(config, y[train], db.classes)
                batches = BeatBatches({"beat": data["beat"][train], "rr": data["rr"][train]},
                                      y[train], np.array([w[i] for i in y[train]], np.float32),
                                      config.batch_size, augment=config.augment, seed=seed)
                out: list = []
                x_test = {"beat": data["beat"][test], "rr": data["rr"][test]}
                model.fit(batches, epochs=args.per_epoch, shuffle=False, verbose=0,
                          callbacks=[batches.callback(), FoldScores(x_test, out)])
                np.save(saved, np.stack(out))
            preds[:, test] = np.load(saved)
        scores.append([aami_report(y, p, db.classes) for p in preds])
        print(f"seed {seed} done", flush=True)
    print(f"\npooled out-of-fold DS1, {setting}, no validation part, mean over seeds "
          f"{' '.join(map(str, args.seeds))}")
    print(f"{'epochs':>6} {'macro-F1':>9} {'smoothed':>9} {'S F1':>6} {'S Se':>6} {'S +P':>6} "
          f"{'V F1':>6} {'per seed':>10}")
    means = np.array([np.mean([s[e]["macro_f1"] for s in scores]) for e in range(args.per_epoch)])
    # the score of N epochs is noisy from epoch to epoch: the choice uses the mean of N-1..N+1
    smoothed = np.array([means[max(e - 1, 0):e + 2].mean() for e in range(args.per_epoch)])
    for e in range(args.per_epoch):
        reps = [s[e] for s in scores]
        cls = {c: [r["per_class"][c] for r in reps] for c in "SV"}
        print(f"{e + 1:>6} {means[e]:>9.3f} {smoothed[e]:>9.3f} "
              f"{np.mean([c['f1'] for c in cls['S']]):>6.3f} "
              f"{np.mean([c['sensitivity'] for c in cls['S']]):>6.1%} "
              f"{np.mean([c['ppv'] or 0 for c in cls['S']]):>6.1%} "
              f"{np.mean([c['f1'] for c in cls['V']]):>6.3f}    "
              + " ".join(f"{r['macro_f1']:.3f}" for r in reps))
    best = int(smoothed[1:-1].argmax()) + 2  # a full window on both sides
    print(f"\nchosen: {best} epochs (smoothed macro-F1 {smoothed[best - 1]:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
