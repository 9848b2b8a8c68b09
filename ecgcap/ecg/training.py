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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ecgcap.ecg import evaluation, io, plots
from ecgcap.ecg.databases import Database
from ecgcap.ecg.dataset import (
    BEAT_CHANNELS,
    BeatConfig,
    load_beats,
    write_beat_shards,
)
from ecgcap.ecg.models import BUILDERS
from ecgcap.runtime.batches import ShuffledBatches
from ecgcap.runtime.checkpoint import (
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
from ecgcap.runtime.errors import EcgcapError
from ecgcap.runtime.files import atomic_write_json
from ecgcap.runtime.modelfile import load_model, read_info, save_model, without_optimizer
from ecgcap.runtime.shards import ShardSet, steps_per_epoch, stream

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
    pipeline: str = "memory"
    val_records: tuple[str, ...] = MITDB_VALIDATION
    train_records: tuple[str, ...] | None = None  # default: the training records minus val
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
    if config.train_records is not None:
        unknown = [r for r in config.train_records if r not in train]
        if unknown or not config.train_records:
            raise EcgcapError("training records must come from the training records and not "
                              f"be validation records; not so: {', '.join(unknown) or 'none'}",
                              input="--train-records")
        train = list(config.train_records)
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

    Augmentation keeps the label true (:func:`augment_beats`, drawn per beat from
    ``(seed, epoch, beat)``); RR features are left as they are.
    """

    def __init__(self, x: dict[str, np.ndarray], y: np.ndarray, weights: np.ndarray,
                 batch_size: int, *, augment: bool = True, seed: int = 0, epoch: int = 0):
        super().__init__(len(y), batch_size, seed=seed, epoch=epoch)
        self.x, self.y, self.w, self.augment = x, y, weights, augment

    def __getitem__(self, i: int):
        idx = np.sort(self.batch_indices(i))
        beat = self.x["beat"][idx]
        if self.augment:
            beat = augment_beats(beat, idx, self.seed, self.epoch)
        return {"beat": beat, "rr": self.x["rr"][idx]}, self.y[idx], self.w[idx]


def _inputs(data: dict[str, np.ndarray], index: np.ndarray | None = None) -> dict[str, np.ndarray]:
    sel = slice(None) if index is None else index
    return {"beat": data["beat"][sel], "rr": data["rr"][sel]}


class ValidationScore(keras.callbacks.Callback):
    """Adds ``val_macro_f1`` (AAMI macro-F1 on the validation beats) to the epoch logs.

    Under a distribution, ``distribution`` predicts on this process alone, and the callback
    also adds ``val_loss`` and ``val_accuracy`` (Keras' own validation is not used there).
    """

    def __init__(self, x: dict[str, np.ndarray], y: np.ndarray, classes: Sequence[str],
                 batch_size: int = 1024, distribution: Distribution | None = None):
        super().__init__()
        self.x, self.y, self.classes, self.batch_size = x, y, tuple(classes), batch_size
        self.distribution = distribution

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.distribution is None:
            prob = self.model.predict(self.x, batch_size=self.batch_size, verbose=0)
        else:
            prob = self.distribution.predict(self.model, self.x, self.batch_size)
        report = evaluation.aami_report(self.y, prob.argmax(-1), self.classes)
        if logs is not None:
            logs["val_macro_f1"] = float(report["macro_f1"] or 0.0)
            if self.distribution is not None:
                picked = prob[np.arange(len(self.y)), self.y]
                logs["val_loss"] = float(-np.log(np.clip(picked, 1e-7, 1.0)).mean())
                logs["val_accuracy"] = float((prob.argmax(-1) == self.y).mean())


BEAT_MODEL = "ecg-beats"


def model_info(config: TrainConfig, db: Database) -> dict[str, Any]:
    """What inference needs to know about a beat model, stored inside its .keras file."""
    return {"kind": BEAT_MODEL, "db": db.name, "classes": list(db.classes),
            "cell": config.model, "beats": asdict(config.beats)}


def _config_json(config: TrainConfig) -> dict[str, Any]:
    out = asdict(config)
    out["conv_filters"] = list(config.conv_filters)
    out["val_records"] = list(config.val_records)
    if config.train_records is not None:
        out["train_records"] = list(config.train_records)
    return out


def build_model(config: TrainConfig, n_classes: int) -> keras.Model:
    """The configured builder, with the model's own settings recorded for inference."""
    if config.model not in BUILDERS:
        raise EcgcapError(f"unknown model; choose one of {', '.join(BUILDERS)}",
                          input=f"--model {config.model}")
    return BUILDERS[config.model](
        input_length=config.beats.length, channels=BEAT_CHANNELS,
        rr_features=config.beats.rr_features,
        classes=n_classes, conv_filters=config.conv_filters,
        recurrent_layers=config.recurrent_layers, units=config.units,
        bidirectional=config.bidirectional, dropout=config.dropout,
        name=f"{config.db}_{config.model}_beats")


def prepare_split(db: Database, db_dir: Path, config: TrainConfig, quiet: bool = False
                  ) -> dict[str, dict[str, np.ndarray]]:
    """The beats of each part of the split, as dicts of arrays (no ``val`` without
    validation records)."""
    io.list_records(db_dir)  # a folder without a RECORDS list, or an empty one, is refused
    if config.split == "inter-patient":
        parts = split_records(db, config)
        return {k: load_beats(db_dir, db, v, config.beats, quiet=quiet or k != "train")
                for k, v in parts.items() if v}
    if config.split == "random-beats":
        records = [*db.split["train"], *db.split["test"]]
        data = load_beats(db_dir, db, records, config.beats, quiet=quiet)
        idx = random_beat_split(len(data["label"]), config.seed)
        return {k: {n: a[i] for n, a in data.items()} for k, i in idx.items()}
    raise EcgcapError("unknown split; choose inter-patient or random-beats",
                      input=f"--split {config.split}")


def _report(config: TrainConfig, classes: Sequence[str], weights: dict[int, float],
            records: dict[str, list[str]], y: dict[str, np.ndarray], pred: dict[str, np.ndarray],
            state: dict[str, Any], seconds: dict[str, float]) -> dict[str, Any]:
    report: dict[str, Any] = {
        "config": _config_json(config),
        "classes": list(classes),
        "class_weights": {classes[i]: w for i, w in weights.items()},
        "records": records,
        "beats": {k: int(len(v)) for k, v in y.items()},
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "history": state["history"],
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    for part in ("val", "test"):
        report[part] = evaluation.aami_report(y[part], pred[part], classes) if part in y \
            else None
    return report


def write_outputs(best: keras.Model, run_dir: Path, info: dict[str, Any],
                  report: dict[str, Any]) -> None:
    """A finished run's ``model.keras`` (without the optimizer: the file to ship),
    ``report.json`` and plots (both ECG tasks)."""
    save_model(without_optimizer(best), run_dir / "model.keras", info)
    atomic_write_json(run_dir / "report.json", report)
    plots.plot_confusion(report["test"], run_dir / "confusion.png")
    plots.plot_learning_curves(report["history"], run_dir / "learning_curves.png")


def _weights(config: TrainConfig, y: np.ndarray, classes: Sequence[str]) -> dict[int, float]:
    weights = class_weights(y, len(classes), config.class_weight_power)
    for c in config.untrained_classes:  # too rare to learn (mitdb: 15 Q beats in all)
        weights[list(classes).index(c)] = 0.0
    return weights


def train_beats(config: TrainConfig, db: Database, db_dir: Path, run_dir: Path, *,
                resume: bool = False, quiet: bool = False,
                distribution: Distribution | None = None) -> dict[str, Any]:
    """Train, select on validation, evaluate on test; write model, report and plots.

    Returns the report (also written to ``run_dir/report.json``). With ``distribution`` (or
    ``config.pipeline == "shards"``) the training beats stream from shards instead
    (:func:`train_beats_streamed`).
    """
    if (distribution is not None and distribution.active) or config.pipeline == "shards":
        return train_beats_streamed(config, db, db_dir, run_dir, quiet=quiet,
                                    distribution=distribution)
    if config.pipeline != "memory":
        raise EcgcapError("unknown pipeline; choose memory or shards",
                          input=f"--pipeline {config.pipeline}")
    classes = db.classes
    to_index = {c: i for i, c in enumerate(classes)}
    ckpt, state_file = checkpoint_files(run_dir, resume=resume)  # refused before any work
    if resume:  # beats cut as the run began (a newer default must not change its inputs)
        config = replace(config, beats=BeatConfig.from_info(read_info(ckpt).get("beats", {})))
        had_val = "val_macro_f1" in json.loads(state_file.read_text()).get("history", {})
        if config.split == "inter-patient" and had_val != bool(config.val_records):
            raise EcgcapError(f"the run was begun {'with' if had_val else 'without'} validation "
                              "records; resume it with the same --val-records",
                              input=str(run_dir))
        # the beat settings come from the checkpoint above, so they are not compared
        check_resume_config(state_file, {k: v for k, v in _config_json(config).items()
                                         if k != "beats"})
    t0 = time.perf_counter()
    parts = prepare_split(db, db_dir, config, quiet)
    prep_seconds = time.perf_counter() - t0
    y = {k: np.array([to_index[c] for c in v["label"]], dtype=np.int64) for k, v in parts.items()}

    state = None
    if resume:
        model, _ = load_model(ckpt, (BEAT_MODEL,))
        check_same_model(model, build_model(config, len(classes)), ckpt)
        state = json.loads(state_file.read_text())
    else:
        model = build_model(config, len(classes))
        model.get_layer("rr_norm").adapt(parts["train"]["rr"])
        optimizer = keras.optimizers.Adam(config.learning_rate, clipnorm=config.clipnorm)
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    info = model_info(config, db)
    # without a validation part: no early stopping, the last epoch is the model
    checkpoint = Checkpoint(run_dir, info, "val_macro_f1" if "val" in parts else None,
                            patience=config.patience, state=state, config=_config_json(config))
    initial_epoch = checkpoint.state["epoch"]
    weights = _weights(config, y["train"], classes)
    train_batches = BeatBatches(
        _inputs(parts["train"]), y["train"], np.array([weights[i] for i in y["train"]],
                                                       dtype=np.float32),
        config.batch_size, augment=config.augment, seed=config.seed, epoch=initial_epoch)
    val = (_inputs(parts["val"]), y["val"]) if "val" in parts else None
    scoring = [ValidationScore(*val, classes)] if val else []
    probe = "val" if "val" in parts else "train"  # a fixed batch for --log-gradients
    train_seconds = fit_resumable(
        model, train_batches, checkpoint, run_dir, epochs=config.epochs,
        initial_epoch=initial_epoch, shuffle=False, validation_data=val,
        callbacks=[StopOnSignal(), train_batches.callback(), *scoring,
                   *gradient_log(config.log_gradients, _inputs(parts[probe], slice(0, 256)),
                                 y[probe][:256]),
                   checkpoint],
        verbose=0 if quiet else 2)
    best, _ = load_model(run_dir / "best.keras", (BEAT_MODEL,))
    pred = {part: best.predict(_inputs(parts[part]), batch_size=1024, verbose=0).argmax(-1)
            for part in ("val", "test") if part in parts}
    records = {k: sorted(set(v["record"].tolist())) for k, v in parts.items()}
    report = _report(config, classes, weights, records, y, pred, checkpoint.state,
                     {"prepare": prep_seconds, "train": train_seconds})
    write_outputs(best, run_dir, info, report)
    return report


def augment_beats(beat: np.ndarray, keys: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """Label-preserving augmentation drawn per beat from ``(seed, epoch, key)``, so a beat is
    changed the same way whichever worker or batch it lands in: amplitude scaling (0.8-1.2),
    a baseline offset, white noise and a shift of up to 3 samples."""
    out = np.empty_like(beat)
    for j, key in enumerate(keys):
        rng = np.random.default_rng([seed, epoch, int(key)])
        b = beat[j] * np.float32(rng.uniform(0.8, 1.2))
        b[:, 0] += np.float32(rng.uniform(-0.2, 0.2))
        b += rng.normal(0, 0.05, b.shape).astype(np.float32)
        out[j] = np.roll(b, int(rng.integers(-3, 4)), axis=0)
    return out


def beat_stream(shards: ShardSet, classes: Sequence[str], weights: dict[int, float],
                config: TrainConfig, distribution: Distribution, first_epoch: int = 0) -> Any:
    """The training input of a streamed run: weighted (and augmented) beats from ``shards``."""
    import tensorflow as tf

    to_index = {c: i for i, c in enumerate(classes)}
    per_class = np.array([weights[i] for i in range(len(classes))], dtype=np.float32)

    def make_batch(ex: dict[str, np.ndarray], keys: np.ndarray, mask: np.ndarray, epoch: int):
        y = np.array([to_index[c] for c in ex["label"]], dtype=np.int64)
        beat = augment_beats(ex["beat"], keys, config.seed, epoch) if config.augment \
            else ex["beat"]
        return {"beat": beat, "rr": ex["rr"]}, y, per_class[y] * mask.astype(np.float32)

    length = config.beats.length
    signature = ({"beat": tf.TensorSpec((None, length, BEAT_CHANNELS), tf.float32),
                  "rr": tf.TensorSpec((None, config.beats.rr_features), tf.float32)},
                 tf.TensorSpec((None,), tf.int64), tf.TensorSpec((None,), tf.float32))
    return distribution.dataset(lambda pipeline, pipelines, pieces: stream(
        shards, make_batch, signature, global_batch=config.batch_size, seed=config.seed,
        first_epoch=first_epoch, pipeline=pipeline, pipelines=pipelines, pieces=pieces))


def _shard_predictions(model: keras.Model, shards: ShardSet) -> np.ndarray:
    return np.concatenate([
        model.predict(_inputs(shards.shard(i, ("beat", "rr"))), batch_size=1024,
                      verbose=0).argmax(-1) for i in range(len(shards.names))])


def train_beats_streamed(config: TrainConfig, db: Database, db_dir: Path, run_dir: Path, *,
                         quiet: bool = False, distribution: Distribution | None = None
                         ) -> dict[str, Any]:
    """:func:`train_beats` on beats streamed from shards, on one device or distributed.

    Records are prepared in parallel into shards (resumable); every worker reads its share of
    each global batch. Each worker keeps ``keras.callbacks.BackupAndRestore`` files in
    ``run_dir/backup`` (so a run restarted with the same command continues from its last
    whole epoch); only the chief (worker 0) writes models, the report and plots. The other
    workers return ``{"worker": index, ...}``.
    """
    dist = distribution or Distribution()
    if config.split != "inter-patient":
        raise EcgcapError("streamed (and distributed) training uses the inter-patient split",
                          input=f"--split {config.split}")
    if config.log_gradients:
        raise EcgcapError("gradient logging runs on the in-memory pipeline on one device",
                          input="--log-gradients")
    if not config.val_records:
        raise EcgcapError("streamed (and distributed) training needs validation records",
                          input="--val-records none")
    dist.check_batch(config.batch_size)
    check_resume_config(run_dir / "backup" / "state.json", _config_json(config))
    classes = db.classes
    to_index = {c: i for i, c in enumerate(classes)}
    t0 = time.perf_counter()
    io.list_records(db_dir)  # a folder without a RECORDS list, or an empty one, is refused
    records = split_records(db, config)
    shards = {k: write_beat_shards(db_dir, db, v, config.beats, quiet=quiet or not dist.is_chief)
              for k, v in records.items()}
    records = {k: sorted(v) for k, v in records.items()}
    prep_seconds = time.perf_counter() - t0
    y = {k: np.array([to_index[c] for c in v.column("label")], dtype=np.int64)
         for k, v in shards.items()}
    weights = _weights(config, y["train"], classes)
    val = _inputs(shards["val"].take(np.arange(len(shards["val"])), ("beat", "rr")))

    backup = run_dir / "backup"
    first_epoch = backup_epoch(backup)
    dist.check_same(first_epoch, "the epoch to resume from", str(backup))
    with dist.scope():
        model = build_model(config, len(classes))
        model.get_layer("rr_norm").adapt(shards["train"].column("rr"))
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate,
                                                      clipnorm=config.clipnorm),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    dist.prepare_fit(model, ({k: v[:2] for k, v in val.items()}, y["val"][:2],
                             np.ones(2, np.float32)))
    info = model_info(config, db)
    checkpoint = streamed_checkpoint(run_dir, info, "val_macro_f1", config.patience, dist,
                                     backup, first_epoch, config=_config_json(config))
    train_seconds = fit_resumable(
        model, beat_stream(shards["train"], classes, weights, config, dist, first_epoch),
        checkpoint, run_dir, epochs=config.epochs, initial_epoch=first_epoch,
        steps_per_epoch=steps_per_epoch(len(shards["train"]), config.batch_size),
        shuffle=False,  # the stream's own order (each epoch's plan)
        callbacks=[StopOnSignal(), ValidationScore(val, y["val"], classes, distribution=dist),
                   checkpoint,
                   keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True)],
        verbose=0 if quiet or not dist.is_chief else 2)
    if not dist.is_chief:
        return {"worker": dist.worker, "epochs_run": checkpoint.state["epoch"]}
    with no_distribution():
        best, _ = load_model(run_dir / "best.keras", (BEAT_MODEL,))
        pred = {part: _shard_predictions(best, shards[part]) for part in ("val", "test")}
    report = _report(config, classes, weights, records, y, pred, checkpoint.state,
                     {"prepare": prep_seconds, "train": train_seconds})
    report["distribution"] = dist.as_dict(config.batch_size)
    report["resumed_from_epoch"] = first_epoch
    write_outputs(best, run_dir, info, report)
    return report


def ensemble_runs(run_dirs: Sequence[Path], db: Database, db_dir: Path, out_dir: Path
                  ) -> dict[str, Any]:
    """Average the finished beat runs ``run_dirs`` (e.g. one model trained from three seeds,
    each with its epoch chosen on the validation records) into one model
    (:func:`ecgcap.ecg.models.build_ensemble`); score it on the runs' validation and test
    records; write ``model.keras`` and ``report.json`` into ``out_dir``. The runs must share
    their split and preparation."""
    from ecgcap.ecg.models import build_ensemble

    reports = [json.loads((Path(r) / "report.json").read_text()) for r in run_dirs]
    loaded = [load_model(Path(r) / "model.keras", (BEAT_MODEL,)) for r in run_dirs]
    infos = [info for _, info in loaded]
    if any(r["config"]["split"] != "inter-patient" for r in reports):
        raise EcgcapError("an ensemble is scored on whole records, so its runs must use the "
                          "inter-patient split", input=", ".join(str(r) for r in run_dirs))
    if any(r["records"] != reports[0]["records"] for r in reports) or \
            any(BeatConfig.from_info(i["beats"]) != BeatConfig.from_info(infos[0]["beats"])
                for i in infos):
        raise EcgcapError("runs of an ensemble must share their records and beat settings",
                          input=", ".join(str(r) for r in run_dirs))
    model = build_ensemble([m for m, _ in loaded])
    classes = infos[0]["classes"]
    beats = BeatConfig.from_info(infos[0]["beats"])
    report: dict[str, Any] = {"members": [str(r) for r in run_dirs],
                              "member_seeds": [r["config"]["seed"] for r in reports],
                              "member_best_epochs": [r["best_epoch"] for r in reports],
                              "config": reports[0]["config"], "classes": classes,
                              "records": reports[0]["records"]}
    for part in ("val", "test"):
        if not reports[0]["records"].get(part):  # runs trained without a validation part
            report[part] = None
            continue
        data = load_beats(db_dir, db, reports[0]["records"][part], beats, quiet=True)
        y = np.array([classes.index(c) for c in data["label"]])
        pred = model.predict(_inputs(data), batch_size=1024, verbose=0).argmax(-1)
        report[part] = evaluation.aami_report(y, pred, classes)
    out_dir = Path(out_dir)
    save_model(model, out_dir / "model.keras", {**infos[0], "ensemble": len(run_dirs)})
    atomic_write_json(out_dir / "report.json", report)
    plots.plot_confusion(report["test"], out_dir / "confusion.png")
    return report
