"""Classifying records with a trained model, and writing or scoring WFDB annotation files."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import wfdb
import wfdb.processing

import ecgcap.ecg.layers  # noqa: F401 - registers the custom layers rhythm models hold
from ecgcap.ecg import io, processing
from ecgcap.ecg.dataset import MIN_SECONDS, BeatConfig, beats_from_signal
from ecgcap.runtime.errors import EcgcapError
from ecgcap.runtime.modelfile import load_model

BEAT_MODEL = "ecg-beats"
RHYTHM_MODEL = "ecg-rhythm"
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
SHIPPED = {"beats": MODELS_DIR / "mitdb_lstm_beats.keras",
           "rhythm": MODELS_DIR / "cinc2017_lstm_rhythm.keras"}
# WFDB beat symbols written for each AAMI class (S as A, as PhysioNet's tools expect).
WFDB_SYMBOL = {"N": "N", "S": "A", "V": "V", "F": "F", "Q": "Q"}
# bxb's match window: a test beat within 150 ms of a reference beat is the same beat.
MATCH_WINDOW = 0.150


def load_classifier(path: str | os.PathLike | None = None, task: str = "beats"
                    ) -> tuple[Any, dict[str, Any]]:
    """Load an ECG model (``path``, or the shipped model for ``task``) with its description."""
    if path is None:
        if task not in SHIPPED:
            raise EcgcapError("choose beats or rhythm", input=f"--task {task}")
        path = SHIPPED[task]
        if not path.is_file():
            raise EcgcapError(f"no shipped {task} model in this installation; pass --model",
                              input=str(path))
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
        raise EcgcapError(f"{int(outside.sum())} annotations lie outside the signal "
                          f"(0..{record.sig_len - 1})", input=f"{path}.{annotations}")
    return peaks, annotations


def classify_record(model: Any, info: dict[str, Any], record: str | os.PathLike | wfdb.Record,
                    *, annotations: str = "auto", lead: str | None = None) -> dict[str, Any]:
    """Classify one record (a path or a ``wfdb.Record``) with a beat or a rhythm model.

    A beat model returns ``{"record", "fs", "positions", "beats": [{"sample", "label",
    "probabilities"}]}``, where ``positions`` says where the beat positions came from (``atr``
    or ``xqrs``); a rhythm model returns ``{"record", "label", "probabilities"}`` (see
    :func:`classify_recording`).
    """
    if info.get("kind") == RHYTHM_MODEL:
        return classify_recording(model, info, record, lead=lead)
    if info.get("kind") != BEAT_MODEL:
        raise EcgcapError("not an ECG classifier", input=str(info.get("kind")))
    path = None if isinstance(record, wfdb.Record) else record
    rec = record if isinstance(record, wfdb.Record) else io.read_record(record)
    config = BeatConfig.from_info(info["beats"])
    if lead is not None:
        config = BeatConfig.from_info({**info["beats"], "lead": lead})
    x = processing.select_lead(io.signal_of(rec), rec.sig_name, config.lead)
    processing.check_signal(x, rec.fs, min_seconds=MIN_SECONDS,
                            name=str(path or rec.record_name))
    if note := processing.clipping_note(x):
        warnings.warn(f"{path or rec.record_name}: {note}", stacklevel=2)
    one_lead = wfdb.Record(record_name=rec.record_name, fs=rec.fs, sig_len=len(x),
                           p_signal=x[:, None], sig_name=[config.lead], n_sig=1)
    peaks, source = beat_positions(one_lead, path, annotations)
    name = rec.record_name
    if len(peaks) < 2:
        raise EcgcapError("fewer than two beats found", input=name)
    out = beats_from_signal(x, rec.fs, peaks, config)
    probs = model.predict({"beat": out["beat"], "rr": out["rr"]}, batch_size=1024, verbose=0)
    classes = info["classes"]
    labels = [classes[i] for i in probs.argmax(-1)]
    kept = peaks[out["kept"]]
    beats = [{"sample": int(s), "label": lab,
              "probabilities": {c: round(float(p), 4) for c, p in zip(classes, row, strict=True)}}
             for s, lab, row in zip(kept, labels, probs, strict=True)]
    return {"record": name, "fs": float(rec.fs), "positions": source, "beats": beats}


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


def match_beats(ref_samples: np.ndarray, test_samples: np.ndarray, window: int
                ) -> list[tuple[int, int]]:
    """Pairs (reference index, test index) of beats within ``window`` samples, nearest first."""
    pairs = []
    j = 0
    for i, s in enumerate(ref_samples):
        while j < len(test_samples) and test_samples[j] < s - window:
            j += 1
        best, best_d = -1, window + 1
        k = j
        while k < len(test_samples) and test_samples[k] <= s + window:
            d = abs(int(test_samples[k]) - int(s))
            if d < best_d:
                best, best_d = k, d
            k += 1
        if best >= 0:
            pairs.append((i, best))
            j = best + 1
    return pairs


def score_annotations(record: str | os.PathLike, annotator: str,
                      ann_dir: str | os.PathLike | None = None, reference: str = "atr"
                      ) -> tuple[list[str], list[str], int, int]:
    """Compare a test annotation file with the reference, beat by beat (as bxb does).

    Returns the AAMI classes of the matched beats (reference, test), and the numbers of
    reference beats missed and of test beats that match no reference beat.
    """
    base = io._record_base(record)
    ref = io.read_annotation(base, reference)
    test_base = base if ann_dir is None else Path(ann_dir) / base.name
    test = io.read_annotation(test_base, annotator)
    ref_cls, test_cls = processing.aami_classes(ref.symbol), processing.aami_classes(test.symbol)
    rs, ts = np.asarray(ref.sample)[ref_cls != ""], np.asarray(test.sample)[test_cls != ""]
    rc, tc = ref_cls[ref_cls != ""], test_cls[test_cls != ""]
    pairs = match_beats(rs, ts, int(round(MATCH_WINDOW * ref.fs)))
    y_ref = [str(rc[i]) for i, _ in pairs]
    y_test = [str(tc[j]) for _, j in pairs]
    return y_ref, y_test, len(rs) - len(pairs), len(ts) - len(pairs)
