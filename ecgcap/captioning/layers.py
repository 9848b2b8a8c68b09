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


@keras.saving.register_keras_serializable(package="ecgcap")
class SoftAttentionLSTM(keras.layers.Layer):
    """The recurrence of Show, Attend and Tell (Xu et al. 2015), soft attention.

    At each step ``t`` the previous hidden state scores every region of the feature grid
    (Bahdanau's additive attention: ``v . tanh(W_a a_i + W_h h_{t-1})``), the softmax of the
    scores ``alpha_t`` weighs the regions into a context ``z_t``, gated by
    ``beta_t = sigmoid(f(h_{t-1}))``, and the LSTM reads ``[word_t, z_t]``.

    Inputs ``[words (N, T, E), features (N, L, D), h0 (N, units), c0 (N, units), tokens (N, T)]``;
    outputs ``[h (N, T, units), z (N, T, D), alpha (N, T, L), h_T, c_T]``. In training the
    doubly stochastic penalty ``penalty * sum_i (1 - sum_t alpha_ti)^2`` per caption (over the
    steps whose token is not padding), divided by the number of real words, is added to the
    loss: it asks the model to look at every region over the caption. (Token ids 0 and 3 are
    ``<pad>`` and ``<end>``, as in :class:`ecgcap.captioning.text.Vocabulary`.)
    """

    def __init__(self, units: int, attention_units: int = 256, penalty: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.units, self.attention_units, self.penalty = units, attention_units, penalty
        self.cell = keras.layers.LSTMCell(units, name="cell")
        self.keys = keras.layers.Dense(attention_units, use_bias=False, name="keys")
        self.query = keras.layers.Dense(attention_units, name="query")
        self.score = keras.layers.Dense(1, name="score")
        self.gate = keras.layers.Dense(1, activation="sigmoid", name="gate")

    def build(self, input_shape):
        words, features = input_shape[0], input_shape[1]
        self.keys.build(features)
        self.query.build((None, self.units))
        self.score.build((None, features[1], self.attention_units))
        self.gate.build((None, self.units))
        self.cell.build((None, words[-1] + features[-1]))

    def attend(self, keys, features, h):
        """``(alpha (N, L), gated context (N, D))`` of one step."""
        e = self.score(ops.tanh(keys + ops.expand_dims(self.query(h), 1)))[..., 0]
        alpha = ops.softmax(e, axis=-1)
        context = ops.matmul(ops.expand_dims(alpha, 1), features)[:, 0]
        return alpha, context * self.gate(h)

    def call(self, inputs, training=None):
        words, features, h, c, tokens = inputs
        keys = self.keys(features)
        hs, zs, alphas = [], [], []
        for t in range(words.shape[1]):  # static length: unrolled, as LSTM(unroll=True)
            alpha, z = self.attend(keys, features, h)
            h, (h, c) = self.cell(ops.concatenate([words[:, t], z], -1), [h, c],
                                  training=training)
            hs.append(h)
            zs.append(z)
            alphas.append(alpha)
        alphas_t = ops.stack(alphas, 1)
        if training and self.penalty:
            # steps that predict a word or <end>: not padding, not the step fed <end> (id 3)
            real = ops.cast(ops.logical_and(ops.not_equal(tokens, 0), ops.not_equal(tokens, 3)),
                            alphas_t.dtype)  # (N, T)
            coverage = ops.sum(alphas_t * ops.expand_dims(real, -1), axis=1)  # (N, L)
            total = ops.sum(ops.square(1.0 - coverage))
            self.add_loss(self.penalty * total / ops.maximum(ops.sum(real), 1.0))
        return ops.stack(hs, 1), ops.stack(zs, 1), alphas_t, h, c

    def compute_output_shape(self, input_shape):
        words, features = input_shape[0], input_shape[1]
        n, t = words[0], words[1]
        return ((n, t, self.units), (n, t, features[-1]), (n, t, features[1]),
                (n, self.units), (n, self.units))

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units,
                "attention_units": self.attention_units, "penalty": self.penalty}


@keras.saving.register_keras_serializable(package="ecgcap")
class MeanRegion(keras.layers.Layer):
    """``(N, L, D)`` -> ``(N, D)``: the mean annotation vector (the LSTM's initial state comes
    from it, as in Show, Attend and Tell)."""

    def call(self, x):
        return ops.mean(x, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])
