"""``python -m ecgcap.train_ecg``: train an ECG classifier on a PhysioNet database.

Parses options, calls :func:`ecgcap.ecg.training.train_beats` (mitdb, a label per beat) or
:func:`ecgcap.ecg.rhythm_training.train_rhythm` (cinc2017, a label per recording), prints the
results table. Options left out take the task's defaults (shown per task in the help).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ecgcap.runtime.cli import (
    int_list,
    make_parser,
    positive_float,
    positive_int,
    run,
    say,
    setup_runtime,
)


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("train_ecg", "Train an LSTM (or SimpleRNN baseline) ECG classifier.",
                         run_folder=True, distribute=True)
    parser.add_argument("--db", default="mitdb",
                        help="database from the registry: mitdb (beats) or cinc2017 (rhythm)")
    parser.add_argument("--model", default="lstm",
                        choices=("lstm", "simplernn", "lstm-seq", "simplernn-seq"),
                        help="recurrent cell; simplernn is the baseline on equal terms. "
                             "mitdb: lstm-seq (simplernn-seq) labels windows of consecutive "
                             "beats at once, each beat in its context (--context, --leads)")
    parser.add_argument("--context", type=positive_int, default=16, metavar="N",
                        help="lstm-seq: beats per window (inference: windows overlap by half, "
                             "each beat labelled from the window where it is most central); "
                             "default 16, chosen in a DS1 cross-validation over 16 and 32")
    parser.add_argument("--leads", default="mlii", choices=("both", "mlii"),
                        help="lstm-seq: MLII only (default, chosen in the DS1 cross-validation), "
                             "or MLII and the record's other lead (V1, V2, V4 or V5 in mitdb; "
                             "an absent one as zeros with a flag)")
    parser.add_argument("--lead-dropout", type=float, default=0.2, metavar="P",
                        help="lstm-seq --leads both: share of training windows whose second "
                             "lead is dropped, so one-lead records are classified well")
    parser.add_argument("--beat-encoder", default="conv", choices=("conv", "lstm"),
                        help="lstm-seq: how each beat is embedded: conv blocks (default) or "
                             "conv blocks and a recurrent layer over the beat's samples, as "
                             "in the per-beat model")
    parser.add_argument("--split", default="inter-patient",  # mitdb only
                        choices=("inter-patient", "random-beats"),
                        help="inter-patient: de Chazal DS1 (train, with a patient-wise validation "
                             "hold-out) / DS2 (test). random-beats: a random beat-level split that "
                             "LEAKS PATIENTS between train and test (optimistic scores)")
    parser.add_argument("--val-records", default=None, metavar="R,R,...",
                        help="mitdb: patient-wise validation records inside DS1 "
                             "(default 118,124,205,215,220); 'none': train on all of DS1 "
                             "for --epochs epochs, without early stopping")
    parser.add_argument("--train-records", default=None, metavar="R,R,...",
                        help="mitdb: train on these DS1 records only (default: DS1 minus the "
                             "validation records), e.g. for learning curves or quick runs")
    parser.add_argument("--folds", type=int, default=0,
                        help="cinc2017: k-fold cross-validation, stratified by label (e.g. 5); "
                             "default 0: one stratified 70/10/20 train/validation/test split")
    parser.add_argument("--fold", type=positive_int, default=None,
                        help="cinc2017 with --folds: train and test only this fold (1..k)")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help="maximum epochs; default 30 (mitdb), 45 (cinc2017)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="default 256 beats (mitdb), 32 recordings (cinc2017)")
    parser.add_argument("--learning-rate", type=positive_float, default=1e-3)
    parser.add_argument("--clipnorm", type=positive_float, default=1.0,
                        help="gradient clipping by norm")
    parser.add_argument("--no-clip", action="store_true", help="turn gradient clipping off")
    parser.add_argument("--units", type=positive_int, default=64, help="units per recurrent layer")
    parser.add_argument("--layers", type=positive_int, default=None,
                        help="recurrent layers; default 1 (mitdb), 2 (cinc2017)")
    parser.add_argument("--conv-filters", type=int_list, default=None, metavar="F,F,...",
                        help="filters of the Conv1D + pooling blocks in front of the recurrent "
                             "layers, one per block; default 32,32 (mitdb), "
                             "32,32,64,64,128,128 (cinc2017)")
    parser.add_argument("--unidirectional", action="store_true",
                        help="one direction only (default: bidirectional)")
    parser.add_argument("--patience", type=positive_int, default=None,
                        help="early stopping: epochs without a better validation score "
                             "(macro-F1 for mitdb, challenge score for cinc2017); "
                             "default 6 (mitdb); cinc2017: --epochs (45), so the cosine "
                             "schedule runs to its end (the plateau runs used 10)")
    parser.add_argument("--lr-patience", type=int, default=None, metavar="N",
                        help="cinc2017 with --schedule plateau: halve the learning rate after N "
                             "epochs without a better validation score (Keras "
                             "ReduceLROnPlateau; default 2); 0: constant")
    parser.add_argument("--schedule", default=None, choices=("plateau", "cosine"),
                        help="cinc2017: learning-rate schedule; cosine (default): half a "
                             "cosine down to 1/16 over --epochs (Keras LearningRateScheduler); "
                             "plateau: halve it when the validation score stalls (--lr-patience)")
    parser.add_argument("--crop-seconds", type=positive_float, default=None, metavar="S",
                        help="cinc2017: the window the model sees: one random S-second crop per "
                             "recording and epoch in training, S-second crops every S/2 "
                             "seconds averaged in evaluation and inference (default 30)")
    parser.add_argument("--ema", type=float, default=None, metavar="MOMENTUM",
                        help="cinc2017: validate, select and ship the exponential moving "
                             "average of the weights with this momentum (Keras Adam use_ema, "
                             "e.g. 0.99); 0: the raw weights (default)")
    parser.add_argument("--class-weight-power", type=float, default=0.5,
                        help="class weights = (inverse frequency)^power; 1 = balanced, 0 = none")
    parser.add_argument("--log-gradients", action="store_true",
                        help="log the gradient norm of each layer (before clipping) on a fixed "
                             "validation batch every epoch: history, report.json, plot")
    parser.add_argument("--pipeline", default="memory", choices=("memory", "shards"),
                        help="memory holds the prepared beats or recordings in memory; shards "
                             "prepares records in parallel into NumPy shards and streams batches "
                             "from them (always used with --distribute; cinc2017 with --folds "
                             "then needs --fold K, one fold per job)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run folder's last checkpoint")
    return parser


def _work(args: argparse.Namespace) -> int:
    setup_runtime(args)
    from ecgcap.ecg import api

    if args.model.endswith("-seq"):
        from ecgcap.ecg.sequence import train_from_args

        report, run_dir = train_from_args(args)
    else:
        report, run_dir = api.train_from_args(args)
    if "worker" in report:
        say(args, f"worker {report['worker']} finished after {report['epochs_run']} epochs; "
                  "the chief writes the model and report")
        return 0
    print(api.format_report(report))
    say(args, f"model, report.json and plots written to {run_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), _work, argv)


if __name__ == "__main__":
    sys.exit(main())
