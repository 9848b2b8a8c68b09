"""Whole recordings as model inputs (the rhythm task): preparation, cache, crops and batches.

A recording is read with wfdb, band-pass filtered, resampled to ``RhythmConfig.fs`` and
normalised (the steps of :mod:`ecgcap.ecg.processing`); wfdb's XQRS detector finds its R peaks
for :func:`ecgcap.ecg.processing.hrv_features`. Prepared recordings are cached per record, or
written in parallel into ragged shards for streamed training (``write_recording_shards``).

Cropping policy (recordings last 9 to 61 s; the model sees at most ``crop_seconds``):

- training: one random crop of ``crop_seconds`` per recording and epoch (shorter recordings
  whole); a batch is right-padded to its longest member, with a 0/1 mask;
- evaluation and inference: crops of ``crop_seconds`` every ``stride_seconds`` covering the
  whole recording (the last one ends at the recording's end); the recording's probabilities
  are the mean over its crops. Recordings are never truncated to a common length.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import wfdb
import wfdb.processing

from ecgcap.ecg import io, processing
from ecgcap.ecg.databases import Database
from ecgcap.runtime.device import cpu_threads
from ecgcap.runtime.errors import EcgcapError
from ecgcap.runtime.files import cached_arrays
from ecgcap.runtime.paths import cache_dir
from ecgcap.runtime.progress import progress
from ecgcap.runtime.shards import ShardSet, prepare_shards

HRV_WIDTH = len(processing.HRV_FEATURES)


@dataclass(frozen=True)
class RhythmConfig:
    """How recordings are prepared and cropped (part of every rhythm model's configuration)."""

    lead: str | None = None    # lead name; None: the first signal
    fs: float = 150.0          # resampling target (Hz)
    highpass: float = 0.5      # baseline wander cut-off (Hz)
    lowpass: float = 40.0      # noise cut-off (Hz)
    min_seconds: float = 5.0   # shorter recordings are refused
    crop_seconds: float = 30.0
    stride_seconds: float = 15.0
    rr_channels: bool = True   # add processing.rr_series beside the waveform

    @property
    def channels(self) -> int:
        return 3 if self.rr_channels else 1

    @property
    def crop(self) -> int:
        return int(round(self.crop_seconds * self.fs))

    @property
    def stride(self) -> int:
        return max(int(round(self.stride_seconds * self.fs)), 1)

    def key(self) -> str:
        """Cache key of the preparation settings (cropping does not change the cache)."""
        prep = {k: v for k, v in asdict(self).items()
                if k not in ("crop_seconds", "stride_seconds")}
        text = json.dumps(prep, sort_keys=True) + "|v1"
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def recording_from_signal(x: np.ndarray, fs: float, config: RhythmConfig = RhythmConfig(),
                          *, name: str = "recording") -> dict[str, np.ndarray]:
    """Model inputs of one single-lead signal: ``signal`` (samples, channels) and ``rr``.

    ``signal`` is the filtered, resampled, normalised waveform (and, with ``rr_channels``, the
    RR series of :func:`ecgcap.ecg.processing.rr_series`); ``rr`` the HRV features of the
    whole recording from the R peaks that wfdb's XQRS finds.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise EcgcapError(f"expected one lead, got an array of shape {x.shape}", input=name)
    processing.check_signal(x, fs, min_seconds=config.min_seconds, name=name)
    peaks = wfdb.processing.xqrs_detect(x.astype(np.float64), fs=fs, verbose=False)
    rr = processing.hrv_features(peaks, fs, len(x) / fs)
    y = processing.filter_signal(x, fs, config.highpass, config.lowpass)
    y = processing.resample_signal(y, fs, config.fs)
    y = processing.normalise(y)[:, None]
    if config.rr_channels:
        at = processing.resample_samples(np.asarray(peaks), fs, config.fs)
        y = np.concatenate([y, processing.rr_series(at, len(y), config.fs)], axis=1)
    return {"signal": y.astype(np.float32), "rr": rr}


def read_recording(path: str | os.PathLike | wfdb.Record, config: RhythmConfig = RhythmConfig()
                   ) -> dict[str, Any]:
    """Read and prepare one record (a path or a ``wfdb.Record``); adds ``record`` and ``fs``."""
    rec = path if isinstance(path, wfdb.Record) else io.read_record(path)
    sig = io.signal_of(rec)
    names = list(rec.sig_name or [])
    x = (processing.select_lead(sig, names, config.lead) if config.lead is not None
         else sig[:, 0])
    out = recording_from_signal(x, float(rec.fs), config,
                                name=str(rec.record_name if isinstance(path, wfdb.Record)
                                         else path))
    return {**out, "record": str(rec.record_name), "fs": float(rec.fs)}


def _signal_and_rr(recording: dict[str, Any]) -> dict[str, Any]:
    return {"signal": recording["signal"], "rr": recording["rr"]}


def load_recordings(db_dir: str | os.PathLike, db: Database, records: Sequence[str],
                    config: RhythmConfig = RhythmConfig(), *, use_cache: bool = True,
                    quiet: bool = False) -> dict[str, Any]:
    """Prepared ``records`` with their reference labels.

    Returns ``{"signal": [arrays], "rr": (n, HRV) array, "label": (n,) str, "record": (n,) str}``.
    """
    labels = io.read_reference(Path(db_dir) / (db.reference or "REFERENCE.csv"), db.classes)
    missing = [r for r in records if r not in labels]
    if missing:
        raise EcgcapError(f"{len(missing)} records have no reference label (first: {missing[0]})",
                          input=str(Path(db_dir) / (db.reference or "")))
    folder = cache_dir() / db.name / config.key()
    signals, rrs = [], []
    for name in progress(list(records), label=f"preparing {len(records)} {db.name} records",
                         quiet=quiet):
        path = Path(db_dir) / name
        part = cached_arrays(folder / f"{name}.npz", io.source_fingerprint(path),
                             lambda path=path: _signal_and_rr(read_recording(path, config)),
                             use_cache=use_cache)
        signals.append(part["signal"])
        rrs.append(part["rr"])
    if not signals:
        raise EcgcapError("no records to load", input=str(db_dir))
    return {"signal": signals, "rr": np.stack(rrs).astype(np.float32),
            "label": np.array([labels[r] for r in records]), "record": np.array(list(records))}


def crop_starts(length: int, crop: int, stride: int) -> np.ndarray:
    """Starts of the evaluation crops: every ``stride`` samples, the last ending at ``length``.

    Examples
    --------
    >>> crop_starts(100, 40, 30).tolist()
    [0, 30, 60]
    >>> crop_starts(30, 40, 30).tolist()
    [0]
    """
    if length <= crop:
        return np.zeros(1, dtype=np.int64)
    starts = list(range(0, length - crop + 1, stride))
    if starts[-1] != length - crop:
        starts.append(length - crop)
    return np.asarray(starts, dtype=np.int64)


def pad_batch(signals: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad signals (samples[, channels]) to the longest: ``(batch, samples, channels)``
    values and a 0/1 mask ``(batch, samples)``."""
    signals = [s[:, None] if s.ndim == 1 else s for s in map(np.asarray, signals)]
    length = max(len(s) for s in signals)
    x = np.zeros((len(signals), length, signals[0].shape[1]), dtype=np.float32)
    mask = np.zeros((len(signals), length), dtype=np.float32)
    for i, s in enumerate(signals):
        x[i, :len(s)] = s
        mask[i, :len(s)] = 1.0
    return x, mask


def recording_shard(task: tuple[list[str], list[str], list[str], RhythmConfig]
                    ) -> dict[str, Any]:
    """A chunk of recordings: ``(paths, names, labels, config)`` -> the shard's arrays
    (``signal`` ragged, one item per recording)."""
    paths, names, labels, config = task
    signals, rrs = [], []
    for path in paths:
        full = read_recording(path, config)
        signals.append(full["signal"].astype(np.float32))
        rrs.append(full["rr"])
    return {"signal": signals, "rr": np.stack(rrs).astype(np.float32),
            "label": np.array(labels), "record": np.array(names)}


def write_recording_shards(db_dir: str | os.PathLike, db: Database, records: Sequence[str],
                           config: RhythmConfig = RhythmConfig(), *, chunk: int = 256,
                           folder: str | os.PathLike | None = None, workers: int | None = None,
                           quiet: bool = False) -> ShardSet:
    """Prepare ``records`` (with their reference labels) into shards of ``chunk`` recordings,
    in parallel, skipping finished shards; the :class:`ShardSet` keeps ``records``' order."""
    labels = io.read_reference(Path(db_dir) / (db.reference or "REFERENCE.csv"), db.classes)
    missing = [r for r in records if r not in labels]
    if missing:
        raise EcgcapError(f"{len(missing)} records have no reference label (first: {missing[0]})",
                          input=str(Path(db_dir) / (db.reference or "")))
    records = list(records)
    key = hashlib.sha256("\n".join(records).encode()).hexdigest()[:12]
    folder = Path(folder) if folder else cache_dir() / db.name / config.key() / f"shards-{key}"
    tasks = []
    for start in range(0, len(records), chunk):
        names = records[start:start + chunk]
        tasks.append((f"{start:08d}", ([str(Path(db_dir) / n) for n in names], names,
                                       [labels[n] for n in names], config)))
    return prepare_shards(tasks, recording_shard, folder, workers=workers or cpu_threads(),
                          quiet=quiet, label=f"preparing {db.name} recordings:")


def uses_rr(model: Any) -> bool:
    """Whether ``model`` has the HRV-feature input ``rr``."""
    return isinstance(model.input, dict) and "rr" in model.input


def predict_recordings(model: Any, signals: Sequence[np.ndarray], rr: np.ndarray,
                       config: RhythmConfig = RhythmConfig(), batch_size: int = 32,
                       predict: Any = None) -> np.ndarray:
    """Class probabilities per recording: the mean over its evaluation crops.

    ``predict(inputs)`` replaces ``model.predict_on_batch`` (e.g. under a distribution).
    """
    predict = predict or model.predict_on_batch
    pieces, owner = [], []
    for i, s in enumerate(signals):
        for start in crop_starts(len(s), config.crop, config.stride):
            pieces.append(s[start:start + config.crop])
            owner.append(i)
    owner_arr = np.asarray(owner)
    order = np.argsort([len(p) for p in pieces], kind="stable")  # similar lengths together
    probs = None
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        x, mask = pad_batch([pieces[k] for k in idx])
        inputs = {"signal": x, "mask": mask}
        if uses_rr(model):
            inputs["rr"] = rr[owner_arr[idx]]
        p = np.asarray(predict(inputs))
        if probs is None:
            probs = np.zeros((len(pieces), p.shape[-1]), dtype=np.float64)
        probs[idx] = p
    assert probs is not None
    counts = np.bincount(owner_arr, minlength=len(signals))
    sums = np.zeros((len(signals), probs.shape[1]))
    np.add.at(sums, owner_arr, probs)
    return (sums / counts[:, None]).astype(np.float32)
