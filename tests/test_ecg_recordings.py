"""Whole recordings (rhythm task): HRV features, crops, padding, batches, real CinC 2017 reads."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecgcap.ecg import io
from ecgcap.ecg.databases import get_database
from ecgcap.ecg.processing import HRV_FEATURES, hrv_features, rr_series
from ecgcap.ecg.recordings import (
    RhythmConfig,
    crop_starts,
    load_recordings,
    pad_batch,
    predict_recordings,
    read_recording,
    recording_from_signal,
)
from ecgcap.ecg.rhythm_training import RecordingBatches
from ecgcap.runtime.errors import EcgcapError

FEATURE = {name: i for i, name in enumerate(HRV_FEATURES)}


def test_hrv_features_tell_regular_from_irregular_rhythm():
    fs, rng = 300.0, np.random.default_rng(0)
    regular = np.cumsum(np.full(40, 0.8 * fs)).astype(int)
    irregular = np.cumsum(rng.uniform(0.4, 1.2, 40) * fs).astype(int)
    reg, irr = hrv_features(regular, fs, 33.0), hrv_features(irregular, fs, 33.0)
    assert reg[FEATURE["heart_rate"]] == pytest.approx(60 * 40 / 33.0)
    assert reg[FEATURE["median_rr"]] == pytest.approx(0.8)
    assert reg[FEATURE["cv_rr"]] == pytest.approx(0.0, abs=1e-6)
    assert reg[FEATURE["irregular_share"]] == 0.0
    assert irr[FEATURE["cv_rr"]] > 0.2 and irr[FEATURE["irregular_share"]] > 0.5
    assert irr[FEATURE["pnn50"]] > 0.8 and irr[FEATURE["enough_beats"]] == 1.0


def test_hrv_features_with_too_few_beats_are_zero_and_finite():
    out = hrv_features(np.array([10, 300, 600]), 300.0, 9.0)
    assert out.shape == (len(HRV_FEATURES),) and not out.any()


def test_rr_series_marks_each_sample_with_its_interval():
    out = rr_series(np.array([10, 20, 40]), 50, fs=10.0)
    assert out.shape == (50, 2)
    assert out[:20, 0].tolist() == [1.0] * 20 and out[20:, 0].tolist() == [2.0] * 30
    assert out[:20, 1].tolist() == [0.0] * 20
    np.testing.assert_allclose(out[20:, 1], np.log(2.0))
    assert not rr_series(np.array([5]), 50, fs=10.0).any()


def test_crop_starts_cover_the_whole_recording():
    assert crop_starts(9000, 4500, 2250).tolist() == [0, 2250, 4500]
    assert crop_starts(9100, 4500, 2250).tolist() == [0, 2250, 4500, 4600]
    assert crop_starts(4500, 4500, 2250).tolist() == [0]
    assert crop_starts(1000, 4500, 2250).tolist() == [0]


@given(length=st.integers(1, 20000), crop=st.integers(1, 5000), stride=st.integers(1, 5000))
def test_crop_starts_property(length, crop, stride):
    starts = crop_starts(length, crop, stride)
    ends = np.minimum(starts + crop, length)
    assert starts[0] == 0 and ends[-1] == length           # whole recording covered
    assert np.all(starts >= 0) and np.all(np.diff(starts) > 0)
    assert np.all(np.diff(starts) <= stride)               # no gap between crops


def test_pad_batch_pads_right_with_a_mask():
    x, mask = pad_batch([np.ones(3), np.full(5, 2.0)])
    assert x.shape == (2, 5, 1) and mask.tolist() == [[1, 1, 1, 0, 0], [1] * 5]
    assert x[0, :, 0].tolist() == [1, 1, 1, 0, 0]
    x, _ = pad_batch([np.ones((3, 3)), np.ones((4, 3))])
    assert x.shape == (2, 4, 3) and x[0, 3].tolist() == [0, 0, 0]


def test_training_batches_crop_randomly_and_never_truncate_to_the_shortest():
    signals = [np.arange(n, dtype=np.float32) for n in (100, 250, 400)]
    y = np.array([0, 1, 2])
    batches = RecordingBatches(signals, np.zeros((3, 2), "float32"), y, np.ones(3, "float32"),
                               batch_size=3, crop=200, augment=False, seed=0)
    x, labels, _ = batches[0]
    assert x["signal"].shape == (3, 200, 1)
    lengths = x["mask"].sum(1)
    for row, lab, n in zip(x["signal"][..., 0], labels, lengths, strict=True):
        full = len(signals[lab])
        assert n == min(full, 200)                       # the short one whole, others cropped
        start = row[0]
        assert np.array_equal(row[:int(n)], np.arange(start, start + n))  # a contiguous crop


class _MeanModel:
    """Stands in for a Keras model: 'probabilities' from each crop's mean value."""

    input = {"signal": None, "mask": None}

    def predict_on_batch(self, inputs):
        m = (inputs["signal"][..., 0] * inputs["mask"]).sum(1) / inputs["mask"].sum(1)
        return np.stack([m, 1 - m], axis=1)


def test_predict_recordings_averages_over_crops():
    config = RhythmConfig(fs=10.0, crop_seconds=10.0, stride_seconds=5.0)  # crop 100, stride 50
    first = np.concatenate([np.zeros(100), np.ones(100)]).astype(np.float32)  # crops 0,.5,1
    second = np.full(60, 0.25, np.float32)
    probs = predict_recordings(_MeanModel(), [first, second], np.zeros((2, 1)), config,
                               batch_size=2)
    np.testing.assert_allclose(probs[:, 0], [0.5, 0.25], atol=1e-6)


def test_real_cinc2017_record_is_read_filtered_and_resampled(cinc2017_dir):
    raw = io.read_record(cinc2017_dir / "A00001")           # format 16+24 in a .mat file
    assert raw.fs == 300 and raw.n_sig == 1 and raw.sig_len == 9000
    out = read_recording(cinc2017_dir / "A00001", RhythmConfig())
    assert out["signal"].shape == (4500, 3) and out["signal"].dtype == np.float32
    wave, rr = out["signal"][:, 0], out["signal"][:, 1]
    assert abs(float(np.median(wave))) < 0.05
    assert 0.4 < float(np.median(rr)) < 1.5                     # RR series in seconds
    assert read_recording(cinc2017_dir / "A00001", RhythmConfig(rr_channels=False)
                          )["signal"].shape == (4500, 1)
    heart_rate = out["rr"][FEATURE["heart_rate"]]
    assert 40 < heart_rate < 150 and out["rr"][FEATURE["enough_beats"]] == 1.0
    again = read_recording(raw, RhythmConfig())                # a wfdb.Record works too
    np.testing.assert_array_equal(again["signal"], out["signal"])


def test_load_recordings_uses_the_reference_labels(cinc2017_dir):
    db = get_database("cinc2017")
    labels = io.read_reference(cinc2017_dir / "REFERENCE.csv")
    names = io.list_records(cinc2017_dir)[:6]
    data = load_recordings(cinc2017_dir, db, names, quiet=True)
    assert data["label"].tolist() == [labels[n] for n in names]
    assert len(data["signal"]) == 6 and data["rr"].shape == (6, len(HRV_FEATURES))
    cached = load_recordings(cinc2017_dir, db, names, quiet=True)     # second time from cache
    for a, b in zip(data["signal"], cached["signal"], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("signal,message", [
    (np.zeros(3000), "constant"),
    (np.r_[np.ones(2999), np.nan], "NaN"),
    (np.random.default_rng(0).normal(size=600), "shorter than"),
])
def test_bad_recordings_are_refused_with_one_clear_error(signal, message):
    with pytest.raises(EcgcapError, match=message):
        recording_from_signal(signal, 300.0, name="bad")
