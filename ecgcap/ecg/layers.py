"""The few custom layers the masked (whole-recording) classifiers need.

Recordings of different lengths are batched with right padding and an explicit 0/1 ``mask``
input (1 = real sample). Keras' Conv1D and pooling layers do not carry masks, so these layers
do it by hand: zero the padding, shorten the mask with the pooling, and pool over time over the
real steps only. With them a recording's prediction does not depend on how much padding it
was given (tested). Written with ``keras.ops`` only, so they run on every backend, and
registered so that models holding them load in Keras safe mode.
"""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="ecgcap")
class PadToMultiple(layers.Layer):
    """Right-pad ``(signal, mask)`` with zeros to a multiple of ``factor`` time steps.

    Pooling windows then always start at sample 0, whatever the padding, so a padded and an
    unpadded copy of a recording see the same windows.
    """

    def __init__(self, factor: int, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def call(self, signal, valid):
        length = ops.shape(signal)[1]
        extra = (self.factor - length % self.factor) % self.factor
        signal = ops.pad(signal, [[0, 0], [0, extra], [0, 0]])
        valid = ops.pad(ops.cast(valid, signal.dtype), [[0, 0], [0, extra]])
        return signal, valid

    def compute_output_spec(self, signal, valid):
        length = signal.shape[1]
        if length is not None:
            length = -(-length // self.factor) * self.factor
        return (keras.KerasTensor((signal.shape[0], length, signal.shape[2]), signal.dtype),
                keras.KerasTensor((valid.shape[0], length), signal.dtype))

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="ecgcap")
class ApplyMask(layers.Layer):
    """``x * mask``: padded time steps become exactly zero."""

    def call(self, x, valid):
        return x * ops.expand_dims(ops.cast(valid, x.dtype), -1)

    def compute_output_spec(self, x, valid):
        return keras.KerasTensor(x.shape, x.dtype)


@keras.saving.register_keras_serializable(package="ecgcap")
class PoolMask(layers.Layer):
    """Shorten a 0/1 mask as ``MaxPooling1D(pool_size)`` shortens the sequence (valid windows).

    A pooled step is real when any of its samples is real.
    """

    def __init__(self, pool_size: int, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = int(pool_size)

    def call(self, valid):
        pooled = ops.max_pool(ops.expand_dims(ops.cast(valid, self.compute_dtype), -1),
                              self.pool_size, self.pool_size, padding="valid")
        return ops.squeeze(pooled, -1)

    def compute_output_spec(self, valid):
        length = valid.shape[1]
        return keras.KerasTensor((valid.shape[0], None if length is None
                                  else length // self.pool_size), self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}


@keras.saving.register_keras_serializable(package="ecgcap")
class MaskedMeanMax(layers.Layer):
    """Mean and max over the real time steps, concatenated: ``(batch, steps, f) -> (batch, 2f)``.

    Takes the explicit 0/1 mask; a Keras mask carried by ``x`` (from the recurrent layers) says
    the same and ends here.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def compute_mask(self, inputs, previous_mask=None):
        return None

    def call(self, x, valid):
        m = ops.expand_dims(ops.cast(valid, x.dtype), -1)
        count = ops.maximum(ops.sum(m, axis=1), 1.0)
        mean = ops.sum(x * m, axis=1) / count
        big = ops.cast(1e4, x.dtype)  # fits float16; recurrent outputs lie in [-1, 1]
        peak = ops.max(x * m - big * (1.0 - m), axis=1)
        return ops.concatenate([mean, peak], axis=-1)

    def compute_output_spec(self, x, valid):
        return keras.KerasTensor((x.shape[0], 2 * x.shape[2]), x.dtype)


@keras.saving.register_keras_serializable(package="ecgcap")
class ToBool(layers.Layer):
    """A 0/1 mask as booleans, for the ``mask`` argument of the recurrent layers."""

    def call(self, valid):
        return ops.greater(valid, 0.5)

    def compute_output_spec(self, valid):
        return keras.KerasTensor(valid.shape, "bool")
