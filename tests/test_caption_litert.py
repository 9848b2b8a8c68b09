"""Captioners exported to LiteRT: the export round trip, the shipped exports, and ``caption``
run by the LiteRT interpreter (same captions as Keras, no TensorFlow import)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import real_dataset, run_watching_imports

VOCAB = ["<pad>", "<unk>", "<start>", "<end>", "a", "dog", "runs", "on", "grass"]
SMALL = {"image_size": 64, "max_length": 8, "units": 12, "embed_dim": 6, "feature_dim": 10,
         "attention_units": 7}
INFO = {"kind": "caption", "dataset": "flickr8k", "image_size": 64, "max_length": 8,
        "length_penalty": 0.5}  # not the default 1.0: every export must carry it


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A small Show-Attend-Tell captioner on MobileNetV2 (64 px: a 2 x 2 grid)."""
    from ecgcap.captioning.models import build_captioner
    from ecgcap.runtime.modelfile import save_model

    weights = real_dataset("pretrained") / "mobilenet_v2_1.0_224_imagenet_no_top.weights.h5"
    model = build_captioner(VOCAB, encoder="mobilenet_v2", encoder_weights=str(weights),
                            **SMALL)
    path = tmp_path_factory.mktemp("tiny") / "tiny.keras"
    save_model(model, path, INFO)
    return path


def test_export_round_trip_matches_keras_step_by_step(tiny):
    from ecgcap.captioning.inference import load_captioner
    from ecgcap.captioning.litert import (
        export_captioner,
        is_current,
        litert_folder,
        load_captioner_litert,
        read_contract,
    )
    from ecgcap.captioning.models import decoder_parts

    folder = export_captioner(tiny)
    assert folder == litert_folder(tiny) and folder.name == "tiny.litert"
    assert is_current(folder, tiny)
    contract = read_contract(folder)
    assert contract["vocabulary"] == VOCAB and contract["image_size"] == 64
    assert contract["max_length"] == 8 and contract["length_penalty"] == 0.5
    assert [x[0] for x in contract["functions"]["step"]["inputs"]][:1] == ["token"]
    assert sorted(p.name for p in folder.iterdir()) == ["contract.json", "encode.tflite",
                                                        "init.tflite", "step.tflite"]

    lite = load_captioner_litert(folder)
    keras_parts = decoder_parts(load_captioner(tiny)[0])
    images = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3)).astype(np.float32)
    for batch in (images[:1], images):  # the batch size varies from call to call
        fmap, vec = lite.encoder.predict_on_batch(batch)
        kfmap, kvec = (np.asarray(t) for t in keras_parts.encoder.predict_on_batch(batch))
        np.testing.assert_allclose(fmap, kfmap, atol=1e-4)
        np.testing.assert_allclose(vec, kvec, atol=1e-4)
        states = lite.init.predict_on_batch(vec)
        tokens = np.full((len(batch), 1), 2, np.int32)
        out = lite.step.predict_on_batch([tokens, vec, fmap, *states])
        kout = keras_parts.step.predict_on_batch([tokens, kvec, kfmap, *states])
        assert len(out) == len(kout)
        for a, b in zip(out, kout, strict=True):
            np.testing.assert_allclose(a, np.asarray(b), atol=1e-4)

    # a changed .keras file makes the export stale; a broken export is refused in one line
    tiny_copy = tiny.with_name("other.keras")
    tiny_copy.write_bytes(tiny.read_bytes() + b"\0")
    assert not is_current(folder, tiny_copy)


def test_a_decoder_that_does_not_convert_is_refused_in_one_line(tmp_path):
    from ecgcap.captioning.litert import export_captioner
    from ecgcap.captioning.models import build_captioner
    from ecgcap.runtime.errors import EcgcapError
    from ecgcap.runtime.modelfile import save_model

    # the chapter's convpool captioner steps a Keras LSTM layer, whose loop over time LiteRT's
    # builtin ops cannot express with a batch of any size
    model = build_captioner(VOCAB, image_size=32, max_length=8, units=8, embed_dim=4,
                            encoder_filters=(4, 8), convs_per_block=1, code_dim=8)
    path = save_model(model, tmp_path / "classic.keras", {**INFO, "image_size": 32})
    with pytest.raises(EcgcapError, match="classic.keras: its decoder_step function does not "
                                          "convert to LiteRT builtin ops"):
        export_captioner(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classic.keras"]


def test_stale_or_broken_export_is_never_used(tiny, tmp_path):
    from ecgcap.captioning.inference import load_caption_decoder
    from ecgcap.captioning.litert import export_captioner
    from ecgcap.runtime.errors import EcgcapError

    model = tmp_path / "m.keras"
    model.write_bytes(tiny.read_bytes())
    folder = export_captioner(model)
    assert load_caption_decoder(model)[1]["runtime"] == "litert"
    assert load_caption_decoder(model, runtime="keras")[1]["runtime"] == "keras"
    contract = json.loads((folder / "contract.json").read_text())
    contract["source_sha256"] = "0" * 64  # made from another file
    (folder / "contract.json").write_text(json.dumps(contract))
    assert load_caption_decoder(model)[1]["runtime"] == "keras"
    with pytest.raises(EcgcapError, match="no current LiteRT export"):
        load_caption_decoder(model, runtime="litert")
    (folder / "step.tflite").write_bytes(b"not a flatbuffer")
    with pytest.raises(EcgcapError, match="step.tflite: not a loadable LiteRT model"):
        load_caption_decoder(folder)
    # a current contract beside a broken function: auto still captions, with Keras, and says why
    export_captioner(model)  # current again
    (folder / "step.tflite").write_bytes(b"not a flatbuffer")
    _, info = load_caption_decoder(model)
    assert info["runtime"] == "keras"
    assert "step.tflite: not a loadable LiteRT model" in info["litert_skipped"]
    with pytest.raises(EcgcapError, match="step.tflite: not a loadable LiteRT model"):
        load_caption_decoder(model, runtime="litert")


def test_export_never_replaces_a_folder_that_is_not_an_export(tiny, tmp_path):
    from ecgcap.captioning.litert import export_captioner
    from ecgcap.runtime.errors import EcgcapError

    model = tmp_path / "m.keras"
    model.write_bytes(tiny.read_bytes())
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    with pytest.raises(EcgcapError,
                       match="precious: a folder that is not an ecgcap captioner export"):
        export_captioner(model, precious)
    assert (precious / "thesis.txt").read_text() == "years of work"
    with pytest.raises(EcgcapError, match=f"{tmp_path}: holds m.keras itself"):
        export_captioner(model, tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(EcgcapError, match="file: exists and is not a folder"):
        export_captioner(model, tmp_path / "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "m.keras", "precious"]
    out = export_captioner(model, tmp_path / "out")  # a new folder, then replaced by a new export
    assert export_captioner(model, out) == out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "m.keras", "out", "precious"]
    assert sorted(p.name for p in out.iterdir())[0] == "contract.json"


@pytest.mark.parametrize("name", ["photo", "rsicd"])
def test_shipped_exports_are_current(name):
    from ecgcap.captioning.inference import SHIPPED_MODELS
    from ecgcap.captioning.litert import is_current, litert_folder

    folder = litert_folder(SHIPPED_MODELS[name])
    assert is_current(folder, SHIPPED_MODELS[name]), \
        f"re-export: python -m ecgcap.export {name}"
    for f in folder.glob("*.tflite"):
        assert f.stat().st_size <= 32_000_000


def test_shipped_photo_model_same_captions_on_litert_and_keras(flickr8k_dir):
    from ecgcap.captioning.datasets import load_captions
    from ecgcap.captioning.images import load_images
    from ecgcap.captioning.inference import load_caption_decoder

    val = load_captions("flickr8k", "val", data_dir=str(flickr8k_dir), report=lambda _: None)
    lite, info = load_caption_decoder("photo")
    images = load_images(val.paths()[:8], lite.image_size)
    assert info["runtime"] == "litert"
    keras_decoder, keras_info = load_caption_decoder("photo", runtime="keras")
    # the length penalty chosen on dev travels in the .keras file's info and the contract
    assert lite.length_penalty == keras_decoder.length_penalty == keras_info["length_penalty"]
    for beam in (1, 3):
        assert lite.caption(images, beam=beam) == keras_decoder.caption(images, beam=beam)
    words = lite.decode(images[:1], beam=3)[0]
    alphas = lite.attention(images[:1], [words])[0]
    np.testing.assert_allclose(alphas.sum(-1), 1.0, atol=1e-4)


def test_caption_one_photo_without_tensorflow(flickr8k_dir, tmp_path):
    photo = next(p for p in sorted((flickr8k_dir / "images").iterdir()) if p.suffix == ".jpg")
    result = run_watching_imports("ecgcap.caption", str(photo))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    line, marker = result.stdout.strip().splitlines()
    assert line.startswith(f"{photo}\t") and len(line.split("\t")[1].split()) >= 3
    assert marker == "no tensorflow"

    out = tmp_path / "where.png"
    result = run_watching_imports("ecgcap.caption", str(photo), "--attention", str(out))
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.strip().endswith("no tensorflow") and out.stat().st_size > 10_000

    missing = run_watching_imports("ecgcap.caption", str(tmp_path / "nope.jpg"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"python -m ecgcap.caption: error: {tmp_path / 'nope.jpg'}: no such image file"]
    assert missing.stdout.strip() == "no tensorflow"


def _two_photos(flickr8k_dir: Path, size: int) -> np.ndarray:
    from ecgcap.captioning.images import load_images

    photos = sorted(p for p in (flickr8k_dir / "images").iterdir() if p.suffix == ".jpg")[:2]
    return load_images(photos, size, use_cache=False)


def _same_steps_and_captions(parts, tiny: Path, images: np.ndarray) -> None:
    """encode, init and three greedy steps of ``images`` as Keras gives them (1e-4), and the
    same greedy captions."""
    from ecgcap.captioning.decoding import CaptionDecoder
    from ecgcap.captioning.inference import load_captioner
    from ecgcap.captioning.models import decoder_parts

    keras_parts = decoder_parts(load_captioner(tiny)[0])
    fmap, vec = parts.encoder.predict_on_batch(images)
    kfmap, kvec = (np.asarray(t) for t in keras_parts.encoder.predict_on_batch(images))
    np.testing.assert_allclose(fmap, kfmap, atol=1e-4)
    np.testing.assert_allclose(vec, kvec, atol=1e-4)
    states = parts.init.predict_on_batch(vec)
    for a, b in zip(states, keras_parts.init.predict_on_batch(vec), strict=True):
        np.testing.assert_allclose(a, np.asarray(b), atol=1e-4)
    tokens = np.full((len(images), 1), 2, np.int32)
    for _ in range(3):
        out = parts.step.predict_on_batch([tokens, vec, fmap, *states])
        kout = keras_parts.step.predict_on_batch([tokens, vec, fmap, *states])
        assert len(out) == len(kout) == 1 + len(states) + 1  # logits, states, alpha
        for a, b in zip(out, kout, strict=True):
            np.testing.assert_allclose(a, np.asarray(b), atol=1e-4)
        states = out[1:1 + len(states)]
        tokens = out[0].argmax(-1).astype(np.int32)[:, None]
    assert (CaptionDecoder(parts).caption(images, beam=1)
            == CaptionDecoder(keras_parts).caption(images, beam=1))
    assert parts.info == {"dataset": "flickr8k", "describes": None, "length_penalty": 0.5}


def test_saved_model_export_answers_as_keras_on_real_photos(tiny, flickr8k_dir, tmp_path):
    """One SavedModel, signatures encode / init / step, loaded with tf.saved_model.load."""
    import tensorflow as tf

    from ecgcap.captioning.savedmodel import (
        export_captioner_saved_model,
        load_captioner_saved_model,
    )

    folder = export_captioner_saved_model(tiny, tmp_path / "tiny.saved_model")
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.saved_model"]
    contract = json.loads((folder / "contract.json").read_text())
    assert contract["format"] == "ecgcap captioner, TensorFlow SavedModel"
    assert contract["checked_max_abs_difference"] < 1e-4 and contract["vocabulary"] == VOCAB
    assert [o[1] for o in contract["functions"]["step"]["outputs"]] == ["logits", "h1", "c1",
                                                                         "alpha"]
    assert {"encode", "init", "step", "serving_default"} <= set(
        tf.saved_model.load(str(folder)).signatures)
    _same_steps_and_captions(load_captioner_saved_model(folder), tiny,
                             _two_photos(flickr8k_dir, 64))


def test_onnx_export_answers_as_keras_on_real_photos(tiny, flickr8k_dir, tmp_path):
    """Three ONNX graphs run by onnxruntime; a changed graph is refused in one line."""
    from ecgcap.captioning.onnx import export_captioner_onnx, load_captioner_onnx
    from ecgcap.runtime.errors import EcgcapError

    folder = export_captioner_onnx(tiny, tmp_path / "tiny.onnx")
    assert sorted(p.name for p in folder.iterdir()) == ["contract.json", "encode.onnx",
                                                        "init.onnx", "step.onnx"]
    contract = json.loads((folder / "contract.json").read_text())
    assert contract["format"] == "ecgcap captioner, ONNX"
    assert contract["checked_max_abs_difference"] < 1e-4
    _same_steps_and_captions(load_captioner_onnx(folder), tiny, _two_photos(flickr8k_dir, 64))
    step = folder / "step.onnx"
    step.write_bytes(step.read_bytes()[:1000])
    with pytest.raises(EcgcapError, match="corrupt or changed"):
        load_captioner_onnx(folder)
