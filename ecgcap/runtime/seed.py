"""Reproducibility: one seed for Python, NumPy and the Keras backend."""

from __future__ import annotations


def set_seed(seed: int, *, deterministic: bool = True) -> None:
    """Seed everything with ``keras.utils.set_random_seed``.

    With ``deterministic`` on the TensorFlow backend, also ask for deterministic kernels, so two
    runs on the CPU with the same seed give the same numbers.
    """
    import keras

    keras.utils.set_random_seed(int(seed))
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
