"""Training and evaluating the rhythm classifiers (one label per recording, CinC 2017).

``train_rhythm`` is the whole job of ``python -m ecgcap.train_ecg --db cinc2017``. Records are
split with a fixed seed, stratified by label: one train / validation / test split, or k folds
(``--folds 5``) where each fold in turn is the test part and the rest is split again into train
and validation. Each part trains with class weighting, gradient clipping and early stopping on
the validation challenge score, checkpoints every epoch (``--resume`` continues), and is scored
on its test records only. Nothing is ever chosen on test records.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from ecgcap.ecg import evaluation, io, plots
from ecgcap.ecg.databases import Database
from ecgcap.ecg.models import BUILDERS
from ecgcap.ecg.recordings import (
    HRV_WIDTH,
    RhythmConfig,
    load_recordings,
    pad_batch,
    predict_recordings,
    write_recording_shards,
)
from ecgcap.ecg.training import class_weights, write_outputs
from ecgcap.runtime.batches import ShuffledBatches
from ecgcap.runtime.checkpoint import (
    RESUMABLE_OPTIONS,
    Checkpoint,
    StopOnSignal,
    backup_epoch,
    check_resume_config,
    check_same_model,
    checkpoint_files,
    fit_resumable,
    gradient_log,
    streamed_checkpoint,
)
from ecgcap.runtime.distribute import Distribution, no_distribution
from ecgcap.runtime.errors import EXIT_USAGE, EcgcapError
from ecgcap.runtime.files import atomic_write_json
from ecgcap.runtime.modelfile import load_model, save_model
from ecgcap.runtime.shards import ShardSet, steps_per_epoch, stream


def crop_recordings(signals: Sequence[np.ndarray], keys: np.ndarray, *, crop: int, seed: int,
                    epoch: int, augment: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A training batch: a random ``crop``-sample window of each recording, padded, with its
    mask, drawn per recording from ``(seed, epoch, key)`` so a recording gets the same window
    whichever batch or worker it lands in.

    Augmentation of the waveform (channel 0) keeps the rhythm true: amplitude scaling
    (0.8-1.2), polarity flips (hand-held recorders are often held the other way round) and
    white noise.
    """
    crops, rngs = [], []
    for signal, key in zip(signals, keys, strict=True):
        rng = np.random.default_rng([seed, epoch, int(key)])
        start = int(rng.integers(0, len(signal) - crop + 1)) if len(signal) > crop else 0
        crops.append(signal[start:start + crop])
        rngs.append(rng)
    x, mask = pad_batch(crops)
    if augment:
        for j, rng in enumerate(rngs):
            gain = rng.uniform(0.8, 1.2) * rng.choice([-1.0, 1.0])
            wave = x[j, :, 0] * gain + rng.normal(0, 0.05, x.shape[1])
            x[j, :, 0] = (wave * mask[j]).astype(np.float32)
    return x, mask


class RecordingBatches(ShuffledBatches):
    """Training batches: a random crop per recording (:func:`crop_recordings`), padded with a
    mask, plus sample weights."""

    def __init__(self, signals: Sequence[np.ndarray], rr: np.ndarray, y: np.ndarray,
                 weights: np.ndarray, batch_size: int, crop: int, *, augment: bool = True,
                 use_rr: bool = True, seed: int = 0, epoch: int = 0):
        super().__init__(len(y), batch_size, seed=seed, epoch=epoch)
        self.signals, self.rr, self.y, self.w, self.crop = list(signals), rr, y, weights, crop
        self.augment, self.use_rr = augment, use_rr

    def __getitem__(self, i: int):
        idx = self.batch_indices(i)
        x, mask = crop_recordings([self.signals[j] for j in idx], idx, crop=self.crop,
                                  seed=self.seed, epoch=self.epoch, augment=self.augment)
        inputs = {"signal": x, "mask": mask}
        if self.use_rr:
            inputs["rr"] = self.rr[idx]
        return inputs, self.y[idx], self.w[idx]


RHYTHM_MODEL = "ecg-rhythm"


@dataclass
class RhythmTrainConfig:
    """Everything that defines a rhythm training run (saved in ``report.json``)."""

    db: str = "cinc2017"
    model: str = "lstm"
    epochs: int = 45
    batch_size: int = 32
    learning_rate: float = 1e-3
    clipnorm: float | None = 1.0
    units: int = 64
    recurrent_layers: int = 2
    bidirectional: bool = True
    conv_filters: tuple[int, ...] = (32, 32, 64, 64, 128, 128)
    kernel_size: int = 7
    pool_size: int = 2
    pooling: str = "mean-max"
    hrv: bool = True
    dropout: float = 0.3
    class_weight_power: float = 0.5
    augment: bool = True
    patience: int = 45          # = epochs: the cosine schedule runs to its end (the best
                                # validation epoch is kept); 10 suits "plateau"
    schedule: str = "cosine"    # from learning_rate down to 1/16 of it over the epochs,
                                # whatever the validation score; or "plateau":
    lr_patience: int = 2        # halve the learning rate after this many epochs without a
                                # better validation score (0: constant learning rate)
    ema_momentum: float = 0.0   # > 0: validate, select and ship the exponential moving average
                                # of the weights (Keras' Adam use_ema); 0: the raw weights
    log_gradients: bool = False
    pipeline: str = "memory"    # or "shards": stream from shards (always when distributed)
    folds: int = 0              # 0: one split; k >= 2: k-fold cross-validation
    fold: int | None = None     # with folds: run only this fold (1..k)
    test_fraction: float = 0.2  # one split only
    val_fraction: float = 0.1   # of the non-test records, for early stopping
    split_seed: int = 0
    seed: int = 0
    rhythm: RhythmConfig = field(default_factory=RhythmConfig)


def stratified_splits(labels: np.ndarray, config: RhythmTrainConfig) -> list[dict[str, np.ndarray]]:
    """Index arrays ``{"train", "val", "test"}``: one split, or one per fold.

    Stratified by label with ``split_seed``; validation is carved out of the non-test part.
    """
    labels = np.asarray(labels)
    index = np.arange(len(labels))
    n_classes = len(set(labels.tolist()))
    if config.folds == 1 or config.folds < 0:
        raise EcgcapError("need at least 2 folds (or 0 for one split)",
                          input=f"--folds {config.folds}")
    if config.folds:
        kfold = StratifiedKFold(config.folds, shuffle=True, random_state=config.split_seed)
        outer = [(rest, test) for rest, test in kfold.split(index, labels)]
    else:
        rest, test = train_test_split(index, test_size=_part_size(len(index), n_classes,
                                                                  config.test_fraction),
                                      stratify=labels, random_state=config.split_seed)
        outer = [(rest, test)]
    splits = []
    for rest, test in outer:
        train, val = train_test_split(rest, test_size=_part_size(len(rest), n_classes,
                                                                 config.val_fraction),
                                      stratify=labels[rest], random_state=config.split_seed)
        splits.append({"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)})
    return splits


def _part_size(n: int, n_classes: int, fraction: float) -> int:
    """Records in a stratified part: ``fraction`` of ``n``, at least one per class."""
    return max(int(round(fraction * n)), n_classes)


class ValidationScore(keras.callbacks.Callback):
    """Adds ``val_score`` (challenge score on the validation recordings, crops averaged)."""

    def __init__(self, signals, rr: np.ndarray, y: np.ndarray, classes, config: RhythmConfig,
                 distribution: Distribution | None = None):
        super().__init__()
        self.signals, self.rr, self.y = signals, rr, y
        self.classes, self.config = tuple(classes), config
        self.distribution = distribution if distribution and distribution.active else None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        predict = None
        if self.distribution is not None:  # every worker scores every recording itself
            def predict(inputs):
                return self.distribution.predict(self.model, inputs, len(inputs["mask"]))
        probs = predict_recordings(self.model, self.signals, self.rr, self.config,
                                   predict=predict)
        report = evaluation.challenge_report(self.y, probs.argmax(-1), self.classes)
        if logs is not None:
            logs["val_score"] = float(report["score"] or 0.0)


def lr_schedule(config: RhythmTrainConfig) -> list[keras.callbacks.Callback]:
    """The learning-rate schedule, as Keras callbacks.

    ``schedule="plateau"``: Keras' ``ReduceLROnPlateau`` on the validation score when
    ``config.lr_patience`` is set: the learning rate halves (down to 1/16 of the start) after
    ``lr_patience`` epochs without a better score. A resumed run keeps the learning rate it
    reached (it is saved with the optimizer) and starts counting epochs without improvement
    afresh. ``schedule="cosine"``: Keras' ``LearningRateScheduler`` with
    :func:`cosine_learning_rate`, set at each epoch's start from the epoch number and
    ``config.epochs`` alone (so a run resumed with the same ``--epochs`` is on the same curve;
    more epochs stretch the curve from the resumed epoch on).
    """
    if config.schedule == "cosine":
        return [keras.callbacks.LearningRateScheduler(
            lambda epoch, _rate: cosine_learning_rate(epoch, config.epochs,
                                                      config.learning_rate))]
    if config.schedule != "plateau":
        raise EcgcapError("unknown schedule; choose plateau or cosine",
                          input=f"--schedule {config.schedule}")
    if not config.lr_patience:
        return []
    return [keras.callbacks.ReduceLROnPlateau(
        monitor="val_score", mode="max", factor=0.5, patience=config.lr_patience,
        min_lr=config.learning_rate / 16, verbose=0)]


def cosine_learning_rate(epoch: int, epochs: int, start: float, floor: float = 1 / 16) -> float:
    """Half a cosine from ``start`` at epoch 0 down to ``start * floor`` at the last epoch
    (``epochs - 1``, counted from 0); epochs after it stay at the floor."""
    progress = min(epoch / max(epochs - 1, 1), 1.0)
    return start * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(config: RhythmTrainConfig) -> keras.optimizers.Optimizer:
    """Adam with gradient clipping and, with ``config.ema_momentum``, an exponential moving
    average of the weights (Keras' ``use_ema``; see :func:`ema_swap`)."""
    return keras.optimizers.Adam(config.learning_rate, clipnorm=config.clipnorm,
                                 use_ema=config.ema_momentum > 0,
                                 ema_momentum=config.ema_momentum or 0.99)


def ema_swap(config: RhythmTrainConfig) -> list[keras.callbacks.Callback]:
    """With ``config.ema_momentum``: Keras' ``SwapEMAWeights``, which puts the averaged
    weights into the model at every epoch's end, so the callbacks after it (validation score,
    learning-rate schedule, checkpoints) score, select and save the average; the raw weights
    come back for the next epoch. A resumed run continues from the saved (averaged) weights."""
    return [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if config.ema_momentum else []


def model_info(config: RhythmTrainConfig, db: Database) -> dict[str, Any]:
    """What inference needs to know about a rhythm model, stored inside its .keras file."""
    return {"kind": RHYTHM_MODEL, "db": db.name, "classes": list(db.classes),
            "cell": config.model, "rhythm": asdict(config.rhythm)}


def build_model(config: RhythmTrainConfig, n_classes: int) -> keras.Model:
    """The configured builder in its sequence form."""
    if config.model not in BUILDERS:
        raise EcgcapError(f"unknown model; choose one of {', '.join(BUILDERS)}",
                          input=f"--model {config.model}")
    return BUILDERS[config.model](
        masked=True, input_length=None, channels=config.rhythm.channels,
        rr_features=HRV_WIDTH if config.hrv else 0, classes=n_classes,
        conv_filters=config.conv_filters, kernel_size=config.kernel_size,
        pool_size=config.pool_size, recurrent_layers=config.recurrent_layers, units=config.units,
        bidirectional=config.bidirectional, dropout=config.dropout, pooling=config.pooling,
        name=f"{config.db}_{config.model}_rhythm")


def _config_json(config: RhythmTrainConfig) -> dict[str, Any]:
    out = asdict(config)
    out["conv_filters"] = list(config.conv_filters)
    return out


# what rhythm runs did before these options existed (configs saved then lack them)
LEGACY_OPTIONS = {"schedule": "plateau", "ema_momentum": 0.0}


def check_rhythm_config(files: Path | list[Path], config: RhythmTrainConfig, *,
                        strict: bool = False) -> None:
    """Refuse (exit 2, one line) the runs whose ``state.json`` (or ``report.json``) files are
    given when they were trained under other options than ``config``. A resumed run may change
    ``RESUMABLE_OPTIONS`` but not ``epochs`` under the cosine schedule, whose learning rate at
    each epoch depends on them; ``strict`` (reusing finished results) allows only ``fold`` and
    ``log_gradients``."""
    may_change = (frozenset({"fold", "log_gradients"}) if strict
                  else RESUMABLE_OPTIONS - {"epochs"} if config.schedule == "cosine"
                  else RESUMABLE_OPTIONS)
    check_resume_config(files, _config_json(config), may_change=may_change,
                        legacy=LEGACY_OPTIONS)


def _subset(data: dict[str, Any], idx: np.ndarray) -> dict[str, Any]:
    return {"signal": [data["signal"][i] for i in idx], "rr": data["rr"][idx],
            "label": data["label"][idx], "record": data["record"][idx]}


def _fixed_batch(part: dict[str, Any], config: RhythmTrainConfig, n: int = 32) -> dict:
    """The first ``n`` recordings of a part, first crop each, as one padded batch."""
    x, mask = pad_batch([s[:config.rhythm.crop] for s in part["signal"][:n]])
    out = {"signal": x, "mask": mask}
    if config.hrv:
        out["rr"] = part["rr"][:n]
    return out


def train_part(config: RhythmTrainConfig, db: Database, data: dict[str, Any],
               split: dict[str, np.ndarray], run_dir: Path, *, resume: bool = False,
               quiet: bool = False) -> dict[str, Any]:
    """Train on one split, select on validation, score on test; write model, report, plots."""
    run_dir.mkdir(parents=True, exist_ok=True)
    classes = db.classes
    to_index = {c: i for i, c in enumerate(classes)}
    parts = {k: _subset(data, v) for k, v in split.items()}
    y = {k: np.array([to_index[c] for c in v["label"]], dtype=np.int64) for k, v in parts.items()}
    state = None
    ckpt, state_file = run_dir / "checkpoint.keras", run_dir / "state.json"
    if resume and ckpt.is_file() and state_file.is_file():
        model, _ = load_model(ckpt, (RHYTHM_MODEL,))
        check_same_model(model, build_model(config, len(classes)), ckpt)
        state = json.loads(state_file.read_text())
    else:
        keras.utils.set_random_seed(config.seed)
        model = build_model(config, len(classes))
        if config.hrv:
            model.get_layer("rr_norm").adapt(parts["train"]["rr"])
        model.compile(optimizer=make_optimizer(config), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    info = model_info(config, db)
    checkpoint = Checkpoint(run_dir, info, monitor="val_score", patience=config.patience,
                            state=state, config=_config_json(config))
    weights = class_weights(y["train"], len(classes), config.class_weight_power)
    batches = RecordingBatches(
        parts["train"]["signal"], parts["train"]["rr"], y["train"],
        np.array([weights[i] for i in y["train"]], dtype=np.float32), config.batch_size,
        config.rhythm.crop, augment=config.augment, use_rr=config.hrv,
        seed=config.seed, epoch=checkpoint.state["epoch"])
    val = parts["val"]
    train_seconds = fit_resumable(
        model, batches, checkpoint, run_dir, epochs=config.epochs,
        initial_epoch=checkpoint.state["epoch"], shuffle=False,
        callbacks=[StopOnSignal(), batches.callback(), *ema_swap(config),
                   ValidationScore(val["signal"], val["rr"], y["val"], classes, config.rhythm),
                   *lr_schedule(config),
                   *gradient_log(config.log_gradients, _fixed_batch(val, config),
                                 y["val"][:32]),
                   checkpoint],
        verbose=0 if quiet else 2)
    best, _ = load_model(run_dir / "best.keras", (RHYTHM_MODEL,))
    report: dict[str, Any] = {
        "config": _config_json(config),
        "classes": list(classes),
        "class_weights": {classes[i]: w for i, w in weights.items()},
        "records": {k: v["record"].tolist() for k, v in parts.items()},
        "best_epoch": checkpoint.state["best_epoch"],
        "epochs_run": checkpoint.state["epoch"],
        "history": checkpoint.state["history"],
        "seconds": {"train": round(train_seconds, 1)},
    }
    _score(best, {part: parts[part] for part in ("val", "test")}, y, config.rhythm, classes,
           report)
    write_outputs(best, run_dir, info, report)
    return report


def _score(best: keras.Model, parts: dict[str, dict[str, Any]], y: dict[str, np.ndarray],
           rhythm: RhythmConfig, classes: tuple[str, ...], report: dict[str, Any]) -> None:
    """Challenge scores and predicted labels of ``parts`` (signals and rr) into ``report``."""
    for part, p in parts.items():
        probs = predict_recordings(best, p["signal"], p["rr"], rhythm)
        report[part] = evaluation.challenge_report(y[part], probs.argmax(-1), classes)
        report[f"{part}_predictions"] = [classes[i] for i in probs.argmax(-1)]


def _summary(values: list[float | None]) -> dict[str, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None}
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals))}


def train_rhythm(config: RhythmTrainConfig, db: Database, db_dir: Path, run_dir: Path, *,
                 resume: bool = False, quiet: bool = False,
                 distribution: Distribution | None = None) -> dict[str, Any]:
    """Train and evaluate on one split or on k folds; return (and write) the report.

    With folds, each fold lives in ``run_dir/foldK`` and the top-level report holds the
    per-fold scores, their mean and spread, and the test predictions of all folds pooled; the
    top-level ``model.keras`` is the fold model with the best validation score. With
    ``distribution`` (or ``config.pipeline == "shards"``) see :func:`train_rhythm_streamed`.
    """
    if (distribution is not None and distribution.active) or config.pipeline == "shards":
        return train_rhythm_streamed(config, db, db_dir, run_dir, quiet=quiet,
                                     distribution=distribution)
    if config.pipeline != "memory":
        raise EcgcapError("unknown pipeline; choose memory or shards",
                          input=f"--pipeline {config.pipeline}")
    if not config.folds:
        checkpoint_files(run_dir, resume=resume)  # refused before any work
    if resume:  # every fold trained so far, under the options it began with
        check_rhythm_config(sorted(run_dir.glob("fold*/state.json")) or run_dir / "state.json",
                            config)
    t0 = time.perf_counter()
    records = io.list_records(db_dir)
    data = load_recordings(db_dir, db, records, config.rhythm, quiet=quiet)
    prep_seconds = time.perf_counter() - t0
    splits = stratified_splits(data["label"], config)
    if not config.folds:
        report = train_part(config, db, data, splits[0], run_dir, resume=resume, quiet=quiet)
        report["seconds"]["prepare"] = round(prep_seconds, 1)
        atomic_write_json(run_dir / "report.json", report)
        return report
    wanted = range(1, config.folds + 1) if config.fold is None else [config.fold]
    if config.fold is not None and not 1 <= config.fold <= config.folds:
        raise EcgcapError(f"fold must be between 1 and {config.folds}",
                          input=f"--fold {config.fold}", exit_code=EXIT_USAGE)
    fold_reports = {}
    for k in wanted:
        fold_dir = run_dir / f"fold{k}"
        done = fold_dir / "report.json"
        if resume and done.is_file() and _fold_is_over(fold_dir, config):
            fold_reports[k] = json.loads(done.read_text())
            continue
        if not quiet:
            print(f"fold {k} of {config.folds}", flush=True)
        fold_reports[k] = train_part(config, db, data, splits[k - 1], fold_dir,
                                     resume=resume, quiet=quiet)
    return _folds_report(config, db, fold_reports, data, run_dir, prep_seconds)


def _fold_is_over(fold_dir: Path, config: RhythmTrainConfig) -> bool:
    """Whether a finished fold stays finished under ``config``: its model is written and its
    last checkpoint has reached ``config.epochs`` or spent ``config.patience``. A fold
    resumed with more epochs or more patience continues from that checkpoint instead."""
    state_file = fold_dir / "state.json"
    if not (fold_dir / "model.keras").is_file():
        return False
    if not state_file.is_file():
        return True
    state = json.loads(state_file.read_text())
    return state["epoch"] >= config.epochs or state["wait"] >= config.patience


def _folds_report(config: RhythmTrainConfig | dict[str, Any], db: Database,
                  fold_reports: dict[int, Any], data: dict[str, Any], run_dir: Path,
                  prep_seconds: float, **extra: Any) -> dict[str, Any]:
    """The top-level report of a cross-validation run (written with the best fold's model)."""
    ref = [c for r in fold_reports.values() for c in _labels_of(r, data, "test")]
    pred = [c for r in fold_reports.values() for c in r["test_predictions"]]
    best_fold = max(fold_reports, key=lambda k: fold_reports[k]["val"]["score"] or 0.0)
    report = {
        **extra,
        "config": config if isinstance(config, dict) else _config_json(config),
        "classes": list(db.classes),
        "folds": {str(k): {"test_score": r["test"]["score"], "f1_noise": r["test"]["f1_noise"],
                           "val_score": r["val"]["score"], "best_epoch": r["best_epoch"],
                           "epochs_run": r["epochs_run"], "train_seconds": r["seconds"]["train"]}
                  for k, r in fold_reports.items()},
        "test_score": _summary([r["test"]["score"] for r in fold_reports.values()]),
        "test_f1": {c: _summary([r["test"]["per_class"][c]["f1"] for r in fold_reports.values()])
                    for c in db.classes},
        "test": evaluation.challenge_report(ref, pred, db.classes),
        "best_fold": best_fold,
        "fold_records": {str(k): r["records"] for k, r in fold_reports.items()},
        "seconds": {"prepare": round(prep_seconds, 1),
                    "train": round(sum(r["seconds"]["train"] for r in fold_reports.values()), 1)},
    }
    shutil.copyfile(run_dir / f"fold{best_fold}" / "model.keras", run_dir / "model.keras.tmp")
    (run_dir / "model.keras.tmp").replace(run_dir / "model.keras")
    atomic_write_json(run_dir / "report.json", report)
    plots.plot_confusion(report["test"], run_dir / "confusion.png")
    return report


def ensemble_rhythm_runs(run_dirs: Sequence[Path], db: Database, db_dir: Path, out_dir: Path,
                         *, quiet: bool = True) -> dict[str, Any]:
    """Average finished k-fold rhythm runs ``run_dirs`` (e.g. one configuration trained from
    several seeds, each fold model's epoch chosen on its validation records) fold by fold into
    one model per fold (:func:`ecgcap.ecg.models.build_ensemble`); score each on its fold's
    validation and test records and write ``out_dir`` laid out like a k-fold run: ``foldK/``,
    the top-level ``report.json`` and ``model.keras`` (the fold with the best validation
    score). The runs must share their folds, records and rhythm settings."""
    from ecgcap.ecg.models import build_ensemble

    names = ", ".join(str(r) for r in run_dirs)
    if not run_dirs:
        raise EcgcapError("an ensemble needs at least one run", input="(no runs)")
    reports = []
    for r in run_dirs:
        path = Path(r) / "report.json"
        if not path.is_file():
            raise EcgcapError("not a finished run (no report.json)", input=str(r))
        reports.append(json.loads(path.read_text()))
    first = reports[0]
    if any("folds" not in r or len(r["folds"]) != r["config"]["folds"] for r in reports):
        raise EcgcapError("an ensemble is built from finished k-fold runs (every fold done)",
                          input=names)
    if any(r["fold_records"] != first["fold_records"]
           or r["config"]["rhythm"] != first["config"]["rhythm"] for r in reports):
        raise EcgcapError("runs of an ensemble must share their folds and rhythm settings",
                          input=names)
    rhythm = RhythmConfig(**first["config"]["rhythm"])
    t0 = time.perf_counter()
    data = load_recordings(db_dir, db, io.list_records(db_dir), rhythm, quiet=quiet)
    prep_seconds = time.perf_counter() - t0
    by_record = {r: i for i, r in enumerate(data["record"].tolist())}
    missing = sorted({r for part in first["fold_records"].values() for v in part.values()
                      for r in v} - set(by_record))
    if missing:
        raise EcgcapError(f"{len(missing)} records of the runs are not in the data folder "
                          f"(first: {missing[0]})", input=str(db_dir))
    classes = tuple(first["classes"])
    about = {"members": [str(r) for r in run_dirs],
             "member_seeds": [r["config"]["seed"] for r in reports]}
    out_dir = Path(out_dir)
    fold_reports = {}
    for k in sorted(first["folds"], key=int):
        loaded = [load_model(Path(r) / f"fold{k}" / "model.keras", (RHYTHM_MODEL,))
                  for r in run_dirs]
        info = {**loaded[0][1], "ensemble": len(run_dirs)}
        model = build_ensemble([m for m, _ in loaded])
        members = [json.loads((Path(r) / f"fold{k}" / "report.json").read_text())
                   for r in run_dirs]
        records = first["fold_records"][k]
        parts = {p: _subset(data, np.array([by_record[r] for r in records[p]], dtype=np.int64))
                 for p in ("val", "test")}
        y = {p: np.array([classes.index(c) for c in v["label"]]) for p, v in parts.items()}
        report: dict[str, Any] = {
            **about, "config": first["config"], "classes": list(classes), "records": records,
            "best_epoch": [m["best_epoch"] for m in members],
            "epochs_run": [m["epochs_run"] for m in members],
            "seconds": {"train": round(sum(m["seconds"]["train"] for m in members), 1)}}
        _score(model, parts, y, rhythm, classes, report)
        fold_dir = out_dir / f"fold{k}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        save_model(model, fold_dir / "model.keras", info)
        atomic_write_json(fold_dir / "report.json", report)
        plots.plot_confusion(report["test"], fold_dir / "confusion.png")
        fold_reports[int(k)] = report
        if not quiet:
            print(f"fold {k}: validation {report['val']['score']:.3f}, test "
                  f"{report['test']['score']:.3f}", flush=True)
    return _folds_report(first["config"], db, fold_reports, data, out_dir, prep_seconds,
                         **about)


def recording_stream(shards: ShardSet, subset: np.ndarray, classes: Sequence[str],
                     weights: dict[int, float], config: RhythmTrainConfig,
                     distribution: Distribution, first_epoch: int = 0) -> Any:
    """The training input of a streamed rhythm run: :func:`crop_recordings` of each batch."""
    import tensorflow as tf

    to_index = {c: i for i, c in enumerate(classes)}
    per_class = np.array([weights[i] for i in range(len(classes))], dtype=np.float32)

    def make_batch(ex: dict[str, Any], keys: np.ndarray, mask: np.ndarray, epoch: int):
        x, m = crop_recordings(ex["signal"], keys, crop=config.rhythm.crop, seed=config.seed,
                               epoch=epoch, augment=config.augment)
        inputs = {"signal": x, "mask": m}
        if config.hrv:
            inputs["rr"] = ex["rr"]
        y = np.array([to_index[c] for c in ex["label"]], dtype=np.int64)
        return inputs, y, per_class[y] * mask.astype(np.float32)

    x_spec = {"signal": tf.TensorSpec((None, None, config.rhythm.channels), tf.float32),
              "mask": tf.TensorSpec((None, None), tf.float32)}
    if config.hrv:
        x_spec["rr"] = tf.TensorSpec((None, HRV_WIDTH), tf.float32)
    signature = (x_spec, tf.TensorSpec((None,), tf.int64), tf.TensorSpec((None,), tf.float32))
    return distribution.dataset(lambda pipeline, pipelines, pieces: stream(
        shards, make_batch, signature, global_batch=config.batch_size, seed=config.seed,
        first_epoch=first_epoch, pipeline=pipeline, pipelines=pipelines, pieces=pieces,
        subset=subset))


def train_rhythm_streamed(config: RhythmTrainConfig, db: Database, db_dir: Path, run_dir: Path,
                          *, quiet: bool = False, distribution: Distribution | None = None
                          ) -> dict[str, Any]:
    """:func:`train_rhythm` on recordings streamed from shards, on one device or distributed.

    One split, or one fold (``--fold K``: each fold is its own job). Every worker keeps
    ``keras.callbacks.BackupAndRestore`` files in ``backup/`` (a restarted run continues from
    its last whole epoch); only the chief writes models, reports and plots; the other workers
    return ``{"worker": index, ...}``.
    """
    dist = distribution or Distribution()
    if config.folds and config.fold is None:
        raise EcgcapError("streamed (and distributed) cross-validation runs one fold per job; "
                          "add --fold K", input=f"--folds {config.folds}")
    if config.log_gradients:
        raise EcgcapError("gradient logging runs on the in-memory pipeline on one device",
                          input="--log-gradients")
    dist.check_batch(config.batch_size)
    part_dir = run_dir / f"fold{config.fold}" if config.folds else run_dir
    check_rhythm_config(part_dir / "backup" / "state.json", config)
    t0 = time.perf_counter()
    shards = write_recording_shards(db_dir, db, io.list_records(db_dir), config.rhythm,
                                    quiet=quiet or not dist.is_chief)
    prep_seconds = time.perf_counter() - t0
    data = {"label": shards.column("label"), "record": shards.column("record")}
    split = stratified_splits(data["label"], config)[(config.fold or 1) - 1]
    classes = db.classes
    to_index = {c: i for i, c in enumerate(classes)}
    y = {k: np.array([to_index[c] for c in data["label"][v]], dtype=np.int64)
         for k, v in split.items()}
    weights = class_weights(y["train"], len(classes), config.class_weight_power)
    val = shards.take(split["val"], ("signal", "rr"))

    backup = part_dir / "backup"
    first_epoch = backup_epoch(backup)
    dist.check_same(first_epoch, "the epoch to resume from", str(backup))
    with dist.scope():
        model = build_model(config, len(classes))
        if config.hrv:
            model.get_layer("rr_norm").adapt(shards.column("rr")[split["train"]])
        model.compile(optimizer=make_optimizer(config), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    example = next(iter(recording_stream(shards, split["train"], classes, weights, config,
                                         Distribution()).take(1)))
    dist.prepare_fit(model, tuple(tf_to_numpy(part) for part in example))
    info = model_info(config, db)
    checkpoint = streamed_checkpoint(part_dir, info, "val_score", config.patience, dist,
                                     backup, first_epoch, config=_config_json(config))
    train_seconds = fit_resumable(
        model, recording_stream(shards, split["train"], classes, weights, config, dist,
                                first_epoch),
        checkpoint, part_dir, epochs=config.epochs, initial_epoch=first_epoch, shuffle=False,
        steps_per_epoch=steps_per_epoch(len(split["train"]), config.batch_size),
        callbacks=[StopOnSignal(), *ema_swap(config),
                   ValidationScore(val["signal"], val["rr"], y["val"], classes, config.rhythm,
                                   distribution=dist),
                   *lr_schedule(config),
                   checkpoint,
                   keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True)],
        verbose=0 if quiet or not dist.is_chief else 2)
    if not dist.is_chief:
        return {"worker": dist.worker, "epochs_run": checkpoint.state["epoch"]}
    report: dict[str, Any] = {
        "config": _config_json(config),
        "classes": list(classes),
        "class_weights": {classes[i]: w for i, w in weights.items()},
        "records": {k: data["record"][v].tolist() for k, v in split.items()},
        "best_epoch": checkpoint.state["best_epoch"],
        "epochs_run": checkpoint.state["epoch"],
        "history": checkpoint.state["history"],
        "seconds": {"prepare": round(prep_seconds, 1), "train": round(train_seconds, 1)},
        "distribution": dist.as_dict(config.batch_size),
        "resumed_from_epoch": first_epoch,
    }
    with no_distribution():
        best, _ = load_model(part_dir / "best.keras", (RHYTHM_MODEL,))
        _score(best, {"val": val, "test": shards.take(split["test"], ("signal", "rr"))}, y,
               config.rhythm, classes, report)
    write_outputs(best, part_dir, info, report)
    if config.folds:
        return _folds_report(config, db, {config.fold: report}, data, run_dir, prep_seconds)
    return report


def tf_to_numpy(structure: Any) -> Any:
    """A batch drawn from a ``tf.data`` stream, as NumPy (dicts kept)."""
    if isinstance(structure, dict):
        return {k: np.asarray(v) for k, v in structure.items()}
    return np.asarray(structure)


def _labels_of(report: dict[str, Any], data: dict[str, Any], part: str) -> list[str]:
    """Reference labels of a part's records, in the report's order."""
    label = dict(zip(data["record"].tolist(), data["label"].tolist(), strict=True))
    return [label[r] for r in report["records"][part]]


def format_report(report: dict[str, Any]) -> str:
    """The test table (pooled over folds where there are folds) for the terminal."""
    config = report["config"]
    if "folds" in report:
        scores = ", ".join(f"{s['test_score']:.3f}" for s in report["folds"].values())
        ts = report["test_score"]
        head = (f"{config['model']} on {config['db']}, {len(report['folds'])} of "
                f"{config['folds']} folds: test challenge score per fold {scores}; "
                f"mean {ts['mean']:.3f} +- {ts['std']:.3f}. Test folds pooled:")
    else:
        head = (f"{config['model']} on {config['db']} (best epoch {report['best_epoch']} of "
                f"{report['epochs_run']}, selected on validation score "
                f"{report['val']['score']:.3f}); test records:")
    return "\n".join([head, evaluation.format_table(report["test"]), "",
                      evaluation.format_confusion(report["test"])])
