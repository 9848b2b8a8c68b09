"""Keras functional-API builders: the LSTM classifier and its SimpleRNN baseline.

Both share one generic builder, so the baseline differs from the LSTM only in its recurrent
cell: same inputs, front end, widths, head and defaults. Only ``keras.layers``, ``keras.ops``
and the masking layers of :mod:`ecgcap.ecg.layers` are used, so the models run on the
TensorFlow, JAX and torch backends.

Two forms: the beat form (fixed-length beat windows, input ``beat``) and the sequence form
(``masked=True``: whole recordings of any length, inputs ``signal`` and ``mask``), whose
Conv1D + pooling front end shortens thousands of samples to a few hundred steps, whose
recurrent layers skip the padding, and whose prediction does not depend on the padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from ecgcap.ecg.layers import ApplyMask, MaskedMeanMax, PadToMultiple, PoolMask, ToBool

CELLS = {"lstm": layers.LSTM, "simplernn": layers.SimpleRNN}


def _front_end(x, filters: Sequence[int], kernel_size: int, pool_size: int, name: str,
               mask=None):
    """Conv1D + batch norm + ReLU + max pooling blocks: shorten the sequence ``pool**n`` times.

    With a ``mask`` the padding is zeroed after every block and the mask pooled alongside;
    returns ``(x, mask)``.
    """
    for i, f in enumerate(filters, 1):
        x = layers.Conv1D(f, kernel_size, padding="same", use_bias=False,
                          name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
        if mask is not None:
            x = ApplyMask(name=f"{name}_mask{i}")(x, mask)
            mask = PoolMask(pool_size, name=f"{name}_maskpool{i}")(mask)
        x = layers.MaxPooling1D(pool_size, name=f"{name}_pool{i}")(x)
    return x, mask


def build_recurrent_classifier(
    cell: str = "lstm",
    *,
    input_length: int | None = 126,
    channels: int = 2,
    rr_features: int = 8,
    classes: int = 5,
    conv_filters: Sequence[int] = (32, 32),
    kernel_size: int = 7,
    pool_size: int = 2,
    recurrent_layers: int = 1,
    units: int = 64,
    bidirectional: bool = True,
    dropout: float = 0.3,
    dense_units: int = 64,
    masked: bool = False,
    pooling: str = "last",
    name: str | None = None,
) -> keras.Model:
    """A recurrent classifier of ECG sequences, with optional RR features as a second input.

    Parameters
    ----------
    cell : ``"lstm"`` or ``"simplernn"``.
    input_length : samples per sequence (``None`` for any length).
    channels : signal channels per sample.
    rr_features : width of the second input ``rr`` (0: no second input).
    classes : softmax outputs.
    conv_filters : filters of the Conv1D + pooling blocks in front (empty: none).
    kernel_size, pool_size : of those blocks.
    recurrent_layers, units, bidirectional : the recurrent stack; the last layer returns its
        final state.
    dropout : rate of the ``Dropout`` layers between blocks. The recurrent layers keep Keras'
        cuDNN-eligible defaults (tanh/sigmoid, no recurrent dropout, no unrolling).
    dense_units : width of the hidden layer of the head.
    masked : the sequence form: inputs ``signal`` (samples, channels) and ``mask`` (samples,),
        1 for real samples and 0 for right padding, for recordings of different lengths.
    pooling : how the recurrent outputs become one vector: ``"last"`` (the last layer's final
        state; with a mask, the state at the last real step) or ``"mean-max"`` (mean and max
        over the real time steps of the last layer's outputs).

    Returns
    -------
    keras.Model with inputs ``{"beat": (length, channels)[, "rr": (rr_features,)]}`` (or
    ``{"signal", "mask"[, "rr"]}`` when ``masked``) and a float32 softmax output of ``classes``.

    Examples
    --------
    >>> model = build_recurrent_classifier("lstm", masked=True, input_length=None, channels=1,
    ...                                    rr_features=0, classes=4, pooling="mean-max")
    >>> sorted(model.input)
    ['mask', 'signal']
    """
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
    for arg, value in (("channels", channels), ("classes", classes), ("units", units),
                       ("recurrent_layers", recurrent_layers), ("dense_units", dense_units)):
        if value < 1:
            raise ValueError(f"{arg} must be at least 1, got {value}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if pooling not in ("last", "mean-max"):
        raise ValueError(f"pooling must be 'last' or 'mean-max', got {pooling!r}")
    name = name or f"{cell}_classifier"
    mask = None
    if masked:
        signal = keras.Input((input_length, channels), name="signal")
        mask_in = keras.Input((input_length,), name="mask")
        inputs = {"signal": signal, "mask": mask_in}
        x, mask = signal, mask_in
        if conv_filters:
            x, mask = PadToMultiple(pool_size ** len(conv_filters), name="pad")(x, mask)
        x = ApplyMask(name="input_mask")(x, mask)
    else:
        x = keras.Input((input_length, channels), name="beat")
        inputs = {"beat": x}
    if conv_filters:
        x, mask = _front_end(x, conv_filters, kernel_size, pool_size, "front", mask)
        if dropout:
            x = layers.Dropout(dropout, name="front_dropout")(x)
    steps = None if mask is None else ToBool(name="step_mask")(mask)
    rnn = CELLS[cell]
    for i in range(1, recurrent_layers + 1):
        sequences = pooling != "last" or i < recurrent_layers
        layer = rnn(units, return_sequences=sequences, name=f"{cell}{i}")
        if bidirectional:
            layer = layers.Bidirectional(layer, name=f"bi{cell}{i}")
        x = layer(x) if steps is None else layer(x, mask=steps)
        if dropout:
            x = layers.Dropout(dropout, name=f"{cell}{i}_dropout")(x)
    if pooling == "mean-max":
        if mask is None:
            x = layers.Concatenate(name="time_pool")([
                layers.GlobalAveragePooling1D(name="time_mean")(x),
                layers.GlobalMaxPooling1D(name="time_max")(x)])
        else:
            x = MaskedMeanMax(name="time_pool")(x, mask)
    if rr_features:
        rr = keras.Input((rr_features,), name="rr")
        inputs["rr"] = rr
        r = layers.Normalization(name="rr_norm")(rr)
        r = layers.Dense(16, activation="relu", name="rr_dense")(r)
        x = layers.Concatenate(name="join")([x, r])
    x = layers.Dense(dense_units, activation="relu", name="head_dense")(x)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    out = layers.Dense(classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, out, name=name)


def build_lstm_classifier(**kwargs) -> keras.Model:
    """The LSTM classifier; keyword arguments as :func:`build_recurrent_classifier`."""
    return build_recurrent_classifier("lstm", **kwargs)


def build_simplernn_classifier(**kwargs) -> keras.Model:
    """The SimpleRNN baseline, on equal terms with :func:`build_lstm_classifier`."""
    return build_recurrent_classifier("simplernn", **kwargs)


BUILDERS = {"lstm": build_lstm_classifier, "simplernn": build_simplernn_classifier}


def build_ensemble(members: Sequence[keras.Model], name: str = "ensemble") -> keras.Model:
    """One model whose probabilities are the mean of ``members``' (e.g. the same classifier
    trained from several seeds): same inputs, same output, one ``.keras`` file."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    first = members[0]
    names = [t.name for t in first.inputs]
    if any(sorted(t.name for t in m.inputs) != sorted(names) for m in members):
        raise ValueError("ensemble members must take the same inputs")
    inputs = {t.name: keras.Input(shape=t.shape[1:], dtype=t.dtype, name=t.name)
              for t in first.inputs}
    for i, member in enumerate(members):
        member.name = f"member_{i}"  # unique names inside the ensemble's file
    outputs = [member(inputs) for member in members]
    mean = outputs[0] if len(outputs) == 1 else layers.Average(name="mean")(outputs)
    return keras.Model(inputs, mean, name=name)


def build_beat_sequence_classifier(
    cell: str = "lstm",
    *,
    context: int = 32,
    beat_length: int = 126,
    channels: int = 2,
    rr_features: int = 9,
    lead_flag: bool = False,
    classes: int = 5,
    conv_filters: Sequence[int] = (32, 32),
    kernel_size: int = 7,
    pool_size: int = 2,
    embedding: int = 64,
    units: int = 64,
    bidirectional: bool = True,
    dropout: float = 0.3,
    beat_encoder: str = "conv",
    name: str | None = None,
) -> keras.Model:
    """A many-to-many classifier of consecutive beats: one label per beat, in context.

    A small encoder (the conv front end of :func:`build_recurrent_classifier`, with
    ``beat_encoder="lstm"`` also its recurrent layer over the beat's samples, then a dense
    embedding) is applied to every beat of the window (``TimeDistributed``); each beat's RR
    features (and, with ``lead_flag``, whether the second lead is present) join its embedding;
    a recurrent layer (bidirectional by default) runs over the window of beats and returns
    every step; a softmax labels each step.

    Parameters
    ----------
    cell : ``"lstm"`` or ``"simplernn"`` (same sizes, the baseline on equal terms).
    context : beats per window (fixed: shorter records are padded and masked).
    beat_length, channels : samples and channels of one beat.
    rr_features : width of the per-beat input ``rr``.
    lead_flag : add the input ``lead2`` (steps, 1): 1 where the record's second lead feeds
        channels 2-3, 0 where it is absent (those channels then hold zeros).
    classes : softmax outputs per beat.
    conv_filters, kernel_size, pool_size : the per-beat Conv1D + pooling blocks.
    embedding : width of a beat's embedding.
    units, bidirectional, dropout : the recurrent layer over beats and the dropout rate.
    beat_encoder : ``"conv"`` (the conv blocks' output, flattened, embeds a beat) or
        ``"lstm"`` (a recurrent layer of ``cell`` over those blocks' steps, as in the per-beat
        classifier, embeds it: :func:`build_recurrent_classifier` inside the window).

    Returns
    -------
    keras.Model with inputs ``{"beat": (context, beat_length, channels), "rr": (context,
    rr_features), "mask": (context,)[, "lead2": (context, 1)]}`` (``mask`` 1 for real beats, 0
    for padding) and a float32 softmax output (context, classes).

    Examples
    --------
    >>> model = build_beat_sequence_classifier("lstm", context=16, channels=4, lead_flag=True)
    >>> model.output.shape
    (None, 16, 5)
    """
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
    for arg, value in (("channels", channels), ("classes", classes), ("units", units),
                       ("embedding", embedding), ("rr_features", rr_features),
                       ("beat_length", beat_length)):
        if value < 1:
            raise ValueError(f"{arg} must be at least 1, got {value}")
    if context < 1:
        raise ValueError(f"context must be at least 1, got {context}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if beat_encoder not in ("conv", "lstm"):
        raise ValueError(f"beat_encoder must be 'conv' or 'lstm', got {beat_encoder!r}")
    name = name or f"{cell}_beat_sequence"
    beat = keras.Input((context, beat_length, channels), name="beat")
    rr = keras.Input((context, rr_features), name="rr")
    mask = keras.Input((context,), name="mask")
    inputs = {"beat": beat, "rr": rr, "mask": mask}
    # a Conv2D with (1, k) kernels over (beats, samples) is a Conv1D applied to every beat
    # alone (TimeDistributed, in one batched op rather than a loop over the beats)
    x = beat
    length = beat_length
    for i, f in enumerate(conv_filters, 1):
        x = layers.Conv2D(f, (1, kernel_size), padding="same", use_bias=False,
                          name=f"beat_conv{i}")(x)
        x = layers.BatchNormalization(name=f"beat_bn{i}")(x)
        x = layers.Activation("relu", name=f"beat_relu{i}")(x)
        x = layers.MaxPooling2D((1, pool_size), name=f"beat_pool{i}")(x)
        length //= pool_size
    if beat_encoder == "lstm":
        encoder = CELLS[cell](units, name=f"beat_{cell}")
        if bidirectional:
            encoder = layers.Bidirectional(encoder, name=f"beat_bi{cell}")
        x = layers.TimeDistributed(encoder, name="beat_recurrent")(x)
    else:
        x = layers.Reshape((context, length * (conv_filters[-1] if conv_filters else channels)),
                           name="beat_flatten")(x)
    if dropout:
        x = layers.Dropout(dropout, name="beat_dropout")(x)
    x = layers.Dense(embedding, activation="relu", name="beat_embedding")(x)
    r = layers.Normalization(name="rr_norm")(rr)
    r = layers.Dense(16, activation="relu", name="rr_dense")(r)
    joined = [x, r]
    if lead_flag:
        flag = keras.Input((context, 1), name="lead2")
        inputs["lead2"] = flag
        joined.append(flag)
    x = layers.Concatenate(name="join")(joined)
    layer = CELLS[cell](units, return_sequences=True, name=f"{cell}1")
    if bidirectional:
        layer = layers.Bidirectional(layer, name=f"bi{cell}1")
    x = layer(x, mask=ToBool(name="step_mask")(mask))
    if dropout:
        x = layers.Dropout(dropout, name=f"{cell}1_dropout")(x)
    out = layers.Dense(classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, out, name=name)


SEQUENCE_BUILDERS = {"lstm-seq": lambda **kw: build_beat_sequence_classifier("lstm", **kw),
                     "simplernn-seq": lambda **kw: build_beat_sequence_classifier("simplernn",
                                                                                  **kw)}
