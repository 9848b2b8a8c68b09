"""The ImageNet MobileNetV2 weights in ``pretrained/`` load and are fed correctly: on real Flickr8k
photos, Keras with these weights (and the TFLite file's own 1001-class head) reproduces the
quantized TFLite classifier they were converted from, and the project's encoder builder gives the
same pooled features as ``keras.applications`` with ``mobilenet_v2.preprocess_input``."""

from __future__ import annotations

import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import real_dataset
from ecgcap.captioning.images import load_image
from ecgcap.captioning.models import build_pretrained_encoder

WEIGHTS = "mobilenet_v2_1.0_224_imagenet_no_top.weights.h5"
TFLITE = "mobilenet_v2_1.0_224_quant.tflite"
N_PHOTOS = 8  # the first 8 Flickr8k photos by name: a fixed, deterministic set


def _interpreter(path: Path):
    try:
        import tensorflow as tf

        make = tf.lite.Interpreter
    except (ImportError, AttributeError):
        try:
            from ai_edge_litert.interpreter import Interpreter as make
        except ImportError:
            pytest.skip("no TFLite interpreter: neither tf.lite nor ai_edge_litert is importable")
    # All tensors kept, so the logits (before the softmax, whose uint8 output ties) can be read.
    with warnings.catch_warnings():  # tf.lite's deprecation notice and the debugging-option note
        warnings.filterwarnings("ignore", "(?s).*(deprecated|experimental_preserve_all_tensors)",
                                UserWarning)
        interpreter = make(model_path=str(path), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    return interpreter


def _dequantized(interpreter, detail) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    return (interpreter.get_tensor(detail["index"]).astype(np.float32) - zero_point) * scale


def _one(details, shape, dtype=None, name=""):
    found = [d for d in details if list(d["shape"]) == shape and name in d["name"]
             and (dtype is None or d["dtype"] == dtype)]
    assert len(found) == 1, (shape, name, [d["name"] for d in found])
    return found[0]


@pytest.fixture(scope="module")
def compared(flickr8k_dir):
    """Both models on the same photos: Keras and TFLite logits and pooled features."""
    pretrained = real_dataset("pretrained")
    paths = sorted((flickr8k_dir / "images").glob("*.jpg"))[:N_PHOTOS]
    assert len(paths) == N_PHOTOS
    images = np.stack([load_image(p, 224) for p in paths])  # uint8 RGB

    interpreter = _interpreter(pretrained / TFLITE)
    details = interpreter.get_tensor_details()
    weight = _dequantized(interpreter, _one(details, [1001, 1, 1, 1280])).reshape(1001, 1280)
    bias = _dequantized(interpreter, _one(details, [1001], np.int32))
    pooled_detail = _one(details, [1, 1, 1, 1280])
    logits_detail = _one(details, [1, 1001], name="Logits")
    (inp,) = interpreter.get_input_details()
    assert inp["dtype"] == np.uint8 and inp["quantization"] == (1 / 128, 128)  # (x - 128) / 128
    tfl_logits, tfl_pooled = [], []
    for image in images:
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        tfl_logits.append(_dequantized(interpreter, logits_detail)[0])
        tfl_pooled.append(_dequantized(interpreter, pooled_detail).reshape(1280))
    logit_step = logits_detail["quantization"][0]

    net = keras.applications.MobileNetV2(alpha=1.0, include_top=False, weights=None,
                                         input_shape=(224, 224, 3))
    net.load_weights(pretrained / WEIGHTS)
    scaled = keras.applications.mobilenet_v2.preprocess_input(images.astype("float32"))
    feature_map = keras.ops.convert_to_numpy(net(scaled, training=False))
    assert feature_map.shape == (N_PHOTOS, 7, 7, 1280)
    pooled = feature_map.mean(axis=(1, 2))
    labels = (pretrained / "imagenet_labels.txt").read_text(encoding="utf-8").splitlines()
    return dict(paths=paths, images=images, pooled=pooled, logits=pooled @ weight.T + bias,
                tfl_logits=np.array(tfl_logits), tfl_pooled=np.array(tfl_pooled),
                logit_step=logit_step, labels=labels, pretrained=pretrained)


def test_keras_top1_matches_tflite(compared):
    keras_top1 = compared["logits"].argmax(axis=1)
    tfl = compared["tfl_logits"]
    # TFLite's top 5 by logit, ties at the 5th place included (its logits are uint8 steps).
    fifth = np.sort(tfl, axis=1)[:, -5]
    picked = tfl[np.arange(N_PHOTOS), keras_top1]
    assert (picked >= fifth).all(), "a Keras top-1 class is outside TFLite's top 5"
    agree = int((picked == tfl.max(axis=1)).sum())
    assert agree >= 6, f"Keras top-1 is TFLite's top-1 on only {agree} of {N_PHOTOS} photos"
    # Where they differ, TFLite itself nearly ties: measured 2 steps (README: at most 7 of 1,081).
    assert (tfl.max(axis=1) - picked).max() <= 4 * compared["logit_step"]


def test_labels_line_up(compared):
    labels = compared["labels"]
    assert len(labels) == 1001 and labels[0] == "background"
    names = [p.name for p in compared["paths"]]
    top1 = {n: labels[i] for n, i in zip(names, compared["logits"].argmax(axis=1), strict=True)}
    assert top1["1002674143_1b742ab4b8.jpg"] == "parachute, chute"  # a clear (p ~0.8) call
    assert top1["1003163366_44323f5815.jpg"] == "park bench"


def test_pooled_features_agree(compared):
    a, b = compared["pooled"], compared["tfl_pooled"]
    cosine = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.99 and cosine.mean() > 0.995, cosine  # measured 0.997 lowest


def test_project_encoder_scales_its_input_like_preprocess_input(compared):
    encoder = build_pretrained_encoder(224, weights=str(compared["pretrained"] / WEIGHTS))
    feature_map, mean = encoder(compared["images"].astype("float32"))  # raw 0..255 pixels
    assert tuple(feature_map.shape) == (N_PHOTOS, 49, 1280)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(mean), compared["pooled"], atol=1e-4)
