"""From WFDB records to model inputs: the beat pipeline, with a cache per record.

``load_beats`` chains the steps of :mod:`ecgcap.ecg.processing` for each record and returns
NumPy arrays (``beat`` windows, ``rr`` features, labels, positions, record names). Preparing a
record is cached as ``.npz`` keyed by the configuration, so a second run reads it back.
``write_beat_shards`` prepares records in parallel into NumPy shards (one per record) that
training streams from instead (:mod:`ecgcap.runtime.shards`). No deep-learning backend is
imported here, so preparation runs in plain worker processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ecgcap.ecg import io, processing
from ecgcap.ecg.databases import Database
from ecgcap.runtime.device import cpu_threads
from ecgcap.runtime.errors import EcgcapError
from ecgcap.runtime.files import cached_arrays
from ecgcap.runtime.paths import cache_dir
from ecgcap.runtime.progress import progress
from ecgcap.runtime.shards import ShardSet, prepare_shards


@dataclass(frozen=True)
class BeatConfig:
    """How beats are cut from a record (part of every beat model's saved configuration)."""

    lead: str = "MLII"
    fs: float = 180.0          # resampling target (Hz)
    before: float = 0.25       # window start before the R peak (s)
    after: float = 0.45        # window end after the R peak (s)
    highpass: float = 0.5      # baseline wander cut-off (Hz)
    lowpass: float = 40.0      # noise cut-off (Hz)
    local_beats: int = 10      # beats in the local RR average
    rr_seconds: bool = False   # also the four RR intervals in seconds (off: only their ratios)
    rr_irregularity: bool = True   # a ninth RR feature: the local rhythm's irregularity

    @classmethod
    def from_info(cls, beats: dict) -> BeatConfig:
        """The settings saved with a model; models saved before ``rr_seconds`` existed fed the
        RR intervals in seconds, and those saved before ``rr_irregularity`` eight features."""
        return cls(**{"rr_seconds": True, "rr_irregularity": False, **beats})

    @property
    def rr_features(self) -> int:
        """Width of the model's ``rr`` input."""
        return RR_FEATURES + int(self.rr_irregularity)

    @property
    def window(self) -> tuple[int, int]:
        """(samples before, samples after) the R peak at the target rate."""
        return int(round(self.before * self.fs)), int(round(self.after * self.fs))

    @property
    def length(self) -> int:
        before, after = self.window
        return before + after

    def key(self) -> str:
        settings = asdict(self)
        if not self.rr_irregularity:  # caches made before the setting existed stay valid
            del settings["rr_irregularity"]
        text = json.dumps(settings, sort_keys=True) + "|v1"
        return hashlib.sha256(text.encode()).hexdigest()[:12]


BEAT_CHANNELS = 2   # the normalised beat, and the beat minus the record's median beat
RR_FEATURES = 8     # previous, next, local, average RR (s) and four ratios (+1: irregularity)
MIN_SECONDS = 2.0   # shorter records are refused: two beats and the band-pass filter's padding


def relative_rr(rr: np.ndarray, seconds: bool = True) -> np.ndarray:
    """RR features for the model: the four intervals and their ratios to the patient's rhythm.

    Columns: prev, next, local, average (seconds); prev/average, next/average, local/average,
    prev/local. The ratios make prematurity visible whatever the patient's heart rate.
    ``seconds=False`` sets the first four columns to 0 (a constant the model's normalisation
    maps to 0): heart rates in seconds tell patients apart more than beat classes, and only
    the ratios carried over to unseen patients (``benchmarks/ecg_ds1_cv.py --rr``).
    """
    prev, nxt, local, avg = (rr[:, i] for i in range(4))
    eps = 1e-6
    ratios = np.stack([prev / (avg + eps), nxt / (avg + eps), local / (avg + eps),
                       prev / (local + eps)], axis=1)
    absolute = rr if seconds else np.zeros_like(rr)
    return np.concatenate([absolute, ratios], axis=1).astype(np.float32)


def beats_from_signal(x: np.ndarray, fs: float, peaks: np.ndarray, config: BeatConfig
                      ) -> dict[str, np.ndarray]:
    """Run the beat pipeline on one lead ``x`` with R peaks ``peaks`` (samples at ``fs``).

    Returns ``beat`` (beats, length, 2), ``rr`` (beats, ``config.rr_features``) and ``kept``
    (mask over ``peaks``).
    """
    if len(peaks) < 2:
        raise EcgcapError("fewer than two beats", input="record")
    x = processing.filter_signal(x, fs, config.highpass, config.lowpass)
    x = processing.resample_signal(x, fs, config.fs)
    x = processing.normalise(x)
    at = processing.resample_samples(peaks, fs, config.fs)
    before, after = config.window
    windows, kept = processing.beat_windows(x, at, before, after)
    if not kept.any():
        raise EcgcapError("recording shorter than one beat window", input="record")
    template = np.median(windows, axis=0, keepdims=True)
    beat = np.stack([windows, windows - template], axis=-1)
    rr = relative_rr(processing.rr_features(np.asarray(peaks), fs, config.local_beats)[kept],
                     config.rr_seconds)
    if config.rr_irregularity:
        irregular = processing.rr_irregularity(np.asarray(peaks), config.local_beats)[kept]
        rr = np.concatenate([rr, irregular[:, None]], axis=1)
    return {"beat": beat.astype(np.float32), "rr": rr, "kept": kept}


def prepare_record(path: str | os.PathLike, db: Database, config: BeatConfig
                   ) -> dict[str, np.ndarray]:
    """Beats of one annotated record: inputs, AAMI labels and sample positions."""
    record = io.read_record(path)
    x = processing.select_lead(io.signal_of(record), record.sig_name, config.lead)
    processing.check_signal(x, record.fs, min_seconds=MIN_SECONDS, name=str(path))
    if note := processing.clipping_note(x):
        warnings.warn(f"{path}: {note}", stacklevel=2)
    ann = io.read_annotation(path, db.annotator or "atr")
    if unknown := processing.unknown_symbols(ann.symbol):
        warnings.warn(f"{path}: {processing.describe_ignored(unknown)}", stacklevel=2)
    classes = processing.aami_classes(ann.symbol, db.label_map)
    is_beat = classes != ""
    peaks = np.asarray(ann.sample)[is_beat]
    inside = (peaks >= 0) & (peaks < len(x))
    if not inside.all():
        warnings.warn(f"{path}: {int((~inside).sum())} beat annotations outside the signal "
                      "ignored", stacklevel=2)
    peaks, labels = peaks[inside], classes[is_beat][inside]
    out = beats_from_signal(x, record.fs, peaks, config)
    kept = out.pop("kept")
    out["label"] = labels[kept]
    out["sample"] = peaks[kept].astype(np.int64)
    return out


def load_beats(db_dir: str | os.PathLike, db: Database, records: Sequence[str],
               config: BeatConfig = BeatConfig(), *, use_cache: bool = True,
               quiet: bool = False) -> dict[str, np.ndarray]:
    """Beats of ``records`` concatenated: ``beat``, ``rr``, ``label``, ``sample``, ``record``.

    Examples
    --------
    >>> data = load_beats("../shared/data/mitdb", get_database("mitdb"), ["100"])  # doctest: +SKIP
    >>> data["beat"].shape
    (2270, 126, 2)
    """
    parts = _cached_records(db_dir, db, records, cache_dir() / db.name / config.key(),
                            lambda path: prepare_record(path, db, config), use_cache, quiet)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _cached_records(db_dir: str | os.PathLike, db: Database, records: Sequence[str],
                    folder: Path, prepare, use_cache: bool, quiet: bool) -> list[dict]:
    """``prepare(path)`` of each record, cached in ``folder`` (keyed by the record's files),
    with a ``record`` column added; refuses an empty list."""
    parts = []
    for name in progress(list(records), label=f"preparing {len(records)} {db.name} records",
                         quiet=quiet):
        path = Path(db_dir) / name
        source = io.source_fingerprint(path, (".hea", ".dat", f".{db.annotator or 'atr'}"))
        part = cached_arrays(folder / f"{name}.npz", source, lambda path=path: prepare(path),
                             use_cache=use_cache)
        part["record"] = np.full(len(part["label"]), name)
        parts.append(part)
    if not parts:
        raise EcgcapError("no records to load", input=str(db_dir))
    return parts


def beat_shard(task: tuple[str, str, Database, BeatConfig]) -> dict[str, np.ndarray]:
    """One record's shard: :func:`prepare_record` plus the record name on every beat."""
    path, name, db, config = task
    part = prepare_record(path, db, config)
    part["record"] = np.full(len(part["label"]), name)
    return part


def write_beat_shards(db_dir: str | os.PathLike, db: Database, records: Sequence[str],
                      config: BeatConfig = BeatConfig(), *, names: Sequence[str] | None = None,
                      folder: str | os.PathLike | None = None, workers: int | None = None,
                      quiet: bool = False) -> ShardSet:
    """Prepare ``records`` into one shard each (in parallel, skipping finished ones).

    ``names`` renames the shards (default: the record names); ``folder`` defaults to the data
    cache, keyed by the beat configuration; ``workers`` defaults to every core.
    """
    folder = Path(folder) if folder else cache_dir() / db.name / config.key() / "shards"
    names = list(names or records)
    tasks = [(n, (str(Path(db_dir) / r), n, db, config)) for n, r in zip(names, records,
                                                                        strict=True)]
    return prepare_shards(tasks, beat_shard, folder, workers=workers or cpu_threads(),
                          quiet=quiet, label=f"preparing {db.name} records:")


def second_lead(names: Sequence[str], primary: str) -> str | None:
    """The lead a two-lead model reads beside ``primary``: the first other lead, or None.

    Examples
    --------
    >>> second_lead(["V5", "MLII"], "MLII")   # mitdb 114: its leads are swapped
    'V5'
    >>> second_lead(["MLII"], "MLII") is None
    True
    """
    others = [str(n) for n in names if str(n) != primary]
    return others[0] if others else None


def two_lead_beats(signal: np.ndarray, names: Sequence[str], fs: float, peaks: np.ndarray,
                   config: BeatConfig, primary: str | None = None, *, name: str = "record"
                   ) -> dict[str, np.ndarray]:
    """:func:`beats_from_signal` on the primary lead and on the second lead, side by side.

    Returns ``beat`` (beats, length, 4): the primary lead's two channels, then the second
    lead's (zeros where the record has no usable second lead), ``rr``, ``kept``, ``lead2``
    (beats,): 1 where the second lead is present, and ``leads``: the two lead names (the second
    ``""`` when absent). A second lead that is flat or holds NaN is left out with a warning.
    """
    names = [str(n) for n in names]
    primary = primary or config.lead
    x = processing.select_lead(signal, names, primary)
    out = beats_from_signal(x, fs, peaks, config)
    other = second_lead(names, primary)
    if other is not None:
        x2 = processing.select_lead(signal, names, other)
        try:
            processing.check_signal(x2, fs, min_seconds=MIN_SECONDS, name=f"{name} lead {other}")
        except EcgcapError as exc:
            warnings.warn(f"{exc}; classified on lead {primary} alone", stacklevel=2)
            other = None
    if other is None:
        second = np.zeros_like(out["beat"])
    else:
        second = beats_from_signal(x2, fs, peaks, config)["beat"]
    out["beat"] = np.concatenate([out["beat"], second], axis=-1)
    out["lead2"] = np.full(len(out["rr"]), float(other is not None), dtype=np.float32)
    out["leads"] = np.array([primary, other or ""])
    return out


def prepare_record_leads(path: str | os.PathLike, db: Database, config: BeatConfig
                         ) -> dict[str, np.ndarray]:
    """:func:`prepare_record` with both leads (:func:`two_lead_beats`): ``beat`` has 4 channels;
    ``lead2`` flags the beats with a second lead, ``leads`` names the two leads."""
    out = prepare_record(path, db, config)
    record = io.read_record(path)
    # the beats prepare_record kept: their positions have full windows in both leads
    both = two_lead_beats(io.signal_of(record), record.sig_name, record.fs, out["sample"],
                          config, name=str(path))
    if not both["kept"].all():
        raise EcgcapError("the two leads kept different beats", input=str(path))
    out.update(beat=both["beat"], lead2=both["lead2"], leads=both["leads"])
    return out


def load_beat_leads(db_dir: str | os.PathLike, db: Database, records: Sequence[str],
                    config: BeatConfig = BeatConfig(), *, use_cache: bool = True,
                    quiet: bool = False) -> dict[str, np.ndarray]:
    """:func:`load_beats` with both leads (:func:`prepare_record_leads`), cached per record.

    Adds ``lead2`` per beat and ``second_leads``: ``{record: its second lead's name}`` ("" for
    none), which a run's report records.
    """
    parts = _cached_records(db_dir, db, records, cache_dir() / db.name / config.key() /
                            "two_leads", lambda path: prepare_record_leads(path, db, config),
                            use_cache, quiet)
    seconds = {name: str(p.pop("leads")[1]) for p, name in zip(parts, records, strict=True)}
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out["second_leads"] = seconds
    return out
