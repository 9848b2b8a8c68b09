"""Beats in context: windows of consecutive beats, training batches, stitching, inference.

The beat-sequence models (:func:`ecgcap.ecg.models.build_beat_sequence_classifier`) label
every beat of a window of ``context`` consecutive beats. A record is cut into windows that
overlap by half (``stride = context // 2``); each beat takes its label from the window in
which it lies most centrally (ties: the earlier window), so every beat is labelled exactly
once and sees as much context as the windows give it. A record shorter than a window is one
padded, masked window. Training sees every beat once per epoch, in windows placed at a random
offset drawn per record from ``(seed, epoch, record)``.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ecgcap.ecg import evaluation, io
from ecgcap.ecg.databases import Database
from ecgcap.ecg.dataset import BeatConfig, beats_from_signal, load_beat_leads, two_lead_beats
from ecgcap.runtime.batches import ShuffledBatches
from ecgcap.runtime.errors import EcgcapError

LEADS = ("mlii", "both")


def window_starts(n: int, context: int, stride: int | None = None, offset: int = 0
                  ) -> np.ndarray:
    """First beats of the windows that cover beats ``0..n-1``.

    Windows start every ``stride`` beats (default ``context // 2``) from ``offset % stride``;
    a window at 0 and one ending at the last beat are added where needed, so every beat is
    covered. ``n <= context``: one window at 0 (padded by :func:`cut_windows`).

    Examples
    --------
    >>> window_starts(10, 4).tolist()
    [0, 2, 4, 6]
    >>> window_starts(3, 4).tolist()
    [0]
    """
    if context < 1 or n < 0:
        raise ValueError(f"need context >= 1 and n >= 0, got {context} and {n}")
    stride = stride or max(context // 2, 1)
    if n <= context:
        return np.zeros(1, dtype=np.int64)
    starts = set(range(offset % stride, n - context + 1, stride)) | {0, n - context}
    return np.array(sorted(starts), dtype=np.int64)


def window_index(n: int, starts: np.ndarray, context: int) -> np.ndarray:
    """Beat indices of each window, (windows, context), ``-1`` where a window runs past the
    record (padding)."""
    idx = np.asarray(starts)[:, None] + np.arange(context)[None, :]
    return np.where((idx >= 0) & (idx < n), idx, -1)


def assign_beats(n: int, starts: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """For each beat, the window (and the step in it) whose label it takes: the window in
    which it is most central; ties go to the earlier window. Returns ``(window, step)``.
    ``starts`` ascending (as :func:`window_starts` gives them); time and memory linear in
    the beats (a beat lies in a few windows only)."""
    starts = np.asarray(starts)
    beats = np.arange(n)
    first = np.searchsorted(starts, beats - context, side="right")  # windows still holding b
    last_w = np.searchsorted(starts, beats, side="right") - 1       # windows begun by b
    if n and (last_w < first).any():
        raise ValueError("windows do not cover every beat")
    real = np.minimum(starts + context, n) - starts  # real beats in each window
    window = first.copy()
    best = np.full(n, np.inf)
    for k in range(int((last_w - first).max(initial=-1)) + 1):
        j = first + k
        ok = j <= last_w
        jj = np.where(ok, j, 0)
        distance = np.where(ok, np.abs(beats - starts[jj] - (real[jj] - 1) / 2.0), np.inf)
        better = distance < best  # strictly: the earlier window keeps a tie
        window = np.where(better, jj, window)
        best = np.where(better, distance, best)
    return window, beats - starts[window]


def cut_windows(x: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    """Per-beat arrays ``x`` cut into windows by ``index`` (:func:`window_index`), zeros where
    padded, with ``mask`` (1 for real beats)."""
    valid = index >= 0
    safe = np.where(valid, index, 0)
    out = {}
    for k, v in x.items():
        w = v[safe]
        w[~valid] = 0
        out[k] = w
    out["mask"] = valid.astype(np.float32)
    return out


def model_inputs(data: dict[str, np.ndarray], leads: str, index: Any = slice(None)
                 ) -> dict[str, np.ndarray]:
    """The per-beat arrays a sequence model with ``leads`` reads (before windowing): ``beat``
    (2 or 4 channels), ``rr`` and, with both leads, ``lead2`` (beats, 1)."""
    if leads not in LEADS:
        raise EcgcapError(f"choose one of {', '.join(LEADS)}", input=f"--leads {leads}")
    beat = data["beat"][index]
    x = {"beat": beat[..., :2] if leads == "mlii" else beat, "rr": data["rr"][index]}
    if leads == "both":
        x["lead2"] = np.asarray(data["lead2"][index], dtype=np.float32)[:, None]
    return x


def predict_beats(model: keras.Model, x: dict[str, np.ndarray], records: np.ndarray | None,
                  context: int, *, stride: int | None = None, offset: int = 0,
                  batch_size: int = 64) -> np.ndarray:
    """Probabilities (beats, classes) of every beat of ``x`` (per-beat arrays, records one
    after another; ``records`` names each beat's record, ``None``: one record): each record is
    cut into windows (:func:`window_starts`), all windows are predicted in batches of
    ``batch_size`` windows, and each beat takes its most central window's output."""
    n = len(x["rr"])
    if records is None:
        bounds = [(0, n)]
    else:
        records = np.asarray(records)
        change = np.flatnonzero(records[1:] != records[:-1]) + 1
        edges = [0, *change.tolist(), n]
        bounds = list(zip(edges[:-1], edges[1:], strict=True))
    indexes, picks, first = [], [], 0
    for lo, hi in bounds:
        starts = window_starts(hi - lo, context, stride, offset)
        index = window_index(hi - lo, starts, context)
        indexes.append(np.where(index >= 0, index + lo, -1))
        window, step = assign_beats(hi - lo, starts, context)
        picks.append((window + first, step))
        first += len(starts)
    windows = cut_windows(x, np.concatenate(indexes))
    probs = model.predict(windows, batch_size=batch_size, verbose=0)
    return np.concatenate([probs[w, s] for w, s in picks])


class WindowBatches(ShuffledBatches):
    """Training windows: every beat once per epoch, in windows of ``context`` beats placed at
    an offset drawn per record from ``(seed, epoch, record)``, shuffled; per-step weights
    (class weights, 0 on padding), augmentation as the beat models' (``augment_beats``), and
    with both leads the second lead dropped (zeros, flag 0) from a share ``lead_dropout`` of the
    windows, so the model also works on one lead."""

    def __init__(self, x: dict[str, np.ndarray], y: np.ndarray, weights: np.ndarray,
                 records: np.ndarray, context: int, windows_per_batch: int, *,
                 augment: bool = True, lead_dropout: float = 0.0, seed: int = 0, epoch: int = 0):
        self.x, self.y, self.w, self.context = x, y, weights, context
        self.augment, self.lead_dropout = augment, lead_dropout
        records = np.asarray(records)
        change = np.flatnonzero(records[1:] != records[:-1]) + 1
        edges = [0, *change.tolist(), len(y)]
        self.bounds = list(zip(edges[:-1], edges[1:], strict=True))
        # a fixed count per record (one more than needed), so every epoch has the same length
        self.counts = [-(-(hi - lo) // context) + 1 for lo, hi in self.bounds]
        self.seed = seed
        super().__init__(sum(self.counts), windows_per_batch, seed=seed, epoch=epoch)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        parts = []
        for r, ((lo, hi), count) in enumerate(zip(self.bounds, self.counts, strict=True)):
            shift = int(np.random.default_rng([self.seed, self.epoch, r, 1]).integers(
                self.context))
            starts = -shift + self.context * np.arange(count)
            index = window_index(hi - lo, starts, self.context)
            parts.append(np.where(index >= 0, index + lo, -1))
        self.index = np.concatenate(parts)
        self.drop = np.random.default_rng([self.seed, self.epoch, 2]).random(len(self.index)) \
            < self.lead_dropout

    def __getitem__(self, i: int):
        rows = np.sort(self.batch_indices(i))
        index = self.index[rows]
        x = cut_windows(self.x, index)
        valid = index >= 0
        if self.augment and valid.any():
            from ecgcap.ecg.training import augment_beats

            x["beat"][valid] = augment_beats(x["beat"][valid], index[valid], self.seed,
                                             self.epoch)
        if "lead2" in x and self.drop[rows].any():
            drop = self.drop[rows]
            x["beat"][drop, ..., 2:] = 0.0
            x["lead2"][drop] = 0.0
        safe = np.where(valid, index, 0)
        y = np.where(valid, self.y[safe], 0)
        w = np.where(valid, self.w[safe], 0.0).astype(np.float32)
        return x, y, w


class SequenceScores(keras.callbacks.Callback):
    """After every epoch: the stitched predictions of held-out beats; adds ``val_macro_f1``
    when labels are given, and keeps each epoch's predicted labels in ``self.predictions``."""

    def __init__(self, x: dict[str, np.ndarray], records: np.ndarray, context: int,
                 y: np.ndarray | None = None, classes: Sequence[str] = ()):
        super().__init__()
        self.x, self.records, self.context, self.y = x, records, context, y
        self.classes = tuple(classes)
        self.predictions: list[np.ndarray] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        pred = predict_beats(self.model, self.x, self.records, self.context).argmax(-1)
        self.predictions.append(pred)
        if self.y is not None and logs is not None:
            report = evaluation.aami_report(self.y, pred, self.classes)
            logs["val_macro_f1"] = float(report["macro_f1"] or 0.0)


# ---------------------------------------------------------------------------------------------
# training

@dataclass
class SequenceSettings:
    """What a beat-sequence model adds to a beat model's training configuration."""

    context: int = 16
    leads: str = "mlii"
    lead_dropout: float = 0.2
    beat_encoder: str = "conv"

    @classmethod
    def of(cls, config: Any) -> SequenceSettings:
        """The settings held by a sequence training configuration (same field names)."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


def build_sequence_model(cell: str, settings: SequenceSettings, beats: BeatConfig,
                         n_classes: int, *, units: int = 64, conv_filters: Sequence[int] = (32, 32),
                         bidirectional: bool = True, dropout: float = 0.3,
                         name: str | None = None) -> keras.Model:
    """The configured beat-sequence model (``cell``: ``lstm-seq`` or ``simplernn-seq``)."""
    from ecgcap.ecg.models import SEQUENCE_BUILDERS

    if cell not in SEQUENCE_BUILDERS:
        raise EcgcapError(f"unknown model; choose one of {', '.join(SEQUENCE_BUILDERS)}",
                          input=f"--model {cell}")
    both = settings.leads == "both"
    return SEQUENCE_BUILDERS[cell](
        context=settings.context, beat_length=beats.length, channels=4 if both else 2,
        rr_features=beats.rr_features, lead_flag=both, classes=n_classes,
        conv_filters=conv_filters, units=units, bidirectional=bidirectional, dropout=dropout,
        beat_encoder=settings.beat_encoder, name=name)


def compile_sequence_model(model: keras.Model, rr: np.ndarray, learning_rate: float,
                           clipnorm: float | None) -> keras.Model:
    """Adapt the RR normalisation to training beats ``rr`` (beats, features) and compile
    (per-step sparse cross-entropy, averaged over the weighted steps)."""
    model.get_layer("rr_norm").adapt(rr[:, None, :])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate, clipnorm=clipnorm),
                  loss="sparse_categorical_crossentropy")
    return model


def train_sequence(config: Any, db: Database, db_dir: Path, run_dir: Path, *,
                   quiet: bool = False) -> dict[str, Any]:
    """Train a beat-sequence model (``config``: a :class:`ecgcap.ecg.training.TrainConfig`
    with the fields of :class:`SequenceSettings`), choose its epoch on the validation records
    (or take the last without them), evaluate on the test records; write ``model.keras``,
    ``report.json`` (with each record's second lead) and the plots into ``run_dir``."""
    from ecgcap.ecg.training import (
        BEAT_MODEL,
        _config_json,
        _report,
        _weights,
        model_info,
        split_records,
        write_outputs,
    )
    from ecgcap.runtime.checkpoint import Checkpoint, StopOnSignal, fit_resumable
    from ecgcap.runtime.modelfile import load_model

    settings = SequenceSettings.of(config)
    if config.split != "inter-patient":
        raise EcgcapError("sequence models use the inter-patient split (windows of a record's "
                          "consecutive beats)", input=f"--split {config.split}")
    if settings.leads not in LEADS:
        raise EcgcapError(f"choose one of {', '.join(LEADS)}", input=f"--leads {settings.leads}")
    if settings.context < 2:
        raise EcgcapError("must be at least 2 beats", input=f"--context {settings.context}")
    classes = db.classes
    io.list_records(db_dir)
    t0 = time.perf_counter()
    parts = {k: load_beat_leads(db_dir, db, v, config.beats, quiet=quiet or k != "train")
             for k, v in split_records(db, config).items() if v}
    prep_seconds = time.perf_counter() - t0
    y = {k: np.array([classes.index(c) for c in v["label"]], dtype=np.int64)
         for k, v in parts.items()}
    x = {k: model_inputs(v, settings.leads) for k, v in parts.items()}
    model = build_sequence_model(config.model, settings, config.beats, len(classes),
                                 units=config.units, conv_filters=config.conv_filters,
                                 bidirectional=config.bidirectional, dropout=config.dropout,
                                 name=f"{config.db}_{config.model.replace('-', '_')}_beats")
    compile_sequence_model(model, x["train"]["rr"], config.learning_rate, config.clipnorm)
    weights = _weights(config, y["train"], classes)
    batches = WindowBatches(
        x["train"], y["train"], np.array([weights[i] for i in y["train"]], np.float32),
        parts["train"]["record"], settings.context, max(config.batch_size // settings.context, 1),
        augment=config.augment, lead_dropout=settings.lead_dropout if settings.leads == "both"
        else 0.0, seed=config.seed)
    info = {**model_info(config, db), "sequence": dataclasses.asdict(settings)}
    checkpoint = Checkpoint(run_dir, info, "val_macro_f1" if "val" in parts else None,
                            patience=config.patience, config=_config_json(config))
    scoring = [SequenceScores(x["val"], parts["val"]["record"], settings.context, y["val"],
                              classes)] if "val" in parts else []
    train_seconds = fit_resumable(model, batches, checkpoint, run_dir, epochs=config.epochs,
                                  initial_epoch=0, shuffle=False,
                                  callbacks=[StopOnSignal(), batches.callback(), *scoring,
                                             checkpoint],
                                  verbose=0 if quiet else 2)
    best, _ = load_model(run_dir / "best.keras", (BEAT_MODEL,))
    pred = {k: predict_beats(best, x[k], parts[k]["record"], settings.context).argmax(-1)
            for k in ("val", "test") if k in parts}
    records = {k: sorted(set(v["record"].tolist())) for k, v in parts.items()}
    report = _report(config, classes, weights, records, y, pred, checkpoint.state,
                     {"prepare": prep_seconds, "train": train_seconds})
    report["second_leads"] = {k: v["second_leads"] for k, v in parts.items()}
    write_outputs(best, run_dir, info, report)
    return report


def train_from_args(args: Any) -> tuple[dict[str, Any], Path]:
    """``train_ecg --model lstm-seq|simplernn-seq``: as :func:`ecgcap.ecg.api.train_from_args`,
    with ``--context``, ``--leads`` and ``--lead-dropout``."""
    from ecgcap.ecg.api import config_from_args, locate_or_download
    from ecgcap.ecg.databases import get_database
    from ecgcap.ecg.training import TrainConfig
    from ecgcap.runtime.cli import tidy_on_failure
    from ecgcap.runtime.paths import make_run_dir

    db = get_database(args.db)
    if db.task == "rhythm":
        raise EcgcapError("sequence models label beats; use mitdb", input=f"--db {args.db}")
    if args.resume or args.distribute != "none" or args.pipeline != "memory" or \
            args.log_gradients:
        raise EcgcapError("sequence models train in memory on one device, without --resume "
                          "or --log-gradients", input=f"--model {args.model}")
    base = config_from_args(args)
    config = SequenceTrainConfig(
        **{f.name: getattr(base, f.name) for f in dataclasses.fields(TrainConfig)},
        context=args.context, leads=args.leads, lead_dropout=args.lead_dropout,
        beat_encoder=args.beat_encoder)
    name = args.name or f"{db.name}-{config.model}-seed{config.seed}"
    make_run_dir(name, args.runs_dir, overwrite=args.overwrite, check_only=True)
    db_dir = locate_or_download(db.name, args.data_dir, quiet=args.quiet)
    with tidy_on_failure(args.runs_dir) as made:
        run_dir = make_run_dir(name, args.runs_dir, overwrite=args.overwrite)
        made.append(run_dir)
        report = train_sequence(config, db, db_dir, run_dir, quiet=args.quiet)
    return report, run_dir


def _sequence_config_class() -> type:
    from ecgcap.ecg.training import TrainConfig

    @dataclass
    class SequenceTrainConfig(TrainConfig, SequenceSettings):
        """A beat model's :class:`TrainConfig` with the :class:`SequenceSettings`."""

        model: str = "lstm-seq"

    return SequenceTrainConfig


SequenceTrainConfig = _sequence_config_class()


def ensemble_sequence_runs(run_dirs: Sequence[Path], out_dir: Path) -> Path:
    """Average finished sequence runs (e.g. three seeds) into one ``model.keras`` in
    ``out_dir`` (:func:`ecgcap.ecg.models.build_ensemble`); they must share their settings."""
    from ecgcap.ecg.models import build_ensemble
    from ecgcap.ecg.training import BEAT_MODEL
    from ecgcap.runtime.modelfile import load_model, save_model

    loaded = [load_model(Path(r) / "model.keras", (BEAT_MODEL,)) for r in run_dirs]
    infos = [info for _, info in loaded]
    if any(i["sequence"] != infos[0]["sequence"] or i["beats"] != infos[0]["beats"]
           for i in infos):
        raise EcgcapError("runs of an ensemble must share their sequence and beat settings",
                          input=", ".join(str(r) for r in run_dirs))
    model = build_ensemble([m for m, _ in loaded])
    out = Path(out_dir) / "model.keras"
    save_model(model, out, {**infos[0], "ensemble": len(run_dirs)})
    return out


# ---------------------------------------------------------------------------------------------
# inference

def classify_sequence(model: Any, info: dict[str, Any], record: Any, *,
                      annotations: str = "auto", lead: str | None = None,
                      batch_size: int = 64) -> dict[str, Any]:
    """:func:`ecgcap.ecg.inference.classify_record` for a beat-sequence model.

    The primary lead (``lead`` in the result) is the model's (MLII), else ``lead``, else the
    record's first lead with a warning; a two-lead model also reads the record's first other
    lead (``leads`` names the leads read), and a record without one is classified on the
    primary lead alone (the second lead's channels zero, its flag 0), as it was trained.
    """
    import wfdb

    from ecgcap.ecg import processing
    from ecgcap.ecg.dataset import MIN_SECONDS
    from ecgcap.ecg.inference import _beat_lead, beat_positions

    settings = SequenceSettings(**info["sequence"])
    config = BeatConfig.from_info({**info["beats"], **({"lead": lead} if lead else {})})
    path = None if isinstance(record, wfdb.Record) else record
    rec = record if isinstance(record, wfdb.Record) else io.read_record(record)
    name = str(path or rec.record_name)
    signal = io.signal_of(rec)
    names = [str(n) for n in rec.sig_name or []]
    # the primary lead: the model's, else --lead, else the first lead with a warning
    x, primary = _beat_lead(rec, config.lead, name, explicit=lead is not None)
    processing.check_signal(x, rec.fs, min_seconds=MIN_SECONDS, name=name)
    if note := processing.clipping_note(x):
        warnings.warn(f"{name}: {note}", stacklevel=2)
    one_lead = wfdb.Record(record_name=rec.record_name, fs=rec.fs, sig_len=len(x),
                           p_signal=x[:, None], sig_name=[primary], n_sig=1)
    peaks, source = beat_positions(one_lead, path, annotations)
    if len(peaks) < 2:
        raise EcgcapError("fewer than two beats found", input=rec.record_name)
    if settings.leads == "both":
        out = two_lead_beats(signal, names, rec.fs, peaks, config, primary, name=name)
        leads = [str(v) for v in out["leads"]]
    else:
        out = beats_from_signal(x, rec.fs, peaks, config)
        leads = [primary, ""]
    kept = peaks[out["kept"]]
    probs = predict_beats(model, model_inputs(out, settings.leads), None, settings.context,
                          batch_size=batch_size)
    classes = info["classes"]
    beats = [{"sample": int(s), "label": classes[int(row.argmax())],
              "probabilities": {c: round(float(p), 4) for c, p in zip(classes, row, strict=True)}}
             for s, row in zip(kept, probs, strict=True)]
    return {"record": rec.record_name, "fs": float(rec.fs), "positions": source,
            "lead": primary, "leads": [n for n in leads if n], "beats": beats}


def load_for_scoring(path: str | os.PathLike) -> tuple[keras.Model, dict[str, Any]]:
    """A saved sequence model and its description (for benchmarks)."""
    from ecgcap.ecg.training import BEAT_MODEL
    from ecgcap.runtime.modelfile import load_model

    model, info = load_model(path, (BEAT_MODEL,))
    if "sequence" not in info:
        raise EcgcapError("not a beat-sequence model", input=str(path))
    return model, info

