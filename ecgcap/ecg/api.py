"""The ECG wing's public API, and the glue between command-line options and it."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from ecgcap.ecg import evaluation
from ecgcap.ecg.databases import get_database
from ecgcap.ecg.training import TrainConfig, train_beats
from ecgcap.runtime.errors import EcgcapError
from ecgcap.runtime.paths import find_dataset, make_run_dir


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A :class:`TrainConfig` from ``train_ecg``'s options."""
    config = TrainConfig(
        db=args.db, model=args.model, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, clipnorm=None if args.no_clip else args.clipnorm,
        units=args.units, recurrent_layers=args.layers, bidirectional=not args.unidirectional,
        patience=args.patience, class_weight_power=args.class_weight_power, split=args.split,
        seed=args.seed)
    if args.val_records:
        config = dataclasses.replace(
            config, val_records=tuple(r.strip() for r in args.val_records.split(",") if r.strip()))
    return config


def train_from_args(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """Run ``train_ecg``: locate the data, make the run folder, train; return (report, run dir)."""
    config = config_from_args(args)
    db = get_database(config.db)
    if db.task != "beats":
        raise EcgcapError("rhythm training is not implemented yet", input=f"--db {db.name}")
    db_dir = find_dataset(db.name, "RECORDS", args.data_dir)
    run_dir = make_run_dir(args.name or f"{db.name}-{config.model}-seed{config.seed}",
                           args.runs_dir, overwrite=args.overwrite, resume=args.resume)
    report = train_beats(config, db, db_dir, run_dir, resume=args.resume, quiet=args.quiet)
    return report, run_dir


def format_report(report: dict[str, Any]) -> str:
    """The test table and confusion matrix of a training report, for the terminal."""
    head = (f"{report['config']['model']} on {report['config']['db']} "
            f"(best epoch {report['best_epoch']} of {report['epochs_run']}, "
            f"selected on validation macro-F1 {report['val']['macro_f1']:.3f}); test records:")
    return "\n".join([head, evaluation.format_table(report["test"]), "",
                      evaluation.format_confusion(report["test"])])
