"""Classifying records with a trained model, and writing or scoring WFDB annotation files."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import wfdb
import wfdb.processing

from ecgcap.ecg import io, processing
from ecgcap.ecg.dataset import MIN_SECONDS, BeatConfig, beats_from_signal
from ecgcap.ecg.scoring import MATCH_WINDOW, match_beats, score_annotations  # noqa: F401
from ecgcap.runtime.errors import EcgcapError
from ecgcap.runtime.modelfile import load_model

BEAT_MODEL = "ecg-beats"
RHYTHM_MODEL = "ecg-rhythm"
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
SHIPPED = {"beats": MODELS_DIR / "mitdb_lstm_beats.keras",
           "rhythm": MODELS_DIR / "cinc2017_lstm_rhythm.keras"}
# WFDB beat symbols written for each AAMI class (S as A, as PhysioNet's tools expect).
WFDB_SYMBOL = {"N": "N", "S": "A", "V": "V", "F": "F", "Q": "Q"}


def load_classifier(path: str | os.PathLike | None = None, task: str = "beats"
                    ) -> tuple[Any, dict[str, Any]]:
    """Load an ECG model (``path``, or the shipped model for ``task``) with its description.

    A ``.tflite`` path is an export (:mod:`ecgcap.ecg.export`), run by the LiteRT interpreter
    without TensorFlow: :func:`ecgcap.ecg.litert.load_litert_classifier`; a ``.onnx`` path
    one run by ONNX Runtime: :func:`ecgcap.ecg.onnx.load_onnx_classifier`.
    """
    if path is None:
        if task not in SHIPPED:
            raise EcgcapError("choose beats or rhythm", input=f"--task {task}")
        path = SHIPPED[task]
        if not path.is_file():
            raise EcgcapError(f"no shipped {task} model in this installation; pass --model",
                              input=str(path))
    if Path(path).suffix == ".tflite":
        from ecgcap.ecg.litert import load_litert_classifier

        return load_litert_classifier(path)
    if Path(path).suffix == ".onnx":
        from ecgcap.ecg.onnx import load_onnx_classifier

        return load_onnx_classifier(path)
    import ecgcap.ecg.layers  # noqa: F401 - registers the custom layers rhythm models hold

    return load_model(path, (BEAT_MODEL, RHYTHM_MODEL))


def beat_positions(record: wfdb.Record, path: str | os.PathLike | None, annotations: str
                   ) -> tuple[np.ndarray, str]:
    """R-peak positions and where they came from: an annotation file, or wfdb's XQRS detector.

    ``annotations`` is an annotator name (``atr``), ``xqrs``, or ``auto`` (the ``atr`` file when
    the record has one, else XQRS).
    """
    if annotations == "auto":
        has_atr = path is not None and Path(f"{io._record_base(path)}.atr").is_file()
        annotations = "atr" if has_atr else "xqrs"
    if annotations == "xqrs":
        sig = io.signal_of(record)[:, 0]
        peaks = wfdb.processing.xqrs_detect(sig.astype(np.float64), fs=record.fs, verbose=False)
        return np.asarray(peaks, dtype=np.int64), "xqrs"
    if path is None:
        raise EcgcapError("an in-memory record has no annotation file; use --annotations xqrs",
                          input=record.record_name)
    ann = io.read_annotation(path, annotations)
    if unknown := processing.unknown_symbols(ann.symbol):
        warnings.warn(f"{path}.{annotations}: {processing.describe_ignored(unknown)}",
                      stacklevel=2)
    beats = processing.aami_classes(ann.symbol) != ""
    peaks = np.asarray(ann.sample)[beats]
    outside = (peaks < 0) | (peaks >= record.sig_len)
    if outside.any():
        first = int(peaks[outside][0])
        warnings.warn(f"{path}.{annotations}: {int(outside.sum())} beat annotations lie outside "
                      f"the signal (samples 0..{record.sig_len - 1}; first at sample {first}); "
                      "skipped", stacklevel=2)
    return peaks[~outside], annotations


def classify_record(model: Any, info: dict[str, Any], record: str | os.PathLike | wfdb.Record,
                    *, annotations: str = "auto", lead: str | None = None) -> dict[str, Any]:
    """Classify one record (a path or a ``wfdb.Record``) with a beat or a rhythm model.

    A beat model returns ``{"record", "fs", "positions", "lead", "beats": [{"sample",
    "label", "probabilities"}]}``, where ``positions`` says where the beat positions came from
    (``atr`` or ``xqrs``) and ``lead`` which lead was read (the model's; else ``--lead``, else
    the record's first lead, with a warning); a rhythm model returns ``{"record", "label",
    "probabilities"}`` (see :func:`classify_recording`).
    """
    if info.get("kind") == RHYTHM_MODEL:
        return classify_recording(model, info, record, lead=lead)
    if info.get("kind") != BEAT_MODEL:
        raise EcgcapError("not an ECG classifier", input=str(info.get("kind")))
    if "sequence" in info:  # a beat-sequence model: windows of beats (ecgcap.ecg.sequence)
        from ecgcap.ecg.sequence import classify_sequence

        return classify_sequence(model, info, record, annotations=annotations, lead=lead)
    name, source, kept, out = beat_inputs(info, record, annotations=annotations, lead=lead)
    probs = model.predict({"beat": out["beat"], "rr": out["rr"]}, batch_size=1024, verbose=0)
    classes = info["classes"]
    labels = [classes[i] for i in probs.argmax(-1)]
    beats = [{"sample": int(s), "label": lab,
              "probabilities": {c: round(float(p), 4) for c, p in zip(classes, row, strict=True)}}
             for s, lab, row in zip(kept, labels, probs, strict=True)]
    return {"record": name, "fs": float(out["fs"]), "positions": source,
            "lead": str(out["lead"]), "beats": beats}


def beat_inputs(info: dict[str, Any], record: str | os.PathLike | wfdb.Record, *,
                annotations: str = "auto", lead: str | None = None
                ) -> tuple[str, str, np.ndarray, dict[str, np.ndarray]]:
    """A beat model's inputs for one record, as :func:`classify_record` makes them.

    Returns the record's name, where the beat positions came from (``atr`` or ``xqrs``), the
    positions of the beats kept, and ``{"beat", "rr", "fs", "lead"}`` (the arrays the model
    takes, the record's sampling rate and the name of the lead read).
    """
    path = None if isinstance(record, wfdb.Record) else record
    rec = record if isinstance(record, wfdb.Record) else io.read_record(record)
    config = BeatConfig.from_info(info["beats"])
    if lead is not None:
        config = BeatConfig.from_info({**info["beats"], "lead": lead})
    x, used = _beat_lead(rec, config.lead, str(path or rec.record_name),
                         explicit=lead is not None)
    processing.check_signal(x, rec.fs, min_seconds=MIN_SECONDS,
                            name=str(path or rec.record_name))
    if note := processing.clipping_note(x):
        warnings.warn(f"{path or rec.record_name}: {note}", stacklevel=2)
    one_lead = wfdb.Record(record_name=rec.record_name, fs=rec.fs, sig_len=len(x),
                           p_signal=x[:, None], sig_name=[used], n_sig=1)
    peaks, source = beat_positions(one_lead, path, annotations)
    name = rec.record_name
    if len(peaks) < 2:
        raise EcgcapError("fewer than two beats found", input=name)
    out = beats_from_signal(x, rec.fs, peaks, config)
    kept = peaks[out.pop("kept")]
    return name, source, kept, {**out, "fs": np.float64(rec.fs), "lead": np.str_(used)}


def _beat_lead(rec: wfdb.Record, lead: str, name: str, *, explicit: bool = False
               ) -> tuple[np.ndarray, str]:
    """The lead a beat model reads and its name: ``lead`` when the record has it, else (unless
    ``explicit``, when it is an error) the record's first lead, with a one-line warning naming
    it (:func:`ecgcap.ecg.processing.choose_lead`)."""
    names = [str(n) for n in rec.sig_name or []]
    used, notice = processing.choose_lead(names, lead, explicit=explicit)
    if notice is not None:
        hint = "for its rhythm use --task rhythm" if len(names) == 1 else \
            "--lead NAME picks another"
        warnings.warn(f"{name}: {notice} ({hint})", stacklevel=3)
    return processing.select_lead(io.signal_of(rec), names, used), used


def beat_summary(result: dict[str, Any], classes: tuple[str, ...] = ("N", "S", "V", "F", "Q"),
                 ectopic: tuple[str, ...] = ("S", "V", "F")) -> dict[str, Any]:
    """What a person wants to know of a beat classification (:func:`classify_record`).

    Returns ``{"record", "lead" (the lead read; None when the result does not say), "beats",
    "counts", "seconds" (first to last beat), "heart_rate" (beats a minute over that span,
    None under two beats), "times" ({class: seconds of its beats} for the ectopic classes),
    "per_minute" (ectopic beats in each minute of the record)}``.
    """
    fs = float(result["fs"])
    beats = result["beats"]
    samples = np.array([b["sample"] for b in beats], dtype=np.float64)
    labels = [b["label"] for b in beats]
    counts = {c: labels.count(c) for c in dict.fromkeys([*classes, *labels])}
    span = (samples[-1] - samples[0]) / fs if len(samples) > 1 else 0.0
    rate = 60.0 * (len(samples) - 1) / span if span > 0 else None
    times = {c: [round(float(s) / fs, 2) for s, lab in zip(samples, labels, strict=True)
                 if lab == c] for c in ectopic if counts.get(c)}
    every = np.array(sorted(t for ts in times.values() for t in ts))
    minutes = int(samples[-1] / fs // 60) + 1 if len(samples) else 0
    per_minute = np.bincount((every // 60).astype(int), minlength=minutes).tolist()
    return {"record": result["record"], "lead": result.get("lead"), "beats": len(beats),
            "counts": counts,
            "seconds": round(span, 2), "heart_rate": None if rate is None else round(rate, 1),
            "times": times, "per_minute": per_minute}


def clock(seconds: float) -> str:
    """``75.3`` as ``1:15``, ``3725`` as ``1:02:05``: a time into a record."""
    s = int(seconds)
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def format_beat_summary(summary: dict[str, Any], first: int = 5, busiest: int = 3) -> list[str]:
    """:func:`beat_summary` as a few lines: counts and shares per class, mean heart rate, the
    first ``first`` times of each ectopic class and the ``busiest`` minutes for them."""
    n = summary["beats"]
    rate = summary["heart_rate"]
    head = f"{summary['record']}: {n} beats"
    if rate is not None:
        head += f", mean heart rate {rate:.0f}/min"
    if summary.get("lead"):
        head += f", lead {summary['lead']}"
    shares = ", ".join(f"{c} {k} ({100 * k / n:.1f}%)" if k else f"{c} 0"
                       for c, k in summary["counts"].items()) if n else "no beats"
    lines = [head, f"  {shares}"]
    for c, ts in summary["times"].items():
        more = f" and {len(ts) - first} more" if len(ts) > first else ""
        lines.append(f"  {c} at {', '.join(clock(t) for t in ts[:first])}{more}")
    per_minute = summary["per_minute"]
    total = sum(per_minute)
    names = ", ".join(summary["times"]) or "S, V, F"
    if not total:
        lines.append(f"  no ectopic beats ({names})")
        return lines
    top = sorted(range(len(per_minute)), key=lambda m: (-per_minute[m], m))[:busiest]
    top = [m for m in top if per_minute[m]]
    where = ", ".join(f"{clock(60 * m)}-{clock(60 * m + 60)} ({per_minute[m]})" for m in top)
    active = sum(1 for k in per_minute if k)
    lines.append(f"  ectopic beats ({names}): {total} in {active} of {len(per_minute)} minutes; "
                 f"most in {where}")
    return lines


def classify_recording(model: Any, info: dict[str, Any],
                       record: str | os.PathLike | wfdb.Record, *, lead: str | None = None
                       ) -> dict[str, Any]:
    """One rhythm label for a whole record: ``{"record", "label", "probabilities"}``.

    The record is resampled to the model's rate; its probabilities are the mean over crops
    (see :mod:`ecgcap.ecg.recordings`).
    """
    from ecgcap.ecg.recordings import RhythmConfig, predict_recordings, read_recording

    settings = dict(info["rhythm"])
    if lead is not None:
        settings["lead"] = lead
    config = RhythmConfig(**settings)
    prepared = read_recording(record, config)
    probs = predict_recordings(model, [prepared["signal"]], prepared["rr"][None], config)[0]
    classes = info["classes"]
    return {"record": prepared["record"], "label": classes[int(probs.argmax())],
            "probabilities": {c: round(float(p), 4) for c, p in zip(classes, probs, strict=True)}}


def write_wfdb(result: dict[str, Any], annotator: str, out_dir: str | os.PathLike) -> Path:
    """Write a classification as ``<out_dir>/<record>.<annotator>`` with WFDB beat symbols."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = np.array([b["sample"] for b in result["beats"]], dtype=np.int64)
    symbols = [WFDB_SYMBOL[b["label"]] for b in result["beats"]]
    target = out_dir / f"{result['record']}.{annotator}"
    tmp_name = f"{result['record']}_ecgcap_tmp"
    wfdb.wrann(tmp_name, annotator, samples, symbol=symbols, fs=result["fs"],
               write_dir=str(out_dir))
    os.replace(out_dir / f"{tmp_name}.{annotator}", target)
    return target
