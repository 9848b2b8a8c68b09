"""Captioner builders (Keras functional API): a CNN encoder and an LSTM decoder.

``build_encoder`` maps an image to a feature map (regions x channels) and a pooled image vector,
the code ``c`` of the encoder-decoder. ``build_captioner`` joins it to an LSTM decoder trained
with teacher forcing: the caption shifted by one step goes in, the next word comes out. The
image vector sets the LSTM's initial state and/or is fed beside every word (``inject``); soft
attention over the feature map (``attention=True``, dot-product attention of each decoder
output over the regions, as in Luong et al. 2015) is an option.

The captioner takes ``K`` captions per image (``caption`` input ``(batch, K, steps)``) so that
the encoder runs once per image in training; ``K = 1`` elsewhere. ``decoder_parts`` rebuilds
the decoder as one-step models for greedy and beam search, sharing the trained layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
from keras import layers

from ecgcap.captioning.layers import (
    BroadcastTime,
    CaptionEmbedding,
    FirstStep,
    FoldCaptions,
    MeanRegion,
    RepeatPerCaption,
    SoftAttentionLSTM,
    UnfoldCaptions,
)

INJECT = ("init", "every", "both")
ENCODERS = ("convpool", "mobilenet_v2", "features")
MOBILENET_FEATURES = 1280  # channels of MobileNetV2's last feature map
BACKBONES = {  # keras.applications models and the input scaling each expects (from 0..255)
    "mobilenet_v2": ("MobileNetV2", 1 / 127.5, -1.0),
    "efficientnet_b0": ("EfficientNetB0", 1.0, 0.0),
}


def _conv_block(x, filters: int, convs: int, name: str):
    for i in range(convs):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i + 1}")(x)
        x = layers.BatchNormalization(name=f"{name}_bn{i + 1}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i + 1}")(x)
    return layers.MaxPooling2D(2, name=f"{name}_pool")(x)


def build_encoder(image_size: int = 128, *, filters: Sequence[int] = (32, 64, 128, 256),
                  convs_per_block: int = 2, code_dim: int = 256, backbone: str | None = None,
                  backbone_weights: str | None = None, name: str = "encoder") -> keras.Model:
    """Image ``(size, size, 3)`` with values 0..255 -> ``[feature_map (regions, channels),
    image_vector (code_dim,)]``.

    The default is blocks of (conv 3x3, batch norm, ReLU) x ``convs_per_block`` and 2x2 max
    pooling; ``backbone`` (one of ``BACKBONES``) uses a ``keras.applications`` network instead,
    with ``backbone_weights`` (``None``, or a weights file or ``"imagenet"`` where it can be
    downloaded).
    """
    if image_size < 16:
        raise ValueError(f"image_size must be 16 or more, got {image_size}")
    if not filters or min(filters) < 1 or convs_per_block < 1 or code_dim < 1:
        raise ValueError("filters, convs_per_block and code_dim must be positive")
    image = keras.Input((image_size, image_size, 3), name="image")
    if backbone is None:
        x = layers.Rescaling(1 / 255.0, name="rescale")(image)
        for i, f in enumerate(filters):
            x = _conv_block(x, f, convs_per_block, f"block{i + 1}")
    else:
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
        cls, scale, offset = BACKBONES[backbone]
        x = layers.Rescaling(scale, offset, name="rescale")(image)
        net = getattr(keras.applications, cls)(include_top=False, weights=backbone_weights,
                                                input_shape=(image_size, image_size, 3))
        x = net(x)
    channels = x.shape[-1]
    feature_map = layers.Reshape((-1, channels), name="feature_map")(x)
    pooled = layers.GlobalAveragePooling2D(name="pool")(x)
    vector = layers.Dense(code_dim, activation="relu", name="image_vector")(pooled)
    return keras.Model(image, [feature_map, vector], name=name)


def build_pretrained_encoder(image_size: int = 224, *, weights: str | None = None,
                             name: str = "encoder") -> keras.Model:
    """Image ``(size, size, 3)`` (0..255) -> ``[feature_map (regions, 1280), mean (1280,)]``:
    ``keras.applications.MobileNetV2`` without its classifier, frozen, BatchNorm in inference
    mode. ``weights`` is a local ``.weights.h5`` file (ImageNet weights), never a download.
    """
    if image_size < 32:
        raise ValueError(f"image_size must be 32 or more, got {image_size}")
    image = keras.Input((image_size, image_size, 3), name="image")
    x = layers.Rescaling(1 / 127.5, -1.0, name="rescale")(image)  # mobilenet_v2.preprocess_input
    net = keras.applications.MobileNetV2(include_top=False, weights=None,
                                         input_shape=(image_size, image_size, 3))
    if weights is not None:
        net.load_weights(weights)
    net.trainable = False
    x = net(x, training=False)
    feature_map = layers.Reshape((-1, x.shape[-1]), name="feature_map")(x)
    return keras.Model(image, [feature_map, MeanRegion(name="pool")(feature_map)], name=name)


def build_feature_input(feature_shape: Sequence[int], *, name: str = "encoder") -> keras.Model:
    """Cached feature maps ``(regions, channels)`` -> ``[feature_map, mean]``: the encoder of a
    captioner trained on precomputed features (its input is still called ``image``)."""
    features = keras.Input(tuple(feature_shape), name="image")
    return keras.Model(features, [layers.Identity(name="feature_map")(features),
                                  MeanRegion(name="pool")(features)], name=name)


@dataclass
class AttentionDecoderLayers:
    """Show, Attend and Tell's decoder layers, shared by the teacher-forced model and the
    one-step decoding models."""

    project: layers.Dense
    embedding: CaptionEmbedding
    init_h: layers.Dense
    init_c: layers.Dense
    recurrence: SoftAttentionLSTM
    out_hidden: layers.Dense
    out_context: layers.Dense
    output: layers.Dense
    dropout: float = 0.0

    @classmethod
    def from_model(cls, model: keras.Model) -> AttentionDecoderLayers:
        get = model.get_layer
        return cls(get("feature_projection"), get("word_embedding"), get("init_h"),
                   get("init_c"), get("soft_attention"), get("out_hidden"), get("out_context"),
                   get("word_logits"))

    @classmethod
    def new(cls, vocabulary: Sequence[str], *, embed_dim: int, units: int, feature_dim: int,
            attention_units: int, penalty: float, dropout: float) -> AttentionDecoderLayers:
        return cls(
            layers.Dense(feature_dim, activation="relu", name="feature_projection"),
            CaptionEmbedding(list(vocabulary), embed_dim, name="word_embedding"),
            layers.Dense(units, activation="tanh", name="init_h"),
            layers.Dense(units, activation="tanh", name="init_c"),
            SoftAttentionLSTM(units, attention_units, penalty, name="soft_attention"),
            layers.Dense(embed_dim, name="out_hidden"),
            layers.Dense(embed_dim, name="out_context"),
            layers.Dense(len(vocabulary), name="word_logits"),
            dropout)

    def decode(self, tokens, feature_map, states, *, prefix: str = ""):
        """Tokens ``(N, T)``, projected feature map, ``[h, c]`` -> ``(logits (N, T, V),
        alpha (N, T, L), [h, c])``. The output is Show, Attend and Tell's deep output layer:
        ``W (tanh(E y_{t-1} + L_h h_t + L_z z_t))``."""
        words = self.embedding(tokens)
        x = layers.Dropout(self.dropout, name=f"{prefix}embedding_dropout")(words) \
            if self.dropout else words
        hs, zs, alpha, h, c = self.recurrence([x, feature_map, *states, tokens])
        out = layers.Add(name=f"{prefix}deep_output")(
            [words, self.out_hidden(hs), self.out_context(zs)])
        out = layers.Activation("tanh", name=f"{prefix}deep_output_tanh")(out)
        if self.dropout:
            out = layers.Dropout(self.dropout, name=f"{prefix}output_dropout")(out)
        return self.output(out), alpha, [h, c]


def _build_attention_captioner(vocabulary: Sequence[str], encoder: keras.Model, *,
                               max_length: int, embed_dim: int, units: int, feature_dim: int,
                               attention_units: int, penalty: float, dropout: float,
                               name: str) -> keras.Model:
    parts = AttentionDecoderLayers.new(vocabulary, embed_dim=embed_dim, units=units,
                                       feature_dim=feature_dim,
                                       attention_units=attention_units, penalty=penalty,
                                       dropout=dropout)
    image = keras.Input(encoder.inputs[0].shape[1:], name="image")
    caption = keras.Input((None, max_length - 1), dtype="int32", name="caption")
    feature_map, vector = encoder(image)
    feature_map = parts.project(feature_map)
    if dropout:
        feature_map = layers.Dropout(dropout, name="feature_dropout")(feature_map)
    tokens = FoldCaptions(name="fold_captions")(caption)
    fm = RepeatPerCaption(name="features_per_caption")([feature_map, caption])
    v = RepeatPerCaption(name="vector_per_caption")([vector, caption])
    logits, _, _ = parts.decode(tokens, fm, [parts.init_h(v), parts.init_c(v)])
    return keras.Model({"image": image, "caption": caption},
                       {"words": UnfoldCaptions(name="words")([logits, caption])}, name=name)


@dataclass
class DecoderLayers:
    """The decoder's layers, shared by the teacher-forced model and the one-step models."""

    embedding: CaptionEmbedding
    lstms: list[layers.LSTM]
    init: list[tuple[layers.Dense, layers.Dense]]
    inject: layers.Dense | None
    attention: tuple[layers.Dense, layers.Attention, layers.Dense] | None
    dropout: float
    output: layers.Dense

    @classmethod
    def from_model(cls, model: keras.Model) -> DecoderLayers:
        """The decoder layers of a model made by :func:`build_captioner`, by their names."""
        names = {layer.name for layer in model.layers}
        n = sum(1 for name in names if name.startswith("decoder_lstm"))
        get = model.get_layer
        return cls(
            embedding=get("word_embedding"),
            lstms=[get(f"decoder_lstm{i + 1}") for i in range(n)],
            init=[(get(f"init_h{i + 1}"), get(f"init_c{i + 1}")) for i in range(n)
                  if f"init_h{i + 1}" in names],
            inject=get("inject") if "inject" in names else None,
            attention=(get("attention_values"), get("attention"), get("attention_out"))
            if "attention" in names else None,
            dropout=0.0,
            output=get("word_logits"),
        )


def _initial_states(parts: DecoderLayers, vector):
    return [[h(vector), c(vector)] for h, c in parts.init] or None


def _decode(parts: DecoderLayers, tokens, vector, feature_map, states, *, prefix: str = ""):
    """Tokens ``(N, T)`` -> ``(logits (N, T, V), new states)`` with the shared layers."""
    x = parts.embedding(tokens)
    if parts.dropout:
        x = layers.Dropout(parts.dropout, name=f"{prefix}embedding_dropout")(x)
    if parts.inject is not None:
        v = BroadcastTime(name=f"{prefix}image_every_step")([parts.inject(vector), x])
        x = layers.Concatenate(name=f"{prefix}word_and_image")([x, v])
    new_states = []
    for i, lstm in enumerate(parts.lstms):
        x, h, c = lstm(x, initial_state=None if states is None else states[i])
        new_states.append([h, c])
        if parts.dropout:
            x = layers.Dropout(parts.dropout, name=f"{prefix}lstm{i + 1}_dropout")(x)
    if parts.attention is not None:
        values, attend, combine = parts.attention
        context = attend([x, values(feature_map)])
        x = combine(layers.Concatenate(name=f"{prefix}output_and_context")([x, context]))
        if parts.dropout:
            x = layers.Dropout(parts.dropout, name=f"{prefix}attention_dropout")(x)
    return parts.output(x), new_states


def build_captioner(vocabulary: Sequence[str], *, encoder: str = "convpool",
                    encoder_weights: str | None = None, image_size: int = 128,
                    max_length: int = 24, feature_shape: Sequence[int] = (49, MOBILENET_FEATURES),
                    feature_dim: int = 512, attention_units: int = 256,
                    attention_penalty: float = 1.0,
                    encoder_filters: Sequence[int] = (32, 64, 128, 256),
                    convs_per_block: int = 2, code_dim: int = 256,
                    backbone: str | None = None, backbone_weights: str | None = None,
                    embed_dim: int = 128, units: int = 256, decoder_layers: int = 1,
                    inject: str = "both", attention: bool = False, dropout: float = 0.3,
                    scene_classes: int = 0, name: str = "captioner") -> keras.Model:
    """CNN encoder + LSTM decoder, trained with teacher forcing.

    ``encoder="convpool"`` (the default) is the conv + pooling encoder trained from scratch
    (or a ``backbone``), with the LSTM decoder below. ``encoder="mobilenet_v2"`` is the
    ImageNet MobileNetV2 (frozen; ``encoder_weights`` a local weights file) feeding Show,
    Attend and Tell's decoder: soft (additive) attention over the ``image_size / 32`` squared
    grid of 1280-d features, projected to ``feature_dim``, the LSTM's state initialised from
    the mean feature, a deep output layer and the doubly stochastic attention penalty
    (``attention_penalty``). ``encoder="features"`` is the same decoder on precomputed feature
    maps of ``feature_shape`` (how it is trained on 2 cores); its decoder weights load into
    the ``mobilenet_v2`` model by layer name.

    Inputs: ``image`` ``(size, size, 3)`` (0..255) and ``caption`` ``(K, max_length - 1)`` token
    ids (K captions per image, starting with ``<start>``). Outputs: ``words``, logits
    ``(K, max_length - 1, len(vocabulary))`` for the next token at each step, and, when
    ``scene_classes`` > 0, ``scene``: class probabilities from the image vector (an auxiliary
    task that makes the code ``c`` tell scenes apart).

    >>> model = build_captioner(["<pad>", "<unk>", "<start>", "<end>", "a"], image_size=32,
    ...                         max_length=8, encoder_filters=(8,), units=8)  # doctest: +SKIP
    """
    if encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
    if inject not in INJECT:
        raise ValueError(f"inject must be one of {INJECT}, got {inject!r}")
    if max_length < 3 or units < 1 or embed_dim < 1 or decoder_layers < 1:
        raise ValueError("max_length >= 3, units, embed_dim and decoder_layers >= 1 are needed")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if encoder != "convpool":
        enc = build_pretrained_encoder(image_size, weights=encoder_weights) \
            if encoder == "mobilenet_v2" else build_feature_input(feature_shape)
        return _build_attention_captioner(
            vocabulary, enc, max_length=max_length, embed_dim=embed_dim, units=units,
            feature_dim=feature_dim, attention_units=attention_units,
            penalty=attention_penalty, dropout=dropout, name=name)
    encoder = build_encoder(image_size, filters=encoder_filters, convs_per_block=convs_per_block,
                            code_dim=code_dim, backbone=backbone,
                            backbone_weights=backbone_weights)
    parts = DecoderLayers(
        embedding=CaptionEmbedding(list(vocabulary), embed_dim, name="word_embedding"),
        lstms=[layers.LSTM(units, return_sequences=True, return_state=True,
                           name=f"decoder_lstm{i + 1}") for i in range(decoder_layers)],
        init=[(layers.Dense(units, activation="tanh", name=f"init_h{i + 1}"),
               layers.Dense(units, name=f"init_c{i + 1}")) for i in range(decoder_layers)]
        if inject in ("init", "both") else [],
        inject=layers.Dense(embed_dim, activation="relu", name="inject")
        if inject in ("every", "both") else None,
        attention=(layers.Dense(units, name="attention_values"),
                   layers.Attention(use_scale=True, name="attention"),
                   layers.Dense(units, activation="tanh", name="attention_out"))
        if attention else None,
        dropout=dropout,
        output=layers.Dense(len(vocabulary), name="word_logits"),
    )
    image = keras.Input((image_size, image_size, 3), name="image")
    caption = keras.Input((None, max_length - 1), dtype="int32", name="caption")
    feature_map, vector = encoder(image)
    tokens = FoldCaptions(name="fold_captions")(caption)
    v = RepeatPerCaption(name="vector_per_caption")([vector, caption])
    fm = RepeatPerCaption(name="features_per_caption")([feature_map, caption]) if attention \
        else None
    logits, _ = _decode(parts, tokens, v, fm, _initial_states(parts, v))
    outputs = {"words": UnfoldCaptions(name="words")([logits, caption])}
    if scene_classes:
        outputs["scene"] = layers.Dense(scene_classes, activation="softmax", name="scene")(vector)
    return keras.Model({"image": image, "caption": caption}, outputs, name=name)


@dataclass
class DecoderParts:
    """One-step models for decoding, sharing the captioner's weights.

    ``encoder``: image -> ``[feature_map, vector]``; ``init``: vector -> initial states;
    ``step``: ``[token (N, 1), vector, feature_map, *states]`` -> ``[logits (N, V), *states]``.
    """

    encoder: keras.Model
    init: keras.Model
    step: keras.Model
    vocabulary: list[str]
    max_length: int
    attention: bool
    returns_attention: bool = False  # step's last output is alpha (N, regions)


def decoder_parts(captioner: keras.Model) -> DecoderParts:
    """The one-step decoding models of a captioner made by :func:`build_captioner`."""
    if "soft_attention" in {layer.name for layer in captioner.layers}:
        return _attention_decoder_parts(captioner)
    parts = DecoderLayers.from_model(captioner)
    encoder = captioner.get_layer("encoder")
    fmap_shape, vec_shape = (tuple(t.shape[1:]) for t in encoder.outputs)
    units = [lstm.units for lstm in parts.lstms]

    vector = keras.Input(vec_shape, name="vector")
    init_states = _initial_states(parts, vector)
    if init_states is None:  # image only fed at every step: start from zero states
        init_states = [[_Zeros(u, name=f"zero_h{i + 1}")(vector),
                        _Zeros(u, name=f"zero_c{i + 1}")(vector)] for i, u in enumerate(units)]
    init = keras.Model(vector, [s for pair in init_states for s in pair], name="decoder_init")

    token = keras.Input((1,), dtype="int32", name="token")
    step_vector = keras.Input(vec_shape, name="step_vector")
    feature_map = keras.Input(fmap_shape, name="feature_map")
    states = [[keras.Input((u,), name=f"h{i + 1}"), keras.Input((u,), name=f"c{i + 1}")]
              for i, u in enumerate(units)]
    logits, new_states = _decode(parts, token, step_vector, feature_map, states, prefix="step_")
    step = keras.Model([token, step_vector, feature_map, *[s for p in states for s in p]],
                       [FirstStep(name="next_word")(logits), *[s for p in new_states for s in p]],
                       name="decoder_step")
    caption_shape = captioner.input["caption"].shape
    return DecoderParts(encoder, init, step, list(parts.embedding.vocabulary),
                        int(caption_shape[-1]) + 1, parts.attention is not None)


class _Zeros(layers.Layer):
    """``(N, D)`` -> zeros ``(N, units)`` (initial states when the image is fed every step)."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def call(self, x):
        return keras.ops.zeros((keras.ops.shape(x)[0], self.units), dtype=x.dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)


def _attention_decoder_parts(captioner: keras.Model) -> DecoderParts:
    """Show, Attend and Tell's one-step models; ``encoder`` gives the projected feature map
    (projected once per image, not once per word) and ``step`` also returns ``alpha``."""
    parts = AttentionDecoderLayers.from_model(captioner)
    encoder = captioner.get_layer("encoder")
    fmap, vec = encoder.outputs
    encode = keras.Model(encoder.inputs, [parts.project(fmap), vec], name="encode")
    vector = keras.Input(tuple(vec.shape[1:]), name="vector")
    init = keras.Model(vector, [parts.init_h(vector), parts.init_c(vector)], name="decoder_init")
    units = parts.recurrence.units
    token = keras.Input((1,), dtype="int32", name="token")
    step_vector = keras.Input(tuple(vec.shape[1:]), name="step_vector")
    feature_map = keras.Input((fmap.shape[1], parts.project.units), name="feature_map")
    states = [keras.Input((units,), name="h1"), keras.Input((units,), name="c1")]
    logits, alpha, new_states = parts.decode(token, feature_map, states, prefix="step_")
    step = keras.Model([token, step_vector, feature_map, *states],
                       [FirstStep(name="next_word")(logits), *new_states,
                        FirstStep(name="step_attention")(alpha)], name="decoder_step")
    caption_shape = captioner.input["caption"].shape
    return DecoderParts(encode, init, step, list(parts.embedding.vocabulary),
                        int(caption_shape[-1]) + 1, True, returns_attention=True)
