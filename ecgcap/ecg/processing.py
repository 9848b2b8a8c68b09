"""ECG processing steps, one function each, on arrays and a sampling rate (no files).

The steps, in the order the beat pipeline chains them::

    x = select_lead(signal, names, "MLII")
    x = filter_signal(x, fs)                       # baseline wander and high-frequency noise
    x, peaks = resample_signal(x, fs, 180), resample_samples(peaks, fs, 180)
    x = normalise(x)                               # per record
    windows, kept = beat_windows(x, peaks, before, after)
    rr = rr_features(peaks, fs)                    # previous, next, local and record-average RR
    labels = aami_classes(symbols)

The rhythm pipeline (whole recordings) filters, resamples and normalises the same way, and adds
:func:`hrv_features`, heart-rate variability over the whole recording, from detected R peaks.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np
from scipy import signal as sps

from ecgcap.runtime.errors import EcgcapError


def select_lead(signal: np.ndarray, names: Sequence[str], lead: str = "MLII") -> np.ndarray:
    """The column of ``signal`` (samples, leads) whose name is ``lead``, as float32.

    Examples
    --------
    >>> select_lead(np.zeros((5, 2)), ["V5", "MLII"], "MLII").shape
    (5,)
    """
    signal = np.asarray(signal)
    if signal.ndim != 2 or signal.shape[1] != len(names):
        raise ValueError(f"signal of shape {signal.shape} does not match {len(names)} lead names")
    names = [str(n) for n in names]
    if lead not in names:
        raise EcgcapError(f"no lead {lead!r} (leads: {', '.join(names)})", input="--lead")
    return signal[:, names.index(lead)].astype(np.float32)


def choose_lead(names: Sequence[str], lead: str, *, explicit: bool = False
                ) -> tuple[str, str | None]:
    """The lead to read for a model trained on ``lead``, and a notice when it is another one.

    The named lead when the record has it; otherwise, unless ``explicit`` (the user asked for
    ``lead`` with ``--lead``, an error then), the record's first lead, with a one-line notice
    naming it (Holter files often name their leads ``ECG1``, ``ECG2`` or ``CH1``).

    Examples
    --------
    >>> choose_lead(["V5", "MLII"], "MLII")
    ('MLII', None)
    >>> choose_lead(["ECG1", "ECG2"], "MLII")[0]
    'ECG1'
    """
    names = [str(n) for n in names]
    if lead in names:
        return lead, None
    if explicit or not names:
        listed = ", ".join(names) or "none"
        raise EcgcapError(f"no lead {lead!r} (leads: {listed})", input="--lead")
    return names[0], (f"no lead {lead!r} (leads: {', '.join(names)}); classified on the first "
                      f"lead, {names[0]}, which the model was not trained on")


def check_signal(x: np.ndarray, fs: float, *, min_seconds: float, name: str = "signal") -> None:
    """Refuse, in one line naming ``name``, a lead that cannot be an ECG recording: shorter
    than ``min_seconds``, with NaN or infinite samples (WFDB's invalid-sample value reads as
    NaN), or constant (a flat line)."""
    x = np.asarray(x)
    if len(x) < min_seconds * fs:
        raise EcgcapError(f"recording of {len(x) / fs:.2f} s is shorter than the "
                          f"{min_seconds:g} s minimum", input=name)
    finite = np.isfinite(x)
    if not finite.all():
        what = "no valid samples (all NaN or infinite)" if not finite.any() else \
            f"{int((~finite).sum())} NaN or infinite samples"
        raise EcgcapError(f"signal has {what}", input=name)
    if np.ptp(x) == 0:
        raise EcgcapError("signal is constant (a flat line, no ECG)", input=name)


def resample_signal(x: np.ndarray, fs: float, target_fs: float) -> np.ndarray:
    """Resample ``x`` from ``fs`` to ``target_fs`` Hz (polyphase, anti-aliased)."""
    if fs <= 0 or target_fs <= 0:
        raise ValueError(f"sampling rates must be positive, got {fs} and {target_fs}")
    if fs == target_fs:
        return np.asarray(x, dtype=np.float32)
    ratio = Fraction(target_fs / fs).limit_denominator(1000)
    return sps.resample_poly(x, ratio.numerator, ratio.denominator).astype(np.float32)


def resample_samples(samples: np.ndarray, fs: float, target_fs: float) -> np.ndarray:
    """Sample positions at ``fs`` mapped to the nearest position at ``target_fs``."""
    return np.round(np.asarray(samples, dtype=np.float64) * target_fs / fs).astype(np.int64)


def filter_signal(x: np.ndarray, fs: float, highpass: float = 0.5, lowpass: float = 40.0,
                  order: int = 2) -> np.ndarray:
    """Remove baseline wander (< ``highpass`` Hz) and noise (> ``lowpass`` Hz).

    A zero-phase Butterworth band-pass (``scipy.signal.sosfiltfilt``), so R peaks do not move.
    """
    if not 0 < highpass < lowpass:
        raise ValueError(f"need 0 < highpass < lowpass, got {highpass}, {lowpass}")
    if not lowpass < fs / 2:
        raise EcgcapError(f"sampling rate {fs:g} Hz is too low for the {lowpass:g} Hz noise "
                          f"filter (it needs more than {2 * lowpass:g} Hz)", input="signal")
    sos = sps.butter(order, [highpass, lowpass], btype="bandpass", fs=fs, output="sos")
    return sps.sosfiltfilt(sos, np.asarray(x, dtype=np.float64)).astype(np.float32)


def normalise(x: np.ndarray) -> np.ndarray:
    """Per-record robust standardisation: subtract the median, divide by the scaled MAD.

    Robust to the few huge artefacts a 30-minute record has; a flat signal raises an error.
    """
    x = np.asarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise EcgcapError("signal contains NaN or infinite values", input="signal")
    median = np.median(x)
    mad = 1.4826 * np.median(np.abs(x - median))
    if not mad > 1e-8:
        mad = float(np.std(x))
    if not mad > 1e-8:
        raise EcgcapError("signal is constant (flat line)", input="signal")
    return ((x - median) / mad).astype(np.float32)


def beat_windows(x: np.ndarray, peaks: np.ndarray, before: int, after: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Windows ``x[p - before : p + after]`` around each peak ``p``.

    Returns ``(windows, kept)``: windows of shape (kept beats, before + after) and the boolean
    mask of the peaks far enough from both ends to have a full window.
    """
    if before < 0 or after < 1:
        raise ValueError(f"need before >= 0 and after >= 1, got {before} and {after}")
    peaks = np.asarray(peaks, dtype=np.int64)
    kept = (peaks - before >= 0) & (peaks + after <= len(x))
    starts = peaks[kept] - before
    index = starts[:, None] + np.arange(before + after)[None, :]
    return np.asarray(x, dtype=np.float32)[index], kept


def rr_features(peaks: np.ndarray, fs: float, local_beats: int = 10) -> np.ndarray:
    """RR-interval features per beat, in seconds: previous, next, local and record average.

    ``local`` is the mean RR over the ``local_beats`` intervals centred on the beat. The first
    beat borrows its next interval as previous, the last its previous as next.

    Returns an array (beats, 4).
    """
    peaks = np.asarray(peaks, dtype=np.float64)
    n = len(peaks)
    if n < 2:
        raise EcgcapError("need at least two beats for RR intervals", input="beats")
    rr = np.diff(peaks) / fs
    prev = np.concatenate([[rr[0]], rr])
    nxt = np.concatenate([rr, [rr[-1]]])
    half = max(local_beats // 2, 1)
    csum = np.concatenate([[0.0], np.cumsum(rr)])
    idx = np.arange(n)
    lo = np.clip(idx - half, 0, len(rr))
    hi = np.clip(idx + half, 0, len(rr))
    hi = np.maximum(hi, lo + 1)
    hi = np.minimum(hi, len(rr))
    lo = np.minimum(lo, hi - 1)
    local = (csum[hi] - csum[lo]) / (hi - lo)
    average = np.full(n, rr.mean())
    return np.stack([prev, nxt, local, average], axis=1).astype(np.float32)


def rr_irregularity(peaks: np.ndarray, local_beats: int = 10) -> np.ndarray:
    """How irregular the rhythm around each beat is: the median absolute difference between
    successive RR intervals over the ``local_beats`` intervals centred on the beat, over their
    median interval (about 0 in sinus rhythm with an isolated ectopic beat, high in atrial
    fibrillation, where a short interval is not a premature beat). Unitless, shape (beats,).
    """
    peaks = np.asarray(peaks, dtype=np.float64)
    n = len(peaks)
    if n < 2:
        raise EcgcapError("need at least two beats for RR intervals", input="beats")
    rr = np.diff(peaks)
    half = max(local_beats // 2, 1)
    out = np.zeros(n, dtype=np.float32)
    for i in range(n):  # interval j lies between beats j and j + 1
        window = rr[max(i - half, 0):min(i + half, len(rr))]
        if len(window) >= 2:
            out[i] = np.median(np.abs(np.diff(window))) / np.median(window)
    return out


HRV_FEATURES = ("heart_rate", "median_rr", "mean_rr", "cv_rr", "rmssd_rel", "pnn50",
                "median_drr_rel", "irregular_share", "min_rr_rel", "max_rr_rel",
                "turning_point_share", "enough_beats")


def hrv_features(peaks: np.ndarray, fs: float, duration: float) -> np.ndarray:
    """Heart-rate variability of a recording from its R peaks (``HRV_FEATURES``, in order).

    Heart rate (beats per minute, from the beat count), median and mean RR (s), RR coefficient
    of variation, RMSSD / mean RR, pNN50, median successive difference / median RR, the share
    of successive intervals differing by over 15 %, min and max RR / median RR, the share of
    turning points in the RR series (about 2/3 for a random series such as atrial
    fibrillation), and a flag that is 1 when at least 4 beats were found. With fewer beats all
    other features are 0, so the array is always finite.

    Returns a float32 array of ``len(HRV_FEATURES)``.
    """
    if not duration > 0:
        raise ValueError(f"duration must be positive, got {duration}")
    out = np.zeros(len(HRV_FEATURES), dtype=np.float64)
    peaks = np.sort(np.asarray(peaks, dtype=np.float64))
    if len(peaks) < 4:
        return out.astype(np.float32)
    rr = np.diff(peaks) / fs
    rr = rr[rr > 0]
    if len(rr) < 3:
        return out.astype(np.float32)
    drr = np.diff(rr)
    median, mean = float(np.median(rr)), float(np.mean(rr))
    turns = np.sign(drr[1:]) * np.sign(drr[:-1]) < 0
    out[:] = [
        60.0 * len(peaks) / duration,
        median,
        mean,
        np.std(rr) / mean,
        np.sqrt(np.mean(drr ** 2)) / mean,
        np.mean(np.abs(drr) > 0.05),
        np.median(np.abs(drr)) / median,
        np.mean(np.abs(drr) / rr[:-1] > 0.15),
        rr.min() / median,
        rr.max() / median,
        turns.mean() if len(turns) else 0.0,
        1.0,
    ]
    return out.astype(np.float32)


def rr_series(peaks: np.ndarray, length: int, fs: float) -> np.ndarray:
    """Two channels that put the rhythm beside the waveform, sample by sample.

    Channel 0: the RR interval (s) each sample lies in (before the first peak the first
    interval, after the last the last one); channel 1: ``log(RR / previous RR)`` of that
    interval, 0 for a regular rhythm. Fewer than 2 peaks give zeros.

    Returns a float32 array (length, 2).
    """
    out = np.zeros((length, 2), dtype=np.float32)
    peaks = np.sort(np.asarray(peaks, dtype=np.int64))
    peaks = peaks[(peaks >= 0) & (peaks < length)]
    if len(peaks) < 2:
        return out
    rr = np.diff(peaks) / fs
    change = np.concatenate([[0.0], np.log(np.maximum(rr[1:], 1e-3) / np.maximum(rr[:-1], 1e-3))])
    which = np.clip(np.searchsorted(peaks, np.arange(length), side="right") - 1, 0, len(rr) - 1)
    out[:, 0] = rr[which]
    out[:, 1] = change[which]
    return out


def aami_classes(symbols: Sequence[str], label_map: dict[str, str] | None = None
                 ) -> np.ndarray:
    """Map annotation symbols to AAMI EC57 classes; non-beat symbols map to ``""``.

    N = N L R e j; S = A a J S; V = V E; F = F; Q = / f Q.
    """
    if label_map is None:
        from ecgcap.ecg.databases import AAMI_MAP

        label_map = AAMI_MAP
    return np.array([label_map.get(s, "") for s in symbols], dtype="<U1")


def unknown_symbols(symbols: Sequence[str]) -> dict[str, int]:
    """Annotation symbols outside WFDB's table of standard codes, with their counts.

    They are neither beats nor known events; the pipelines ignore them and say how many.
    """
    from wfdb.io.annotation import ann_label_table

    known = set(ann_label_table["symbol"])
    counts: dict[str, int] = {}
    for s in symbols:
        if s not in known:
            counts[s] = counts.get(s, 0) + 1
    return counts


def describe_ignored(unknown: dict[str, int]) -> str:
    """``"3 annotations with unknown symbols ignored ('X' 2, '?' 1)"``."""
    listed = ", ".join(f"{s!r} {n}" for s, n in sorted(unknown.items()))
    return f"{sum(unknown.values())} annotations with unknown symbols ignored ({listed})"


def clipped_fraction(x: np.ndarray, run: int = 3) -> float:
    """Fraction of samples in flat runs (``run`` or more) at the signal's maximum or minimum.

    A saturated amplifier or converter holds the signal at its limit; an unclipped ECG touches
    its extremes for a sample or two at most. ``nan`` for an empty signal.
    """
    x = np.asarray(x).ravel()
    if not len(x):
        return float("nan")
    at = (x == x.max()) | (x == x.min())
    edges = np.flatnonzero(np.diff(np.concatenate([[0], at.astype(np.int8), [0]])))
    starts, ends = edges[::2], edges[1::2]
    long = (ends - starts) >= run
    return float((ends - starts)[long].sum() / len(x))


def clipping_note(x: np.ndarray, limit: float = 0.01) -> str | None:
    """A warning text when more than ``limit`` of ``x`` is clipped (:func:`clipped_fraction`)."""
    fraction = clipped_fraction(x)
    if not fraction > limit:
        return None
    return (f"{100 * fraction:.1f}% of the signal sits flat at its limits (clipped?); beats "
            "and rhythm there may be misread")
