"""The ECG wing's public API, and the glue between command-line options and it."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

from ecgcap.ecg import evaluation
from ecgcap.ecg.databases import get_database
from ecgcap.ecg.recordings import RhythmConfig
from ecgcap.ecg.rhythm_training import RhythmTrainConfig, train_rhythm
from ecgcap.ecg.training import TrainConfig, train_beats
from ecgcap.runtime.cli import finish_worker, tidy_on_failure, training_run_dir
from ecgcap.runtime.errors import EcgcapError
from ecgcap.runtime.paths import DATA_ENV, find_dataset, make_run_dir, resolve_data_dir

URL_ENV = "ECGCAP_PHYSIONET_URL"  # a PhysioNet mirror, e.g. https://physionet.org/files


def _common_options(args: argparse.Namespace) -> dict[str, Any]:
    """Options shared by both tasks; ``None`` (left out) keeps the task's default."""
    if args.class_weight_power < 0:
        raise EcgcapError("must be 0 or more", input=f"--class-weight-power "
                                                     f"{args.class_weight_power}")
    options = dict(
        db=args.db, model=args.model, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, clipnorm=None if args.no_clip else args.clipnorm,
        units=args.units, recurrent_layers=args.layers, bidirectional=not args.unidirectional,
        patience=args.patience, class_weight_power=args.class_weight_power, seed=args.seed,
        log_gradients=args.log_gradients, conv_filters=args.conv_filters)
    return {k: v for k, v in options.items() if v is not None or k == "clipnorm"}


def rhythm_config_from_args(args: argparse.Namespace) -> RhythmTrainConfig:
    """A :class:`RhythmTrainConfig` from ``train_ecg``'s options."""
    if args.val_records or args.train_records or args.split != "inter-patient":
        raise EcgcapError("--split, --val-records and --train-records apply to mitdb only; "
                          "use --folds",
                          input=f"--db {args.db}")
    if args.folds and args.fold is None and _pipeline(args) == "shards":
        raise EcgcapError("streamed (and distributed) cross-validation runs one fold per job; "
                          "add --fold K", input=f"--folds {args.folds}")
    if args.fold is not None and not args.folds:
        raise EcgcapError("--fold needs --folds", input=f"--fold {args.fold}")
    if args.fold is not None and args.fold > args.folds:
        raise EcgcapError(f"fold must be between 1 and {args.folds}", input=f"--fold {args.fold}")
    extra = {}
    schedule = args.schedule or RhythmTrainConfig.schedule
    if args.lr_patience is not None:
        if args.lr_patience < 0:
            raise EcgcapError("must be 0 or more", input=f"--lr-patience {args.lr_patience}")
        if schedule != "plateau":
            raise EcgcapError("applies to --schedule plateau only (the default is cosine)",
                              input=f"--lr-patience {args.lr_patience}")
        extra["lr_patience"] = args.lr_patience
    if args.ema is not None:
        if not 0 <= args.ema < 1:
            raise EcgcapError("must be in [0, 1)", input=f"--ema {args.ema}")
        extra["ema_momentum"] = args.ema
    if args.schedule is not None:
        extra["schedule"] = args.schedule
    if schedule == "cosine" and args.patience is None and args.epochs is not None:
        extra["patience"] = args.epochs    # the cosine runs to its end
    if args.crop_seconds is not None:
        if args.crop_seconds < RhythmConfig.min_seconds:
            raise EcgcapError(f"must be at least {RhythmConfig.min_seconds:g} s, the shortest "
                              "recording accepted", input=f"--crop-seconds {args.crop_seconds:g}")
        extra["rhythm"] = RhythmConfig(crop_seconds=args.crop_seconds,  # overlapping by half
                                       stride_seconds=args.crop_seconds / 2)
    return RhythmTrainConfig(**_common_options(args), folds=args.folds, fold=args.fold,
                             pipeline=_pipeline(args), **extra)


def _pipeline(args: argparse.Namespace) -> str:
    return "shards" if args.distribute != "none" else args.pipeline


def _records(text: str, option: str) -> tuple[str, ...]:
    records = tuple(dict.fromkeys(r.strip() for r in text.split(",") if r.strip()))
    if not records:
        raise EcgcapError("names no record", input=f"{option} {text}")
    return records


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A :class:`TrainConfig` from ``train_ecg``'s options."""
    if (args.folds or args.fold is not None or args.lr_patience is not None
            or args.ema is not None or args.schedule is not None
            or args.crop_seconds is not None):
        raise EcgcapError("--folds, --fold, --lr-patience, --schedule, --crop-seconds and --ema "
                          "apply to cinc2017 only",
                          input=f"--db {args.db}")
    config = TrainConfig(**_common_options(args), split=args.split,
                         pipeline=_pipeline(args))
    if args.val_records and args.val_records.strip().lower() == "none":
        if config.split != "inter-patient" or config.pipeline == "shards":
            raise EcgcapError("training without validation records runs on the inter-patient "
                              "split, in memory", input="--val-records none")
        config = dataclasses.replace(config, val_records=())
    elif args.val_records:
        config = dataclasses.replace(
            config, val_records=_records(args.val_records, "--val-records"))
    if args.train_records:
        config = dataclasses.replace(
            config, train_records=_records(args.train_records, "--train-records"))
    return config


def train_from_args(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """Run ``train_ecg``: locate the data, make the run folder, train; return (report, run dir)."""
    db = get_database(args.db)
    config = rhythm_config_from_args(args) if db.task == "rhythm" else config_from_args(args)
    name = args.name or f"{db.name}-{config.model}-seed{config.seed}"
    if args.name is None and isinstance(config, RhythmTrainConfig) and config.fold and \
            config.pipeline == "shards":
        name += f"-fold{config.fold}"  # streamed folds are separate jobs, each its own run
    if config.pipeline != "shards":  # a run folder in the way is refused before any download
        make_run_dir(name, args.runs_dir, overwrite=args.overwrite, resume=args.resume,
                     check_only=True)
    db_dir = locate_or_download(db.name, args.data_dir, quiet=args.quiet)
    train = train_rhythm if isinstance(config, RhythmTrainConfig) else train_beats
    with tidy_on_failure(args.runs_dir) as made:
        run_dir, dist = training_run_dir(args, name, config)
        made.append(run_dir)
        report = train(config, db, db_dir, run_dir, resume=args.resume, quiet=args.quiet,
                       distribution=dist)
    finish_worker(dist, run_dir)
    return report, run_dir


def locate_or_download(name: str, data_dir: str | None = None, *, quiet: bool = False) -> Path:
    """The folder of database ``name``: found locally, or downloaded into the data cache.

    Only the default cache (``data/``) is downloaded into; a folder named by ``--data-dir`` or
    ``$ECGCAP_DATA`` that lacks the database is an error naming it.
    """
    from ecgcap.ecg.download import PHYSIONET_URL, download_database

    db = get_database(name)
    try:
        return find_dataset(db.name, "RECORDS", data_dir)
    except EcgcapError:
        if data_dir is not None or os.environ.get(DATA_ENV):
            raise
    base_url = os.environ.get(URL_ENV, PHYSIONET_URL)
    extra = ("RECORDS", db.reference) if db.reference else ("RECORDS",)
    return download_database(db.slug, resolve_data_dir() / db.name, extensions=db.extensions,
                             extra_files=extra, base_url=base_url, quiet=quiet)


def format_report(report: dict[str, Any]) -> str:
    """The test table and confusion matrix of a training report, for the terminal."""
    if report["test"]["kind"] == "challenge":
        from ecgcap.ecg.rhythm_training import format_report as format_rhythm

        return format_rhythm(report)
    chosen = (f"selected on validation macro-F1 {report['val']['macro_f1']:.3f}"
              if report.get("val") else "no validation part: the last epoch")
    head = (f"{report['config']['model']} on {report['config']['db']} "
            f"(best epoch {report['best_epoch']} of {report['epochs_run']}, {chosen}); "
            "test records:")
    return "\n".join([head, evaluation.format_table(report["test"]), "",
                      evaluation.format_confusion(report["test"])])
