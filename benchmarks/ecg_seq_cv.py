"""Patient-wise 4-fold cross-validation inside MIT-BIH DS1 for the beat-sequence models.

The folds of ``benchmarks/ecg_ds1_cv.py``; each fold trains ``--model`` (lstm-seq or
simplernn-seq) on all the other DS1 records for ``--per-epoch N`` epochs (no validation part,
no early stopping), its held-out records are predicted (windows stitched as in inference)
after every epoch, and the pooled out-of-fold scores are printed per epoch (mean over
``--seeds``), with the choice rule of ``ecg_ds1_cv.py`` (best macro-F1 averaged over the epoch
and its neighbours). DS2 is never loaded. Finished folds are reused from ``--runs-dir``.

    ECGCAP_DATA=../shared/data python benchmarks/ecg_seq_cv.py --context 32 --leads both \
        --per-epoch 10 [--seeds 0] [--model lstm-seq] [--runs-dir runs/seq_cv]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from ecg_ds1_cv import FOLDS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lstm-seq", choices=("lstm-seq", "simplernn-seq"))
    parser.add_argument("--context", type=int, default=32)
    parser.add_argument("--leads", default="both", choices=("both", "mlii"))
    parser.add_argument("--lead-dropout", type=float, default=0.2)
    parser.add_argument("--class-weight-power", type=float, default=0.5,
                        help="class weights = (inverse frequency)^power, as train_ecg's")
    parser.add_argument("--beat-encoder", default="conv", choices=("conv", "lstm"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--per-epoch", type=int, default=10, metavar="N")
    parser.add_argument("--runs-dir", default="runs/seq_cv")
    args = parser.parse_args()
    if args.per_epoch < 3:
        parser.error("--per-epoch needs at least 3 epochs (the choice averages neighbours)")

    import keras

    from ecgcap.ecg.api import locate_or_download
    from ecgcap.ecg.databases import MITDB_DS1, get_database
    from ecgcap.ecg.dataset import load_beat_leads
    from ecgcap.ecg.evaluation import aami_report
    from ecgcap.ecg.sequence import (
        SequenceScores,
        SequenceSettings,
        SequenceTrainConfig,
        WindowBatches,
        build_sequence_model,
        compile_sequence_model,
        model_inputs,
    )
    from ecgcap.ecg.training import _weights
    from ecgcap.runtime.seed import set_seed

    assert sorted(sum(FOLDS, ())) == sorted(MITDB_DS1)
    db = get_database("mitdb")
    config = SequenceTrainConfig(model=args.model, context=args.context, leads=args.leads,
                                 lead_dropout=args.lead_dropout,
                                 class_weight_power=args.class_weight_power,
                                 beat_encoder=args.beat_encoder)
    settings = SequenceSettings.of(config)
    data = load_beat_leads(locate_or_download("mitdb"), db, list(MITDB_DS1), config.beats,
                           quiet=True)
    y = np.array([db.classes.index(c) for c in data["label"]])
    setting = f"{args.model}-ctx{args.context}-{args.leads}" + \
        (f"-drop{args.lead_dropout:g}" if args.leads == "both" else "") + \
        (f"-cw{args.class_weight_power:g}" if args.class_weight_power != 0.5 else "") + \
        ("-lstmenc" if args.beat_encoder == "lstm" else "")
    folder = Path(args.runs_dir) / setting
    folder.mkdir(parents=True, exist_ok=True)
    scores = []
    for seed in args.seeds:
        preds = np.zeros((args.per_epoch, len(y)), dtype=np.int64)
        t0 = time.perf_counter()
        for k, fold in enumerate(FOLDS, start=1):
            test = np.isin(data["record"], fold)
            saved = folder / f"seed{seed}-fold{k}-{args.per_epoch}.npy"
            if not saved.is_file():
                set_seed(seed)
                train = ~test
                x_train = model_inputs(data, args.leads, train)
                model = build_sequence_model(args.model, settings, config.beats,
                                             len(db.classes))
                compile_sequence_model(model, x_train["rr"], config.learning_rate,
                                       config.clipnorm)
                w = _weights(config, y[train], db.classes)
                batches = WindowBatches(
                    x_train, y[train], np.array([w[i] for i in y[train]], np.float32),
                    data["record"][train], args.context,
                    max(config.batch_size // args.context, 1), augment=config.augment,
                    lead_dropout=args.lead_dropout if args.leads == "both" else 0.0, seed=seed)
                scoring = SequenceScores(model_inputs(data, args.leads, test),
                                         data["record"][test], args.context)
                model.fit(batches, epochs=args.per_epoch, shuffle=False, verbose=0,
                          callbacks=[batches.callback(), scoring])
                np.save(saved, np.stack(scoring.predictions))
                print(f"seed {seed} fold {k} done ({time.perf_counter() - t0:.0f} s)",
                      flush=True)
            preds[:, test] = np.load(saved)
        scores.append([aami_report(y, p, db.classes) for p in preds])
    print(f"\npooled out-of-fold DS1, {setting}, no validation part, mean over seeds "
          f"{' '.join(map(str, args.seeds))}")
    print(f"{'epochs':>6} {'macro-F1':>9} {'smoothed':>9} {'S F1':>6} {'S Se':>6} {'S +P':>6} "
          f"{'V F1':>6} {'F F1':>6} {'per seed':>10}")
    means = np.array([np.mean([s[e]["macro_f1"] for s in scores]) for e in range(args.per_epoch)])
    smoothed = np.array([means[max(e - 1, 0):e + 2].mean() for e in range(args.per_epoch)])
    rows = []
    for e in range(args.per_epoch):
        reps = [s[e] for s in scores]
        cls = {c: [r["per_class"][c] for r in reps] for c in "SVF"}
        row = {"epochs": e + 1, "macro_f1": means[e], "smoothed": smoothed[e],
               "S_f1": np.mean([c["f1"] for c in cls["S"]]),
               "S_se": np.mean([c["sensitivity"] for c in cls["S"]]),
               "S_ppv": np.mean([c["ppv"] or 0 for c in cls["S"]]),
               "V_f1": np.mean([c["f1"] for c in cls["V"]]),
               "F_f1": np.mean([c["f1"] for c in cls["F"]])}
        rows.append({k: float(v) for k, v in row.items()})
        print(f"{e + 1:>6} {means[e]:>9.3f} {smoothed[e]:>9.3f} {row['S_f1']:>6.3f} "
              f"{row['S_se']:>6.1%} {row['S_ppv']:>6.1%} {row['V_f1']:>6.3f} "
              f"{row['F_f1']:>6.3f}    " + " ".join(f"{r['macro_f1']:.3f}" for r in reps))
    best = int(smoothed[1:-1].argmax()) + 2  # a full window on both sides
    print(f"\nchosen: {best} epochs (smoothed macro-F1 {smoothed[best - 1]:.3f})")
    (folder / f"summary-{args.per_epoch}.json").write_text(json.dumps(
        {"setting": setting, "seeds": args.seeds, "rows": rows, "chosen": best}, indent=1))
    keras.backend.clear_session()
    return 0


if __name__ == "__main__":
    sys.exit(main())
