"""Noise for stress tests of beat classifiers, mixed into ECGs the way PhysioNet's ``nst`` does.

The steps, one function each, on arrays and a sampling rate (the loader aside)::

    a = qrs_amplitude(x, fs, peaks, symbols)       # the clean lead's QRS size, as sigamp -a
    noise, fs = load_nstdb(folder, "em", fs)       # the NSTDB recording, when the user has it
    noise = generate_noise("em", len(x), fs, seed=0)   # else noise of matched spectrum
    y = mix(x, noise[:, 0], snr_db=6, signal_amplitude=a, fs=fs)

**The SNR, as nst defines it** (nst.c and sigamp, WFDB; the MIT-BIH Noise Stress Test
Database, Moody, Muldrow and Mark 1984). The signal's size ``A`` is the peak-to-peak amplitude
of its normal QRS complexes (``sigamp -a``): measured on each of the first 300 beats that
WFDB's ``map1`` calls normal (every beat but ventricular, fusion, paced and unclassifiable
ones) in a window of 50 ms either side of its annotation, the largest and smallest 5% of the
measurements dropped, the rest averaged. The noise's size ``R`` is its RMS amplitude
(``sigamp``): measured, mean removed, in each of its first 300 one-second pieces, the largest
and smallest 5% dropped, the rest averaged. The signal power is taken as ``A**2 / 8``
(a sine wave of peak-to-peak amplitude ``A``) and the noise power as ``R**2``, so::

    SNR = 10 log10((A**2 / 8) / R**2) = 20 log10(A / (2 * sqrt(2) * R))  [dB]

and nst scales the noise by ``g = 10**(-SNR / 20) * sqrt(2) / 4 * A / R`` before adding it
(each lead by its own ``A``; noise channel ``i`` goes to lead ``i``, cycling when there are
fewer). SNR 0 dB is noise whose RMS is a third of the QRS's peak-to-peak size. nst adds the
noise only in alternate two-minute segments after the first five minutes
(:func:`nst_protocol`); :func:`mix` adds it everywhere unless given that mask.

**Generated noise is not the NSTDB recordings.** Without them, :func:`generate_noise` draws
Gaussian noise whose spectrum is shaped like theirs (an approximation from their published
description, not fitted to them): ``em`` (electrode motion) 1/f noise from 0.3 to 20 Hz,
low-frequency and overlapping the QRS band, which is what makes it mimic beats; ``ma``
(muscle) flat band-limited noise from 5 to 100 Hz (up to 45% of the sampling rate); ``bw``
(baseline wander) 1/f^2 noise from 0.05 to 1 Hz. Anything reporting figures on it must say
so (:data:`GENERATED_LABEL`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ecgcap.runtime.errors import EcgcapError

NOISE_KINDS = ("em", "ma", "bw")
NOISE_NAMES = {"em": "electrode motion", "ma": "muscle artefact", "bw": "baseline wander"}
GENERATED_LABEL = "generated noise of matched spectrum (not the NSTDB recordings)"
# (spectral exponent beta of 1/f**beta power, low edge Hz, high edge Hz) of generated noise
SPECTRA = {"em": (1.0, 0.3, 20.0), "ma": (0.0, 5.0, 100.0), "bw": (2.0, 0.05, 1.0)}
QRS_HALF_WINDOW = 0.05  # s either side of a beat annotation (sigamp's QRS window)
RMS_PIECE = 1.0  # s, the pieces whose RMS amplitudes sigamp averages
TRIM = 0.05  # share of the largest and of the smallest measurements dropped
MEASUREMENTS = 300  # sigamp's default number of measurements (NMAX), as nst runs it
# beats WFDB's map1 maps to NORMAL (sigamp -a measures those): all but V, E, F, /, f, Q
NORMAL_SYMBOLS = frozenset("NLRaAJSej")


def trimmed_mean(values: Sequence[float] | np.ndarray, trim: float = TRIM) -> float:
    """Mean of ``values`` without the largest and the smallest ``trim`` share of them."""
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if not len(v):
        raise ValueError("no measurements to average")
    k = int(len(v) * trim)  # sigamp: namp / 20 off each end
    return float(v[k:len(v) - k].mean()) if len(v) > 2 * k else float(v.mean())


def qrs_amplitude(x: np.ndarray, fs: float, peaks: np.ndarray,
                  symbols: Sequence[str] | None = None) -> float:
    """The QRS peak-to-peak amplitude of a lead, as ``sigamp -a`` measures it for nst.

    Peak-to-peak of ``x`` within 50 ms of each of the first 300 normal beats
    (:data:`NORMAL_SYMBOLS`; every beat given when ``symbols`` is None, or when fewer than 10
    are normal), trimmed mean (5% off each end).

    Examples
    --------
    >>> x = np.zeros(3600); x[[500, 1500, 2500]] = 2.0
    >>> qrs_amplitude(x, 360.0, np.array([500, 1500, 2500]))
    2.0
    """
    x = np.asarray(x, dtype=np.float64)
    peaks = np.asarray(peaks, dtype=np.int64)
    if symbols is not None:
        normal = np.isin(np.asarray(symbols), list(NORMAL_SYMBOLS))
        if normal.sum() >= 10:
            peaks = peaks[normal]
    half = max(int(round(QRS_HALF_WINDOW * fs)), 1)
    peaks = peaks[(peaks - half >= 0) & (peaks + half < len(x))][:MEASUREMENTS]
    if not len(peaks):
        raise EcgcapError("no beats to measure the QRS amplitude on", input="signal")
    pieces = x[peaks[:, None] + np.arange(-half, half + 1)[None, :]]
    return trimmed_mean(pieces.max(axis=1) - pieces.min(axis=1))


def noise_rms(noise: np.ndarray, fs: float) -> float:
    """The RMS amplitude of a noise channel, as ``sigamp`` measures it for nst: the RMS (mean
    removed) of each of the first 300 one-second pieces, trimmed mean (5% off each end)."""
    noise = np.asarray(noise, dtype=np.float64).ravel()
    n = max(int(round(RMS_PIECE * fs)), 1)
    noise = noise[:n * MEASUREMENTS]
    pieces = noise[:len(noise) // n * n].reshape(-1, n) if len(noise) >= n else noise[None, :]
    rms = np.sqrt(np.mean((pieces - pieces.mean(axis=1, keepdims=True)) ** 2, axis=1))
    return trimmed_mean(rms)


def noise_gain(snr_db: float, signal_amplitude: float, noise_amplitude: float) -> float:
    """nst's gain for a noise of RMS ``noise_amplitude`` added to a signal whose QRS
    peak-to-peak amplitude is ``signal_amplitude``: ``10**(-SNR/20) * sqrt(2)/4 * A / R``."""
    if not noise_amplitude > 0:
        raise EcgcapError("the noise is flat (RMS 0); it cannot be scaled to an SNR",
                          input="noise")
    return 10.0 ** (-snr_db / 20.0) * np.sqrt(2.0) / 4.0 * signal_amplitude / noise_amplitude


def measured_snr(signal_amplitude: float, noise: np.ndarray, fs: float) -> float:
    """The SNR (dB, nst's definition) of ``noise`` against a QRS of peak-to-peak
    ``signal_amplitude``: ``20 log10(A / (2 sqrt(2) R))``."""
    return float(20.0 * np.log10(signal_amplitude / (2.0 * np.sqrt(2.0) * noise_rms(noise, fs))))


def nst_protocol(n: int, fs: float, *, start: float = 300.0, period: float = 120.0
                 ) -> np.ndarray:
    """nst's default protocol as a 0/1 mask of ``n`` samples: clean for the first 5 minutes,
    then noisy and clean in turn for 2 minutes each (the NSTDB records' layout)."""
    t = np.arange(n) / fs
    return ((t >= start) & (((t - start) // period) % 2 == 0)).astype(np.float32)


def _fit(noise: np.ndarray, n: int) -> np.ndarray:
    """``noise`` cut or repeated to ``n`` samples (nst starts the noise record again at its
    end, shifted so that the joined noise has no step)."""
    noise = np.asarray(noise, dtype=np.float64)
    if len(noise) >= n:
        return noise[:n]
    pieces, total, last = [], 0, None
    while total < n:
        piece = noise if last is None else noise - noise[0] + last
        pieces.append(piece)
        total += len(piece)
        last = piece[-1]
    return np.concatenate(pieces)[:n]


def mix(signal: np.ndarray, noise: np.ndarray, snr_db: float, signal_amplitude: float, *,
        fs: float, mask: np.ndarray | None = None) -> np.ndarray:
    """``signal`` plus ``noise`` scaled, as nst scales it, to ``snr_db`` (module docstring).

    ``signal`` is one lead (samples,); ``noise`` one channel, cut or repeated to the signal's
    length; ``signal_amplitude`` the clean lead's QRS amplitude (:func:`qrs_amplitude`);
    ``mask`` (0/1 per sample, e.g. :func:`nst_protocol`) where to add it (everywhere when
    None). The gain is computed on the whole noise channel, before masking.

    Examples
    --------
    >>> x = np.zeros(7200); x[::360] = 1.0
    >>> noise = generate_noise("ma", 7200, 360.0, channels=1, seed=0)[:, 0]
    >>> y = mix(x, noise, 12.0, qrs_amplitude(x, 360.0, np.arange(0, 7200, 360)), fs=360.0)
    >>> round(measured_snr(1.0, y - x, 360.0), 6)
    12.0
    """
    signal = np.asarray(signal, dtype=np.float64)
    noise = _fit(noise, len(signal))
    gain = noise_gain(snr_db, signal_amplitude, noise_rms(noise, fs))
    added = gain * noise
    if mask is not None:
        added = added * np.asarray(mask, dtype=np.float64)
    return signal + added


def _shaped(rng: np.random.Generator, n: int, fs: float, channels: int, beta: float,
            low: float, high: float) -> np.ndarray:
    """Gaussian noise (n, channels) of power spectrum 1/f**beta between ``low`` and ``high``
    Hz (zero outside), unit RMS per channel."""
    white = rng.standard_normal((n, channels))
    spectrum = np.fft.rfft(white, axis=0)
    f = np.fft.rfftfreq(n, 1.0 / fs)
    high = min(high, 0.45 * fs)
    shape = np.zeros_like(f)
    band = (f >= low) & (f <= high)
    shape[band] = f[band] ** (-beta / 2.0)
    out = np.fft.irfft(spectrum * shape[:, None], n=n, axis=0)
    return out / out.std(axis=0, keepdims=True)


def generate_noise(kind: str, n: int, fs: float, *, channels: int = 2, seed: int = 0
                   ) -> np.ndarray:
    """``n`` samples (n, channels) of generated noise shaped like the NSTDB recording ``kind``
    (``em``, ``ma`` or ``bw``; :data:`SPECTRA`), unit RMS, the same for the same seed.

    It is **generated noise of matched spectrum, not the NSTDB recordings** (say so with any
    figure measured on it: :data:`GENERATED_LABEL`).
    """
    if kind not in SPECTRA:
        raise EcgcapError(f"unknown noise; choose from {', '.join(NOISE_KINDS)}",
                          input=f"--noise {kind}")
    if n < 2 or not fs > 0:
        raise ValueError(f"need n >= 2 and fs > 0, got {n} and {fs}")
    beta, low, high = SPECTRA[kind]
    rng = np.random.default_rng([seed, NOISE_KINDS.index(kind)])
    return _shaped(rng, n, fs, channels, beta, low, high).astype(np.float32)


def load_nstdb(folder: str | os.PathLike, kind: str, fs: float | None = None
               ) -> tuple[np.ndarray, float]:
    """The NSTDB noise recording ``kind`` (``em``, ``ma`` or ``bw``: ``folder/kind.hea`` and
    its signal file, as PhysioNet's ``nstdb`` folder holds them), read with wfdb, as
    (samples, channels) float32 and its rate; resampled to ``fs`` when given and different."""
    import wfdb

    from ecgcap.ecg import io, processing

    if kind not in NOISE_KINDS:
        raise EcgcapError(f"unknown noise; choose from {', '.join(NOISE_KINDS)}",
                          input=f"--noise {kind}")
    base = Path(folder) / kind
    if not base.with_suffix(".hea").is_file():
        raise EcgcapError(f"no NSTDB noise record {kind}.hea (the nstdb folder holds em, ma "
                          "and bw)", input=str(Path(folder)))
    record = wfdb.rdrecord(str(base))
    noise = io.signal_of(record)
    if fs is not None and fs != record.fs:
        noise = np.stack([processing.resample_signal(c, record.fs, fs) for c in noise.T], 1)
        return noise.astype(np.float32), float(fs)
    return noise, float(record.fs)


def noise_source(kind: str, n: int, fs: float, *, nstdb: str | os.PathLike | None = None,
                 channels: int = 2, seed: int = 0) -> tuple[np.ndarray, str]:
    """Noise ``kind`` of ``n`` samples at ``fs`` and what it is: the NSTDB recording from
    ``nstdb`` (a folder), else generated (:func:`generate_noise`) and labelled so."""
    if nstdb is not None:
        noise, _ = load_nstdb(nstdb, kind, fs)
        return _fit_channels(noise, n), f"NSTDB recording {kind} ({NOISE_NAMES[kind]})"
    return (generate_noise(kind, n, fs, channels=channels, seed=seed),
            f"{NOISE_NAMES[kind]}: {GENERATED_LABEL}")


def _fit_channels(noise: np.ndarray, n: int) -> np.ndarray:
    return np.stack([_fit(c, n) for c in np.asarray(noise).T], 1).astype(np.float32)
