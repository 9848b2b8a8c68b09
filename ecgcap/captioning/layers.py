"""Small layers the captioner is made of, in ``keras.ops`` so that every backend runs them.

All are registered under the package name ``ecgcap`` so that models load in Keras safe mode.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="ecgcap")
class CaptionEmbedding(keras.layers.Embedding):
    """A word embedding that carries its vocabulary (saved in the model's config), so that the
    ``.keras`` file is all that captioning needs."""

    def __init__(self, vocabulary: list[str], output_dim: int, **kwargs):
        kwargs.pop("input_dim", None)
        super().__init__(input_dim=len(vocabulary), output_dim=output_dim, **kwargs)
        self.vocabulary = list(vocabulary)

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("input_dim", None)
        config["vocabulary"] = self.vocabulary
        return config


@keras.saving.register_keras_serializable(package="ecgcap")
class FoldCaptions(keras.layers.Layer):
    """``(images, captions, steps)`` token ids -> ``(images * captions, steps)``."""

    def call(self, captions):
        return ops.reshape(captions, (-1, ops.shape(captions)[-1]))

    def compute_output_shape(self, input_shape):
        return (None, input_shape[-1])


@keras.saving.register_keras_serializable(package="ecgcap")
class RepeatPerCaption(keras.layers.Layer):
    """Repeat each image's tensor once per caption: ``[x (B, ...), captions (B, K, T)]`` ->
    ``(B * K, ...)``, in the order :class:`FoldCaptions` lays the captions out."""

    def call(self, inputs):
        x, captions = inputs
        return ops.repeat(x, ops.shape(captions)[1], axis=0)

    def compute_output_shape(self, input_shape):
        return (None, *input_shape[0][1:])


@keras.saving.register_keras_serializable(package="ecgcap")
class UnfoldCaptions(keras.layers.Layer):
    """``[x (B * K, T, V), captions (B, K, T)]`` -> ``(B, K, T, V)``."""

    def call(self, inputs):
        x, captions = inputs
        return ops.reshape(x, (-1, ops.shape(captions)[1], *ops.shape(x)[1:]))

    def compute_output_shape(self, input_shape):
        return (None, input_shape[1][1], *input_shape[0][1:])


@keras.saving.register_keras_serializable(package="ecgcap")
class BroadcastTime(keras.layers.Layer):
    """``[v (N, D), seq (N, T, E)]`` -> ``v`` repeated at every step: ``(N, T, D)``."""

    def call(self, inputs):
        v, seq = inputs
        return ops.repeat(ops.expand_dims(v, 1), ops.shape(seq)[1], axis=1)

    def compute_output_shape(self, input_shape):
        return (None, input_shape[1][1], input_shape[0][-1])


@keras.saving.register_keras_serializable(package="ecgcap")
class FirstStep(keras.layers.Layer):
    """``(N, 1, V)`` -> ``(N, V)``: the output of a one-step decoder call."""

    def call(self, x):
        return x[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *input_shape[2:])
