"""Noise for stress tests (ecgcap.ecg.noise): nst's SNR, NSTDB loading, generated noise."""

from __future__ import annotations

import numpy as np
import pytest
import wfdb
from hypothesis import given, settings
from hypothesis import strategies as st

from ecgcap.ecg import noise
from ecgcap.runtime.errors import EcgcapError

FS = 360.0


def _pulses(seconds: float = 60.0, amplitude: float = 1.6) -> tuple[np.ndarray, np.ndarray]:
    """A train of QRS-like pulses (peak-to-peak ``amplitude``) once a second, and its beats."""
    n = int(seconds * FS)
    peaks = np.arange(180, n - 180, int(FS))
    x = np.zeros(n)
    x[peaks - 2], x[peaks], x[peaks + 4] = 0.3 * amplitude, 0.8 * amplitude, -0.2 * amplitude
    return x, peaks


@settings(max_examples=25, deadline=None)
@given(snr=st.floats(-6.0, 36.0), kind=st.sampled_from(["em", "ma"]),
       seed=st.integers(0, 2 ** 16))
def test_the_snr_of_a_mix_measured_back_is_the_snr_asked_for(snr, kind, seed):
    x, peaks = _pulses(20.0)
    amplitude = noise.qrs_amplitude(x, FS, peaks)
    n = noise.generate_noise(kind, len(x), FS, channels=1, seed=seed)[:, 0]
    y = noise.mix(x, n, snr, amplitude, fs=FS)
    assert noise.measured_snr(amplitude, y - x, FS) == pytest.approx(snr, abs=1e-6)
    assert noise.qrs_amplitude(x, FS, peaks) == pytest.approx(1.6, rel=1e-9)


def test_nsts_definition_rms_of_noise_is_a_third_of_the_qrs_at_0_db():
    """SNR = 20 log10(A / (2 sqrt(2) R)): at 0 dB the noise RMS is A / 2.83; each 6 dB halves
    it. White noise, so the RMS of the whole added noise is the per-second RMS."""
    x, peaks = _pulses(120.0, amplitude=2.0)
    white = np.random.default_rng(0).standard_normal(len(x))
    for snr in (0.0, 6.0, 24.0):
        added = noise.mix(x, white, snr, noise.qrs_amplitude(x, FS, peaks), fs=FS) - x
        expected = 2.0 / (2 * np.sqrt(2)) * 10 ** (-snr / 20)
        assert np.sqrt(np.mean(added ** 2)) == pytest.approx(expected, rel=0.01)


def test_normal_beats_set_the_amplitude_and_outliers_are_trimmed():
    x, peaks = _pulses(40.0)
    symbols = np.array(["N"] * len(peaks))
    symbols[::10] = "V"
    x[peaks[::10]] += 5.0  # big ectopic beats: not normal, not measured
    assert noise.qrs_amplitude(x, FS, peaks, symbols) == pytest.approx(1.6)
    assert noise.qrs_amplitude(x, FS, peaks) > 1.6
    assert noise.trimmed_mean([1.0] * 18 + [100.0, -100.0]) == pytest.approx(1.0)
    x, peaks = _pulses(400.0)  # 399 beats: as sigamp, only the first 300 are measured
    x[peaks[300]:] *= 3
    assert noise.qrs_amplitude(x, FS, peaks) == pytest.approx(1.6)
    white = np.random.default_rng(0).standard_normal(len(x))
    white[int(300 * FS):] *= 3  # nor more than the first 300 seconds of noise
    assert noise.noise_rms(white, FS) == pytest.approx(1.0, rel=0.02)


def test_generated_noise_is_seeded_and_shaped_like_its_kind():
    a = noise.generate_noise("em", 20_000, FS, seed=3)
    assert np.array_equal(a, noise.generate_noise("em", 20_000, FS, seed=3))
    assert not np.array_equal(a, noise.generate_noise("em", 20_000, FS, seed=4))
    assert a.shape == (20_000, 2) and a.dtype == np.float32
    assert np.std(a, axis=0) == pytest.approx([1.0, 1.0], rel=1e-4)
    f = np.fft.rfftfreq(20_000, 1 / FS)
    for kind, (_, low, high) in noise.SPECTRA.items():
        power = np.abs(np.fft.rfft(noise.generate_noise(kind, 20_000, FS, seed=0)[:, 0])) ** 2
        assert power[(f >= low) & (f <= high)].sum() > 0.999 * power.sum(), kind
    em = np.abs(np.fft.rfft(a[:, 0])) ** 2  # 1/f: more power at 1-2 Hz than at 10-11 Hz
    assert em[(f >= 1) & (f < 2)].sum() > 3 * em[(f >= 10) & (f < 11)].sum()
    with pytest.raises(EcgcapError, match="unknown noise"):
        noise.generate_noise("hum", 100, FS)
    _, what = noise.noise_source("ma", 100, FS)
    assert "generated noise of matched spectrum" in what


def test_nstdb_layout_is_read_with_wfdb_and_resampled(tmp_path):
    rng = np.random.default_rng(1)
    signal = rng.normal(scale=0.2, size=(3600, 2))
    wfdb.wrsamp("em", fs=360, units=["mV", "mV"], sig_name=["noise1", "noise2"],
                p_signal=signal, fmt=["212", "212"], adc_gain=[200.0, 200.0],
                baseline=[0, 0], write_dir=str(tmp_path))
    loaded, fs = noise.load_nstdb(tmp_path, "em")
    assert fs == 360.0 and loaded.shape == (3600, 2)
    assert np.abs(loaded - signal).max() <= 0.5 / 200 + 1e-6  # 212 quantisation
    resampled, fs = noise.load_nstdb(tmp_path, "em", fs=250.0)
    assert fs == 250.0 and resampled.shape == (2500, 2)
    used, what = noise.noise_source("em", 5000, 360.0, nstdb=tmp_path)
    assert used.shape == (5000, 2) and what.startswith("NSTDB recording em")
    assert np.allclose(used[:3600], loaded)  # repeated past its end, without a step
    assert used[3600, 0] == pytest.approx(loaded[-1, 0])
    with pytest.raises(EcgcapError, match=r"no NSTDB noise record ma\.hea"):
        noise.load_nstdb(tmp_path, "ma")


def test_nst_protocol_and_masked_mixing():
    mask = noise.nst_protocol(int(13 * 60 * FS), FS)
    minutes = mask.reshape(13, -1).mean(axis=1)
    assert minutes.tolist() == [0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0]
    x, peaks = _pulses(13 * 60.0)
    y = noise.mix(x, noise.generate_noise("ma", len(x), FS, channels=1)[:, 0], 6.0,
                  noise.qrs_amplitude(x, FS, peaks), fs=FS, mask=mask)
    assert np.array_equal(y[mask == 0], x[mask == 0]) and not np.allclose(y, x)
