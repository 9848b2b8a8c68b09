"""The gradient-through-time measurement, proven on a linear recurrence on every backend.

h_t = w * h_(t-1) + x_t with the loss h_T: the gradient reaching step t is w^(T-t), vanishing
for w < 1 and exploding for w > 1. Each backend runs in its own process.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from conftest import run_on_backend
from ecgcap.runtime.gradients import step_norms

SCRIPT = textwrap.dedent("""
    import sys, numpy as np, keras
    from ecgcap.runtime.gradients import step_gradients
    assert keras.backend.backend() == sys.argv[1]
    T = 12
    for w in (0.5, 0.9, 1.0, 1.5):
        x = keras.Input((T, 1), name="x")
        scaled = keras.layers.Dense(1, use_bias=False, name="scale")(x)    # 2 * x_t
        h = keras.layers.SimpleRNN(1, activation="linear", use_bias=False, name="rnn")(scaled)
        model = keras.Model(x, h)
        model.get_layer("scale").set_weights([np.array([[2.0]])])
        model.get_layer("rnn").set_weights([np.array([[1.0]]), np.array([[w]])])
        batch = np.random.default_rng(0).normal(size=(3, T, 1)).astype("float32")
        last_step = lambda y, out: out                                     # the loss is h_T
        expected = w ** (T - np.arange(1, T + 1))                          # w^(T-t), t = 1..T
        g_rnn = step_gradients(model, batch, np.zeros(3), layer="rnn", loss=last_step)
        g_in = step_gradients(model, {"x": batch}, np.zeros(3), loss=last_step)
        assert g_rnn.shape == (3, T, 1) and g_in.shape == (3, T, 1)
        np.testing.assert_allclose(g_rnn[:, :, 0], np.tile(expected, (3, 1)), rtol=1e-5)
        np.testing.assert_allclose(g_in[:, :, 0], np.tile(2 * expected, (3, 1)), rtol=1e-5)
    # per-layer weight gradients: a one-weight linear model under squared error
    from ecgcap.runtime.gradients import layer_gradient_norms
    x = keras.Input((1,))
    lin = keras.Model(x, keras.layers.Dense(1, use_bias=False, name="lin")(x))
    lin.get_layer("lin").set_weights([np.array([[3.0]])])
    xs, ys = np.array([[1.0], [2.0]], "float32"), np.array([[1.0], [1.0]], "float32")
    norms = layer_gradient_norms(lin, xs, ys, loss=keras.losses.MeanSquaredError())
    expected = abs(np.mean(2 * xs[:, 0] * (3.0 * xs[:, 0] - ys[:, 0])))   # d/dw mean (wx-y)^2
    assert set(norms) == {"lin"}, norms
    np.testing.assert_allclose(norms["lin"], expected, rtol=1e-5)
    print("ok", keras.backend.backend())
""")


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_linear_recurrence_gradient_is_w_to_the_power_T_minus_t(backend, tmp_path):
    run_on_backend(SCRIPT, backend, tmp_path)


def test_step_norms_average_real_steps_only():
    grad = np.zeros((2, 3, 2))
    grad[0, :, 0] = [3, 3, 3]
    grad[0, :, 1] = [4, 4, 4]          # norm 5 at every step of sequence 0
    grad[1, :, 0] = [1, 1, 100]        # sequence 1: its last step is padding
    mask = np.array([[1, 1, 1], [1, 1, 0]])
    np.testing.assert_allclose(step_norms(grad, mask), [3, 3, 5])
    np.testing.assert_allclose(step_norms(grad), [3, 3, 52.5])


def test_gradient_log_callback_adds_norms_to_the_history():
    import keras

    from ecgcap.runtime.gradients import GradientLog

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 10, 2)).astype("float32"), rng.integers(0, 3, 32)
    inp = keras.Input((10, 2))
    h = keras.layers.LSTM(4, name="lstm")(inp)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="out")(h))
    model.compile("adam", "sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=2, verbose=0, callbacks=[GradientLog(x[:8], y[:8])])
    for key in ("grad_norm/lstm", "grad_norm/out", "grad_norm/total"):
        assert len(history.history[key]) == 2 and all(v > 0 for v in history.history[key])
    total = history.history["grad_norm/total"][0]
    parts = history.history["grad_norm/lstm"][0] ** 2 + history.history["grad_norm/out"][0] ** 2
    assert total == pytest.approx(np.sqrt(parts))
