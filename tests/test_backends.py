"""The same tiny functional model builds, trains a step, saves and reloads on every backend.

Each backend runs in its own process (Keras picks its backend once, at import). Backends that
are not installed are skipped; CI installs TensorFlow and JAX.
"""

from __future__ import annotations

import textwrap

import pytest

from conftest import run_on_backend

SCRIPT = textwrap.dedent("""
    import sys, numpy as np, keras
    from ecgcap.ecg.models import BUILDERS
    assert keras.backend.backend() == sys.argv[1], keras.backend.backend()
    rng = np.random.default_rng(0)
    x = {"beat": rng.normal(size=(16, 24, 2)).astype("float32"),
         "rr": rng.normal(size=(16, 8)).astype("float32")}
    y = rng.integers(0, 5, size=16)
    for cell, build in BUILDERS.items():
        model = build(input_length=24, conv_filters=(4,), units=4, dense_units=4)
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)
        path = sys.argv[2] + f"/{cell}.keras"
        model.save(path)
        again = keras.saving.load_model(path, safe_mode=True)
        a, b = model.predict(x, verbose=0), again.predict(x, verbose=0)
        assert a.shape == (16, 5)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
        # the sequence form: masked recordings of different lengths, padding-invariant
        seq = build(masked=True, input_length=None, channels=1, rr_features=3, classes=4,
                    conv_filters=(4, 4), pool_size=4, units=4, dense_units=4, dropout=0.0,
                    pooling="mean-max")
        mask = (np.arange(100)[None] < np.array([100, 70, 37, 90] * 4)[:, None]).astype("float32")
        xs = {"signal": rng.normal(size=(16, 100, 1)).astype("float32") * mask[..., None],
              "mask": mask, "rr": rng.normal(size=(16, 3)).astype("float32")}
        seq.compile("adam", "sparse_categorical_crossentropy")
        seq.fit(xs, y % 4, epochs=1, batch_size=16, verbose=0)
        path = sys.argv[2] + f"/{cell}_seq.keras"
        seq.save(path)
        again = keras.saving.load_model(path, safe_mode=True)
        a = seq.predict(xs, verbose=0)
        np.testing.assert_allclose(a, again.predict(xs, verbose=0), rtol=0, atol=1e-6)
        short = {"signal": xs["signal"][2:3, :37], "mask": mask[2:3, :37], "rr": xs["rr"][2:3]}
        np.testing.assert_allclose(seq.predict(short, verbose=0)[0], a[2], atol=1e-5)
    print("ok", keras.backend.backend())
""")


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_tiny_model_round_trip_on_backend(backend, tmp_path):
    run_on_backend(SCRIPT, backend, tmp_path, str(tmp_path))
