"""Training and evaluating the beat classifiers: split, weights, callbacks, checkpoints, reports.

``train_beats`` is the whole job of ``python -m ecgcap.train_ecg --db mitdb``: it prepares the
records, trains with class weighting, gradient clipping and early stopping on a patient-wise
validation split inside the training records, checkpoints every epoch (``--resume`` continues
from the last one with the optimizer state), then evaluates the best model on the test records
and writes the model, ``report.json`` and the plots into the run folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ecgcap.ecg import evaluation, plots
from ecgcap.ecg.databases import Database
from ecgcap.ecg.dataset import (
    BEAT_CHANNELS,
    RR_FEATURES,
    BeatConfig,
    ShuffledBatches,
    load_beats,
)
from ecgcap.ecg.models import BUILDERS
from ecgcap.runtime.checkpoint import Checkpoint, StopOnSignal, gradient_log, interrupted
from ecgcap.runtime.errors import EXIT_USAGE, EcgcapError
from ecgcap.runtime.files import atomic_write_json
from ecgcap.runtime.modelfile import load_model, save_model

# Patient-wise validation hold-out inside DS1: five records that hold S, V and F beats
# (227 S, 298 V, 17 F), chosen from DS1's class counts only; DS2 is never looked at.
MITDB_VALIDATION = ("118", "124", "205", "215", "220")


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in ``report.json``)."""

    db: str = "mitdb"
    model: str = "lstm"
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    clipnorm: float | None = 1.0
    units: int = 64
    recurrent_layers: int = 1
    bidirectional: bool = True
    conv_filters: tuple[int, ...] = (32, 32)
    dropout: float = 0.3
    class_weight_power: float = 0.5
    augment: bool = True
    untrained_classes: tuple[str, ...] = ("Q",)
    patience: int = 6
    split: str = "inter-patient"
    log_gradients: bool = False
    val_records: tuple[str, ...] = MITDB_VALIDATION
    seed: int = 0
    beats: BeatConfig = field(default_factory=BeatConfig)


def split_records(db: Database, config: TrainConfig) -> dict[str, list[str]]:
    """Train / validation / test records of the inter-patient protocol (validation inside DS1)."""
    train = [r for r in db.split["train"] if r not in config.val_records]
    val = [r for r in config.val_records]
    unknown = [r for r in val if r not in db.split["train"]]
    if unknown:
        raise EcgcapError(f"validation records must come from the training records; "
                          f"not in them: {', '.join(unknown)}", input="--val-records")
    return {"train": train, "val": val, "test": list(db.split["test"])}


def random_beat_split(n: int, seed: int, fractions: tuple[float, float] = (0.15, 0.15)
                      ) -> dict[str, np.ndarray]:
    """Index arrays for a random beat-level split. It leaks patients between the parts."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_val, n_test = int(fractions[0] * n), int(fractions[1] * n)
    return {"val": order[:n_val], "test": order[n_val:n_val + n_test],
            "train": order[n_val + n_test:]}


def class_weights(y: np.ndarray, n_classes: int, power: float = 0.5) -> dict[int, float]:
    """Inverse-frequency weights raised to ``power`` (1 = sklearn's "balanced", 0 = none).

    Classes absent from ``y`` get weight 0; the weights average to 1 over the beats.
    """
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = (counts[present].sum() / (present.sum() * counts[present])) ** power
    w /= (w * counts).sum() / counts.sum()
    return {i: float(w[i]) for i in range(n_classes)}


class BeatBatches(ShuffledBatches):
    """Shuffled training batches with per-beat weights and light augmentation.

    Augmentation keeps the label true: amplitude scaling (0.8-1.2), a baseline offset, white
    noise and a shift of up to 3 samples; RR features are left as they are.
    """

    def __init__(self, x: dict[str, np.ndarray], y: np.ndarray, weights: np.ndarray,
                 batch_size: int, *, augment: bool = True, seed: int = 0):
        super().__init__(y, weights, batch_size, seed=seed)
        self.x, self.augment = x, augment

    def __getitem__(self, i: int):
        idx = np.sort(self.batch_indices(i))
        beat = self.x["beat"][idx]
        if self.augment:
            rng = np.random.default_rng((int(self.rng.integers(2**31)), i))
            n = len(idx)
            beat = beat * rng.uniform(0.8, 1.2, (n, 1, 1)).astype(np.float32)
            beat[..., 0] += rng.uniform(-0.2, 0.2, (n, 1)).astype(np.float32)
            beat += rng.normal(0, 0.05, beat.shape).astype(np.float32)
            shift = int(rng.integers(-3, 4))
            beat = np.roll(beat, shift, axis=1)
        return {"beat": beat, "rr": self.x["rr"][idx]}, self.y[idx], self.w[idx]


def _inputs(data: dict[str, np.ndarray], index: np.ndarray | None = None) -> dict[str, np.ndarray]:
    sel = slice(None) if index is None else index
    return {"beat": data["beat"][sel], "rr": data["rr"][sel]}


class ValidationScore(keras.callbacks.Callback):
    """Adds ``val_macro_f1`` (AAMI macro-F1 on the validation beats) to the epoch logs."""

    def __init__(self, x: dict[str, np.ndarray], y: np.ndarray, classes: Sequence[str],
                 batch_size: int = 1024):
        super().__init__()
        self.x, self.y, self.classes, self.batch_size = x, y, tuple(classes), batch_size

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        pred = self.model.predict(self.x, batch_size=self.batch_size, verbose=0).argmax(-1)
        report = evaluation.aami_report(self.y, pred, self.classes)
        if logs is not None:
            logs["val_macro_f1"] = float(report["macro_f1"] or 0.0)


BEAT_MODEL = "ecg-beats"


def model_info(config: TrainConfig, db: Database) -> dict[str, Any]:
    """What inference needs to know about a beat model, stored inside its .keras file."""
    return {"kind": BEAT_MODEL, "db": db.name, "classes": list(db.classes),
            "cell": config.model, "beats": asdict(config.beats)}


def _config_json(config: TrainConfig) -> dict[str, Any]:
    out = asdict(config)
    out["conv_filters"] = list(config.conv_filters)
    out["val_records"] = list(config.val_records)
    return out


def build_model(config: TrainConfig, n_classes: int) -> keras.Model:
    """The configured builder, with the model's own settings recorded for inference."""
    if config.model not in BUILDERS:
        raise EcgcapError(f"unknown model; choose one of {', '.join(BUILDERS)}",
                          input=f"--model {config.model}")
    return BUILDERS[config.model](
        input_length=config.beats.length, channels=BEAT_CHANNELS, rr_features=RR_FEATURES,
        classes=n_classes, conv_filters=config.conv_filters,
        recurrent_layers=config.recurrent_layers, units=config.units,
        bidirectional=config.bidirectional, dropout=config.dropout,
        name=f"{config.db}_{config.model}_beats")


def prepare_split(db: Database, db_dir: Path, config: TrainConfig, quiet: bool = False
                  ) -> dict[str, dict[str, np.ndarray]]:
    """The beats of each part of the split, as dicts of arrays."""
    if config.split == "inter-patient":
        parts = split_records(db, config)
        return {k: load_beats(db_dir, db, v, config.beats, quiet=quiet or k != "train")
                for k, v in parts.items()}
    if config.split == "random-beats":
        records = [*db.split["train"], *db.split["test"]]
        data = load_beats(db_dir, db, records, config.beats, quiet=quiet)
        idx = random_beat_split(len(data["label"]), config.seed)
        return {k: {n: a[i] for n, a in data.items()} for k, i in idx.items()}
    raise EcgcapError("unknown split; choose inter-patient or random-beats",
                      input=f"--split {config.split}")


def train_beats(config: TrainConfig, db: Database, db_dir: Path, run_dir: Path, *,
                resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Train, select on validation, evaluate on test; write model, report and plots.

    Returns the report (also written to ``run_dir/report.json``).
    """
    classes = db.classes
    to_index = {c: i for i, c in enumerate(classes)}
    t0 = time.perf_counter()
    parts = prepare_split(db, db_dir, config, quiet)
    prep_seconds = time.perf_counter() - t0
    y = {k: np.array([to_index[c] for c in v["label"]], dtype=np.int64) for k, v in parts.items()}

    state = None
    if resume:
        ckpt, state_file = run_dir / "checkpoint.keras", run_dir / "state.json"
        if not (ckpt.is_file() and state_file.is_file()):
            raise EcgcapError("--resume given but the run folder has no checkpoint",
                              input=str(run_dir), exit_code=EXIT_USAGE)
        model, _ = load_model(ckpt, (BEAT_MODEL,))
        state = json.loads(state_file.read_text())
    else:
        model = build_model(config, len(classes))
        model.get_layer("rr_norm").adapt(parts["train"]["rr"])
        optimizer = keras.optimizers.Adam(config.learning_rate, clipnorm=config.clipnorm)
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    info = model_info(config, db)
    checkpoint = Checkpoint(run_dir, info, patience=config.patience, state=state)
    initial_epoch = checkpoint.state["epoch"]
    weights = class_weights(y["train"], len(classes), config.class_weight_power)
    for c in config.untrained_classes:  # too rare to learn (mitdb: 15 Q beats in all)
        weights[to_index[c]] = 0.0
    train_batches = BeatBatches(
        _inputs(parts["train"]), y["train"], np.array([weights[i] for i in y["train"]],
                                                       dtype=np.float32),
        config.batch_size, augment=config.augment, seed=config.seed)
    t1 = time.perf_counter()
    if initial_epoch < config.epochs and checkpoint.state["wait"] < config.patience:
        try:
            model.fit(
                train_batches, epochs=config.epochs, initial_epoch=initial_epoch,
                validation_data=(_inputs(parts["val"]), y["val"]),
                callbacks=[StopOnSignal(),
                           ValidationScore(_inputs(parts["val"]), y["val"], classes),
                           *gradient_log(config.log_gradients, _inputs(parts["val"], slice(0, 256)),
                                         y["val"][:256]),
                           checkpoint],
                verbose=0 if quiet else 2,
            )
        except KeyboardInterrupt:
            raise interrupted(run_dir, checkpoint.state) from None
    train_seconds = time.perf_counter() - t1
    best, _ = load_model(run_dir / "best.keras", (BEAT_MODEL,))
    report: dict[str, Any] = {
        "config": _config_json(config),
        "classes": list(classes),
        "class_weights": {classes[i]: w for i, w in weights.items()},
        "records": {k: sorted(set(v["record"].tolist())) for k, v in parts.items()},
        "beats": {k: int(len(v)) for k, v in y.items()},
        "best_epoch": checkpoint.state["best_epoch"],
        "epochs_run": checkpoint.state["epoch"],
        "history": checkpoint.state["history"],
        "seconds": {"prepare": round(prep_seconds, 1), "train": round(train_seconds, 1)},
    }
    for part in ("val", "test"):
        pred = best.predict(_inputs(parts[part]), batch_size=1024, verbose=0).argmax(-1)
        report[part] = evaluation.aami_report(y[part], pred, classes)
    save_model(best, run_dir / "model.keras", info)
    atomic_write_json(run_dir / "report.json", report)
    plots.plot_confusion(report["test"], run_dir / "confusion.png")
    plots.plot_learning_curves(report["history"], run_dir / "learning_curves.png")
    return report
