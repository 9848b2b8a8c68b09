"""Each ECG processing step alone, on generated signals and on real MIT-BIH records."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecgcap.ecg import io, processing
from ecgcap.ecg.databases import AAMI_MAP, get_database
from ecgcap.runtime.errors import EcgcapError


def test_select_lead_by_name_on_real_records(mitdb_dir):
    rec100 = io.read_record(mitdb_dir / "100")
    rec114 = io.read_record(mitdb_dir / "114")
    assert rec100.sig_name == ["MLII", "V5"] and rec114.sig_name == ["V5", "MLII"]
    x = processing.select_lead(io.signal_of(rec114), rec114.sig_name, "MLII")
    np.testing.assert_array_equal(x, io.signal_of(rec114)[:, 1])
    with pytest.raises(EcgcapError, match="no lead 'V1'"):
        processing.select_lead(io.signal_of(rec100), rec100.sig_name, "V1")


def test_resample_keeps_duration_and_frequency():
    fs, f = 360.0, 5.0
    t = np.arange(0, 10, 1 / fs)
    y = processing.resample_signal(np.sin(2 * np.pi * f * t), fs, 180.0)
    assert len(y) == 1800
    spectrum = np.abs(np.fft.rfft(y))
    assert np.fft.rfftfreq(len(y), 1 / 180.0)[spectrum.argmax()] == pytest.approx(f, abs=0.1)
    np.testing.assert_array_equal(processing.resample_samples([0, 360, 721], fs, 180.0),
                                  [0, 180, 360])


def test_filter_removes_baseline_wander_and_keeps_the_qrs_band():
    fs = 360.0
    t = np.arange(0, 20, 1 / fs)
    wander, qrs_band = 2 * np.sin(2 * np.pi * 0.1 * t), np.sin(2 * np.pi * 10 * t)
    y = processing.filter_signal(wander + qrs_band, fs)
    inner = slice(int(2 * fs), int(-2 * fs))
    assert np.corrcoef(y[inner], qrs_band[inner])[0, 1] > 0.99
    assert np.abs(y[inner] - qrs_band[inner]).max() < 0.1
    with pytest.raises(ValueError):
        processing.filter_signal(t, fs, highpass=50, lowpass=40)


def test_normalise_is_robust_and_refuses_flat_or_nan_signals():
    x = np.random.default_rng(0).normal(3.0, 2.0, 10_000).astype(np.float32)
    x[:10] = 1e4  # artefact
    y = processing.normalise(x)
    assert np.median(y) == pytest.approx(0, abs=1e-6)
    assert 1.4826 * np.median(np.abs(y)) == pytest.approx(1, rel=1e-4)
    with pytest.raises(EcgcapError, match="constant"):
        processing.normalise(np.ones(100))
    with pytest.raises(EcgcapError, match="NaN"):
        processing.normalise(np.array([0.0, np.nan, 1.0]))


def test_beat_windows_are_centred_and_drop_edge_beats():
    x = np.arange(100, dtype=np.float32)
    windows, kept = processing.beat_windows(x, np.array([2, 50, 98]), before=3, after=4)
    np.testing.assert_array_equal(kept, [False, True, False])
    np.testing.assert_array_equal(windows, [[47, 48, 49, 50, 51, 52, 53]])


@given(st.lists(st.integers(0, 5000), min_size=1, max_size=40, unique=True),
       st.integers(0, 20), st.integers(1, 20))
def test_beat_windows_property(peaks, before, after):
    x = np.arange(5000, dtype=np.float32)
    peaks = np.array(sorted(peaks))
    windows, kept = processing.beat_windows(x, peaks, before, after)
    assert windows.shape == (kept.sum(), before + after)
    for w, p in zip(windows, peaks[kept], strict=True):
        assert w[before] == p  # the peak sits at index `before` of its window
    assert all((p - before < 0) or (p + after > len(x)) for p in peaks[~kept])


def test_rr_features_by_hand():
    fs = 100.0
    peaks = np.array([0, 100, 180, 300, 400])  # RR = 1.0, 0.8, 1.2, 1.0 s
    rr = processing.rr_features(peaks, fs, local_beats=2)
    np.testing.assert_allclose(rr[:, 0], [1.0, 1.0, 0.8, 1.2, 1.0])  # previous
    np.testing.assert_allclose(rr[:, 1], [1.0, 0.8, 1.2, 1.0, 1.0])  # next
    np.testing.assert_allclose(rr[:, 3], 1.0)  # record average
    # local: mean of the intervals on either side (one each for local_beats=2)
    np.testing.assert_allclose(rr[:, 2], [1.0, 0.9, 1.0, 1.1, 1.0])
    with pytest.raises(EcgcapError):
        processing.rr_features(np.array([5]), fs)


def test_rr_irregularity_by_hand_and_on_rhythms():
    peaks = np.array([0, 100, 180, 300, 400])  # RR = 100, 80, 120, 100 samples
    # local_beats=4: beat i sees intervals i-2 .. i+1; |diffs| over the median interval
    expected = [20 / 90, 30 / 100, 20 / 100, 30 / 100, 20 / 110]
    np.testing.assert_allclose(processing.rr_irregularity(peaks, 4), expected, rtol=1e-6)
    sinus = np.cumsum(np.full(40, 200))
    ectopic = sinus.copy()
    ectopic[20:] -= 70  # one premature beat, then the rhythm goes on
    assert np.all(processing.rr_irregularity(sinus) == 0)
    assert np.all(processing.rr_irregularity(ectopic) == 0)  # one beat does not move a median
    af = np.cumsum(np.random.default_rng(0).uniform(100, 300, 40)).astype(int)
    assert processing.rr_irregularity(af).mean() > 0.2
    with pytest.raises(EcgcapError):
        processing.rr_irregularity(np.array([5]))


def test_rr_irregularity_is_the_ninth_feature(mitdb_dir):
    from ecgcap.ecg.dataset import BeatConfig, prepare_record

    assert BeatConfig().rr_features == 9 and not BeatConfig.from_info({}).rr_irregularity
    config = BeatConfig(rr_irregularity=False)  # models saved before the setting
    assert config.rr_features == 8 and config.key() != BeatConfig().key()
    assert config.key() == "c12a862b426f"  # the caches made before the setting stay valid
    plain = prepare_record(mitdb_dir / "100", get_database("mitdb"), config)
    extra = prepare_record(mitdb_dir / "100", get_database("mitdb"), BeatConfig())
    np.testing.assert_array_equal(extra["rr"][:, :8], plain["rr"])
    assert extra["rr"].shape[1] == 9 and np.median(extra["rr"][:, 8]) < 0.1  # record 100: sinus


def test_model_rr_features_are_ratios_with_or_without_the_seconds():
    from ecgcap.ecg.dataset import BeatConfig, relative_rr

    rr = np.array([[0.5, 1.0, 0.8, 1.0], [1.0, 1.0, 1.0, 1.0]])  # a premature beat, a normal one
    both = relative_rr(rr)
    np.testing.assert_allclose(both[:, :4], rr)
    np.testing.assert_allclose(both[:, 4:], [[0.5, 1.0, 0.8, 0.625], [1, 1, 1, 1]], rtol=1e-5)
    ratios = relative_rr(rr, seconds=False)
    np.testing.assert_array_equal(ratios[:, :4], 0.0)
    np.testing.assert_array_equal(ratios[:, 4:], both[:, 4:])
    assert not BeatConfig().rr_seconds
    assert BeatConfig.from_info({"lead": "MLII"}).rr_seconds  # saved before the setting
    assert not BeatConfig.from_info({"rr_seconds": False}).rr_seconds
    assert BeatConfig(rr_seconds=True).key() != BeatConfig().key()  # cached apart


def test_aami_mapping_covers_every_class_and_skips_non_beats():
    expected = {"N": "N", "L": "N", "R": "N", "e": "N", "j": "N", "A": "S", "a": "S", "J": "S",
                "S": "S", "V": "V", "E": "V", "F": "F", "/": "Q", "f": "Q", "Q": "Q"}
    assert AAMI_MAP == expected
    got = processing.aami_classes(list(expected) + ["+", "~", "|", "x"])
    assert list(got) == list(expected.values()) + ["", "", "", ""]


def test_real_record_100_beats_match_its_annotations(mitdb_dir):
    ann = io.read_annotation(mitdb_dir / "100")
    classes = processing.aami_classes(ann.symbol)
    counts = {c: int((classes == c).sum()) for c in "NSVFQ"}
    assert counts == {"N": 2239, "S": 33, "V": 1, "F": 0, "Q": 0}


@settings(max_examples=20, deadline=None)
@given(before=st.floats(0.05, 0.6), after=st.floats(0.1, 0.8), fs=st.sampled_from([90.0, 180.0,
                                                                                  250.0, 360.0]),
       start=st.integers(0, 600_000), seconds=st.integers(3, 40))
def test_windows_of_a_real_record_property(mitdb_dir, before, after, fs, start, seconds):
    """Beat windows cut from a stretch of record 100 at its annotated R peaks, for any window
    and target rate: one window per beat that fits, the R peak at index ``before``, the second
    channel the first minus the median beat, RR features positive."""
    from ecgcap.ecg.dataset import BeatConfig, beats_from_signal

    x, peaks = _record_100(mitdb_dir)
    x = x[start:start + seconds * 360]
    peaks = peaks[(peaks >= start) & (peaks < start + len(x))] - start
    config = BeatConfig(fs=fs, before=before, after=after, rr_seconds=True)
    if len(peaks) < 2:
        return
    out = beats_from_signal(x, 360.0, peaks, config)
    b, a = config.window
    at = processing.resample_samples(peaks, 360.0, fs)
    n = int(round(len(x) * fs / 360.0))
    np.testing.assert_array_equal(out["kept"], (at - b >= 0) & (at + a <= n))
    assert out["beat"].shape == (out["kept"].sum(), b + a, 2)
    y = processing.normalise(processing.resample_signal(
        processing.filter_signal(x, 360.0), 360.0, fs))
    np.testing.assert_allclose(out["beat"][:, b, 0], y[at[out["kept"]]], rtol=1e-5, atol=1e-5)
    median = np.median(out["beat"][..., 0], axis=0)
    np.testing.assert_allclose(out["beat"][..., 1], out["beat"][..., 0] - median, atol=1e-5)
    assert out["rr"].shape == (out["kept"].sum(), 9) and np.all(out["rr"][:, :4] > 0)


_RECORD_100: dict = {}


def _record_100(mitdb_dir) -> tuple[np.ndarray, np.ndarray]:
    if not _RECORD_100:
        rec = io.read_record(mitdb_dir / "100")
        ann = io.read_annotation(mitdb_dir / "100")
        beats = processing.aami_classes(ann.symbol) != ""
        _RECORD_100["x"] = processing.select_lead(io.signal_of(rec), rec.sig_name, "MLII")
        _RECORD_100["peaks"] = np.asarray(ann.sample)[beats]
    return _RECORD_100["x"], _RECORD_100["peaks"]
