"""Patient-wise 4-fold cross-validation inside MIT-BIH DS1, for choosing settings honestly.

The five-record validation hold-out that picks a run's epoch is too small to compare settings:
its macro-F1 (0.81-0.86) says little about new patients (DS2: 0.48-0.55). Pooled out-of-fold
predictions over all 22 DS1 patients track DS2 far better (0.48-0.51). DS2 is never loaded here.

    ECGCAP_DATA=../shared/data python benchmarks/ecg_ds1_cv.py [--epochs 10] [--seeds 0 1]
        [--class-weight-power 0.5] [--model lstm] [--rr all|relative]

``--rr relative`` (the default, ``BeatConfig.rr_seconds=False``) blanks the four RR intervals
in seconds and keeps only their ratios to the patient's own rhythm; ``--rr all`` feeds both.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

# Folds of DS1 patients, each holding some of the S-rich records (209, 201, 207, 118, 220, 223).
FOLDS = (("209", "101", "106", "112", "115", "230"), ("201", "118", "108", "109", "122"),
         ("207", "220", "114", "116", "119", "203"), ("223", "124", "205", "215", "208"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--class-weight-power", type=float, default=0.5)
    parser.add_argument("--model", default="lstm", choices=("lstm", "simplernn"))
    parser.add_argument("--rr", default="relative", choices=("all", "relative"),
                        help="RR features: all 8, or only the 4 ratios")
    args = parser.parse_args()

    import keras

    from ecgcap.ecg.api import locate_or_download
    from ecgcap.ecg.databases import MITDB_DS1, get_database
    from ecgcap.ecg.evaluation import aami_report, format_table
    from ecgcap.ecg.training import BeatBatches, TrainConfig, build_model, class_weights

    assert sorted(sum(FOLDS, ())) == sorted(MITDB_DS1)
    from ecgcap.ecg.dataset import BeatConfig, load_beats

    db = get_database("mitdb")
    data = load_beats(locate_or_download("mitdb"), db, list(MITDB_DS1),
                      BeatConfig(rr_seconds=args.rr == "all"), quiet=True)
    y = np.array([db.classes.index(c) for c in data["label"]])
    config = TrainConfig(model=args.model)
    for seed in args.seeds:
        t0 = time.perf_counter()
        pred = np.zeros(len(y), dtype=np.int64)
        for k, fold in enumerate(FOLDS):
            keras.utils.set_random_seed(seed * 100 + k)
            test = np.isin(data["record"], fold)
            train = ~test
            model = build_model(config, len(db.classes))
            model.get_layer("rr_norm").adapt(data["rr"][train])
            model.compile(keras.optimizers.Adam(config.learning_rate, clipnorm=config.clipnorm),
                          "sparse_categorical_crossentropy")
            w = class_weights(y[train], len(db.classes), args.class_weight_power)
            w[db.classes.index("Q")] = 0.0
            batches = BeatBatches({"beat": data["beat"][train], "rr": data["rr"][train]},
                                  y[train], np.array([w[i] for i in y[train]], np.float32),
                                  config.batch_size, augment=config.augment, seed=seed)
            model.fit(batches, epochs=args.epochs, callbacks=[batches.callback()],
                      shuffle=False, verbose=0)
            probs = model.predict({"beat": data["beat"][test], "rr": data["rr"][test]},
                                  batch_size=2048, verbose=0)
            pred[test] = probs.argmax(-1)
        report = aami_report(y, pred, db.classes)
        print(f"\nseed {seed}: pooled out-of-fold DS1, {args.model}, {args.epochs} epochs, "
              f"class-weight power {args.class_weight_power}, RR {args.rr} "
              f"({time.perf_counter() - t0:.0f} s)")
        print(format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
