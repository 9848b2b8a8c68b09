"""The LSTM and SimpleRNN builders: shapes, a step lowers the loss, .keras round trip."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from ecgcap.ecg.models import BUILDERS, build_recurrent_classifier

SMALL = dict(input_length=32, conv_filters=(8,), units=8, dense_units=8, dropout=0.0)


def _batch(n=32, length=32, rr=8, seed=0):
    rng = np.random.default_rng(seed)
    x = {"beat": rng.normal(size=(n, length, 2)).astype("float32"),
         "rr": rng.normal(size=(n, rr)).astype("float32")}
    return x, rng.integers(0, 5, size=n)


@pytest.mark.parametrize("cell", sorted(BUILDERS))
@pytest.mark.parametrize("bidirectional,layers", [(True, 1), (False, 2)])
def test_output_shape_and_inputs(cell, bidirectional, layers):
    model = BUILDERS[cell](bidirectional=bidirectional, recurrent_layers=layers, **SMALL)
    x, _ = _batch()
    assert sorted(t.name for t in model.inputs) == ["beat", "rr"]
    probs = model.predict(x, verbose=0)
    assert probs.shape == (32, 5) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-5)


def test_lstm_keeps_the_cudnn_eligible_configuration():
    model = BUILDERS["lstm"](**SMALL)
    lstm = model.get_layer("bilstm1").forward_layer
    assert lstm.activation.__name__ == "tanh"
    assert lstm.recurrent_activation.__name__ == "sigmoid"
    assert lstm.recurrent_dropout == 0 and not lstm.unroll and lstm.use_bias


def test_simplernn_baseline_matches_the_lstm_signature():
    lstm, rnn = BUILDERS["lstm"](**SMALL), BUILDERS["simplernn"](**SMALL)
    assert [type(layer).__name__ for layer in lstm.layers if "lstm" not in layer.name] == \
        [type(layer).__name__ for layer in rnn.layers if "simplernn" not in layer.name]
    assert lstm.output.shape == rnn.output.shape


@pytest.mark.parametrize("cell", sorted(BUILDERS))
def test_training_steps_lower_the_loss(cell):
    keras.utils.set_random_seed(0)
    model = BUILDERS[cell](**SMALL)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    x, y = _batch()
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=5, batch_size=32, verbose=0)
    assert model.evaluate(x, y, verbose=0) < before


@pytest.mark.parametrize("cell", sorted(BUILDERS))
def test_keras_round_trip_gives_identical_predictions(cell, tmp_path):
    model = BUILDERS[cell](**SMALL)
    model.get_layer("rr_norm").adapt(_batch(seed=1)[0]["rr"])
    x, _ = _batch()
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_array_equal(model.predict(x, verbose=0), again.predict(x, verbose=0))


def test_no_rr_input_and_variable_length():
    model = build_recurrent_classifier("lstm", input_length=None, rr_features=0, classes=4,
                                       conv_filters=(), units=4)
    out = model.predict({"beat": np.zeros((2, 50, 2), "float32")}, verbose=0)
    assert out.shape == (2, 4)


@pytest.mark.parametrize("bad", [dict(cell="gru"), dict(units=0), dict(dropout=1.0)])
def test_bad_arguments_are_refused(bad):
    with pytest.raises(ValueError):
        build_recurrent_classifier(**{"cell": "lstm", **bad})


# ------------------------------------------------------------------ the sequence (masked) form

SEQ = dict(masked=True, input_length=None, channels=1, rr_features=3, classes=4,
           conv_filters=(8, 8), pool_size=4, units=8, dense_units=8, dropout=0.0)


def _recordings(lengths=(1003, 640, 777), rr=3, seed=0):
    """Padded batch of random recordings of ``lengths``, with their mask."""
    rng = np.random.default_rng(seed)
    n, t = len(lengths), max(lengths)
    x = rng.normal(size=(n, t, 1)).astype("float32")
    mask = (np.arange(t)[None] < np.array(lengths)[:, None]).astype("float32")
    return {"signal": x * mask[..., None], "mask": mask,
            "rr": rng.normal(size=(n, rr)).astype("float32")}


@pytest.mark.parametrize("cell", sorted(BUILDERS))
@pytest.mark.parametrize("pooling", ["mean-max", "last"])
def test_padding_never_changes_a_prediction(cell, pooling):
    model = BUILDERS[cell](pooling=pooling, **SEQ)
    x = _recordings()
    padded = model.predict(x, verbose=0)
    for i, length in enumerate((1003, 640, 777)):
        alone = {"signal": x["signal"][i:i + 1, :length], "mask": x["mask"][i:i + 1, :length],
                 "rr": x["rr"][i:i + 1]}
        np.testing.assert_allclose(model.predict(alone, verbose=0)[0], padded[i], atol=1e-5)
        # garbage in the padding is masked out too
        noisy = {k: v[i:i + 1].copy() for k, v in x.items()}
        noisy["signal"][0, length:] = 50.0
        np.testing.assert_allclose(model.predict(noisy, verbose=0)[0], padded[i], atol=1e-5)


def test_the_mask_matters():
    model = BUILDERS["lstm"](**SEQ)
    x = _recordings(lengths=(1003, 1003))
    half = {**x, "mask": x["mask"].copy()}
    half["mask"][:, 500:] = 0
    assert not np.allclose(model.predict(x, verbose=0), model.predict(half, verbose=0))


@pytest.mark.parametrize("cell", sorted(BUILDERS))
def test_sequence_form_trains_and_round_trips(cell, tmp_path):
    keras.utils.set_random_seed(0)
    model = BUILDERS[cell](**SEQ)
    assert sorted(t.name for t in model.inputs) == ["mask", "rr", "signal"]
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    x, y = _recordings(lengths=(900, 1003, 640, 777) * 4), np.arange(16) % 4
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=8, batch_size=16, verbose=0)
    assert model.evaluate(x, y, verbose=0) < before
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_array_equal(model.predict(x, verbose=0), again.predict(x, verbose=0))


def test_ensemble_averages_its_members_and_round_trips(tmp_path):
    from ecgcap.ecg.models import build_ensemble

    members = []
    for seed in range(3):
        keras.utils.set_random_seed(seed)
        m = BUILDERS["lstm"](**SMALL)
        m.get_layer("rr_norm").adapt(_batch(seed=1)[0]["rr"])
        members.append(m)
    x, _ = _batch()
    each = [m.predict(x, verbose=0) for m in members]
    ensemble = build_ensemble(members)
    out = ensemble.predict(x, verbose=0)
    np.testing.assert_allclose(out, np.mean(each, axis=0), rtol=1e-5, atol=1e-6)
    ensemble.save(tmp_path / "e.keras")
    again = keras.saving.load_model(tmp_path / "e.keras", safe_mode=True)
    np.testing.assert_array_equal(again.predict(x, verbose=0), out)
    with pytest.raises(ValueError, match="same inputs"):
        build_ensemble([members[0], build_recurrent_classifier("lstm", rr_features=0,
                                                                classes=5, units=4)])
