"""Beats in context: window stitching, both leads (present, absent, not V1), a tiny real
training and its classify round trip."""

from __future__ import annotations

import dataclasses
import warnings

import keras
import numpy as np
import pytest
import wfdb

from ecgcap.ecg import io
from ecgcap.ecg.dataset import BeatConfig, beats_from_signal, load_beat_leads, two_lead_beats
from ecgcap.ecg.models import build_beat_sequence_classifier
from ecgcap.ecg.sequence import (
    assign_beats,
    cut_windows,
    predict_beats,
    window_index,
    window_starts,
)


@pytest.mark.parametrize("n", [1, 5, 8, 9, 31, 100])
@pytest.mark.parametrize("offset", [0, 1, 3])
def test_every_beat_is_labelled_once_from_a_window_that_holds_it(n, offset):
    context = 8
    starts = window_starts(n, context, offset=offset)
    window, step = assign_beats(n, starts, context)
    index = window_index(n, starts, context)
    assert len(window) == n  # one label per beat
    assert (index[window, step] == np.arange(n)).all()  # and it is that beat's
    covered = np.unique(index[index >= 0])
    assert covered.tolist() == list(range(n))
    if n > context:  # no padding when the record fills a window, and the beat sits centrally
        assert (index >= 0).all()
        assert (np.abs(step - (context - 1) / 2) <= context / 2).all()


@pytest.mark.parametrize("context,stride,offset", [(8, None, 0), (8, 3, 2), (5, 1, 0),
                                                   (16, 16, 7)])
def test_each_beat_takes_its_most_central_window_and_long_records_stay_cheap(context, stride,
                                                                             offset):
    """The rule written out beat by beat: of the windows holding a beat, the one where it is
    nearest the centre of the window's real beats, the earlier on a tie."""
    for n in (0, 1, context, context + 1, 57, 203):
        starts = window_starts(n, context, stride, offset)
        window, step = assign_beats(n, starts, context)
        for b in range(n):
            holding = [j for j, s in enumerate(starts) if s <= b < s + context]
            centre = [abs(b - starts[j] - (min(starts[j] + context, n) - starts[j] - 1) / 2)
                      for j in holding]
            assert window[b] == holding[int(np.argmin(centre))]
            assert step[b] == b - starts[window[b]]
    n = 150_000  # a day of Holter beats: linear, never a beats x windows matrix
    window, step = assign_beats(n, window_starts(n, context, stride), context)
    assert len(window) == n and (step >= 0).all() and (step < context).all()


def _per_beat_model(context: int) -> keras.Model:
    """A sequence model whose output at a step depends on that step's beat alone."""
    beat = keras.Input((context, 126, 2), name="beat")
    rr = keras.Input((context, 9), name="rr")
    mask = keras.Input((context,), name="mask")
    x = keras.layers.Concatenate()([keras.layers.Reshape((context, 252))(beat), rr])
    out = keras.layers.Dense(5, activation="softmax", name="probabilities")(x)
    return keras.Model({"beat": beat, "rr": rr, "mask": mask}, out)


def _random_beats(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"beat": rng.normal(size=(n, 126, 2)).astype(np.float32),
            "rr": rng.normal(size=(n, 9)).astype(np.float32)}


def test_stitching_does_not_depend_on_batch_size_or_window_offsets():
    keras.utils.set_random_seed(0)
    context, n = 8, 45
    x = _random_beats(n)
    per_beat = _per_beat_model(context)
    alone = np.full((n, context), -1)
    alone[:, 0] = np.arange(n)  # each beat alone in a window
    direct = per_beat.predict(cut_windows(x, alone), verbose=0)[:, 0].argmax(-1)
    for offset in range(4):
        for batch in (1, 3, 64):
            labels = predict_beats(per_beat, x, None, context, offset=offset,
                                   batch_size=batch).argmax(-1)
            assert (labels == direct).all()
    # a real sequence model (its outputs depend on the neighbours): batch size does not matter
    model = build_beat_sequence_classifier("lstm", context=context, channels=2)
    model.get_layer("rr_norm").adapt(x["rr"][:, None])
    probs = [predict_beats(model, x, None, context, batch_size=b) for b in (1, 5, 64)]
    for p in probs[1:]:
        assert (p.argmax(-1) == probs[0].argmax(-1)).all()
        np.testing.assert_allclose(p, probs[0], atol=1e-5)


@pytest.mark.parametrize("cell,encoder", [("simplernn", "conv"), ("lstm", "lstm")])
def test_a_record_shorter_than_a_window_is_padded_and_masked(cell, encoder):
    context = 16
    model = build_beat_sequence_classifier(cell, context=context, channels=2,
                                           beat_encoder=encoder)
    model.get_layer("rr_norm").adapt(np.ones((4, 1, 9), np.float32))
    x = _random_beats(5)
    p = predict_beats(model, x, None, context)
    assert p.shape == (5, 5)
    windows = cut_windows(x, window_index(5, window_starts(5, context), context))
    assert windows["mask"].sum() == 5 and windows["beat"].shape == (1, context, 126, 2)
    # whatever the padding holds, the masked steps do not change the real beats' outputs
    windows["beat"][0, 5:] = 7.0
    windows["rr"][0, 5:] = -3.0
    np.testing.assert_allclose(model.predict(windows, verbose=0)[0, :5], p, atol=1e-6)


def test_lstm_beat_encoder_labels_each_beat_from_its_samples_and_saves(tmp_path):
    """``beat_encoder="lstm"``: the per-beat model's recurrent layer runs over each beat's
    samples inside the window; the model saves and loads in safe mode with the same outputs."""
    context = 6
    model = build_beat_sequence_classifier("lstm", context=context, channels=2, units=8,
                                           embedding=8, beat_encoder="lstm")
    encoder = model.get_layer("beat_recurrent")
    assert isinstance(encoder, keras.layers.TimeDistributed)
    assert encoder.output.shape == (None, context, 16)  # bidirectional, 8 units
    model.get_layer("rr_norm").adapt(np.ones((4, 1, 9), np.float32))
    x = _random_beats(20, seed=1)
    p = predict_beats(model, x, None, context)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(predict_beats(loaded, x, None, context), p, atol=1e-6)
    with pytest.raises(ValueError, match="beat_encoder"):
        build_beat_sequence_classifier("lstm", beat_encoder="gru")


def test_second_lead_names_and_channels_on_real_records(mitdb_dir):
    config = BeatConfig()
    for name, second in (("114", "V5"), ("124", "V4")):  # 114: V5 first, MLII second
        rec = io.read_record(mitdb_dir / name)
        ann = io.read_annotation(mitdb_dir / name)
        peaks = np.asarray(ann.sample)[200:260]
        out = two_lead_beats(io.signal_of(rec), rec.sig_name, rec.fs, peaks, config)
        assert out["leads"].tolist() == ["MLII", second]
        assert out["beat"].shape[-1] == 4 and (out["lead2"] == 1).all()
        mlii = io.signal_of(rec)[:, rec.sig_name.index("MLII")]
        alone = beats_from_signal(mlii, rec.fs, peaks, config)["beat"]
        np.testing.assert_array_equal(out["beat"][..., :2], alone)
        assert np.abs(out["beat"][..., 2:]).sum() > 0


def test_one_lead_record_has_zero_channels_and_flag(mitdb_dir):
    rec = io.read_record(mitdb_dir / "100")
    ann = io.read_annotation(mitdb_dir / "100")
    signal = io.signal_of(rec)[:, :1]
    out = two_lead_beats(signal, ["MLII"], rec.fs, np.asarray(ann.sample)[5:60], BeatConfig())
    assert out["leads"].tolist() == ["MLII", ""]
    assert (out["lead2"] == 0).all() and not out["beat"][..., 2:].any()
    # a flat second lead is left out with a warning, not fed to the model
    flat = np.concatenate([signal, np.zeros_like(signal)], axis=1)
    with pytest.warns(UserWarning, match="classified on lead MLII alone"):
        out = two_lead_beats(flat, ["MLII", "V1"], rec.fs, np.asarray(ann.sample)[5:60],
                             BeatConfig())
    assert (out["lead2"] == 0).all()


def test_tiny_training_and_classify_round_trip(mitdb_dir, tmp_path):
    from ecgcap.ecg.databases import get_database
    from ecgcap.ecg.inference import classify_record, load_classifier
    from ecgcap.ecg.sequence import SequenceTrainConfig, train_sequence
    from ecgcap.runtime.seed import set_seed

    mitdb = get_database("mitdb")
    db = dataclasses.replace(mitdb, split={**mitdb.split, "train": ("101", "124"),
                                           "test": ("114",)})
    data = load_beat_leads(mitdb_dir, db, ["124", "114"], quiet=True)
    assert data["second_leads"] == {"124": "V4", "114": "V5"}
    set_seed(0)
    config = SequenceTrainConfig(context=8, leads="both", epochs=1, val_records=(),
                                 batch_size=256)
    report = train_sequence(config, db, mitdb_dir, tmp_path, quiet=True)
    assert report["second_leads"]["train"] == {"101": "V1", "124": "V4"}
    assert report["test"]["n"] == 1879
    model, info = load_classifier(tmp_path / "model.keras")
    assert info["sequence"]["context"] == 8 and info["cell"] == "lstm-seq"
    result = classify_record(model, info, mitdb_dir / "114", annotations="atr")
    assert result["leads"] == ["MLII", "V5"] and len(result["beats"]) == 1879
    predicted = [b["label"] for b in result["beats"]]
    counts = np.array(report["test"]["confusion"]).sum(axis=0)  # predicted counts in the run
    assert [predicted.count(c) for c in info["classes"]] == counts.tolist()
    # one lead only (an in-memory record, XQRS beats): still classified, on MLII alone
    rec = io.read_record(mitdb_dir / "114")
    mlii = rec.sig_name.index("MLII")
    one = wfdb.Record(record_name="114_mlii", fs=rec.fs, sig_len=360 * 60,
                      p_signal=rec.p_signal[:360 * 60, [mlii]], sig_name=["MLII"], n_sig=1,
                      units=["mV"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = classify_record(model, info, one, annotations="xqrs")
    assert result["leads"] == ["MLII"] and 40 < len(result["beats"]) < 120
