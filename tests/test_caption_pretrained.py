"""The pretrained captioner: Show-Attend-Tell attention, the feature cache, stage-1 training on
real Flickr8k photos, ``caption --attention``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import real_dataset, run_module

VOCAB = ["<pad>", "<unk>", "<start>", "<end>", "a", "dog", "runs", "on", "grass"]
SMALL = {"max_length": 8, "units": 12, "embed_dim": 6, "feature_dim": 10, "attention_units": 7}


@pytest.fixture(scope="module")
def weights() -> Path:
    path = real_dataset("pretrained") / "mobilenet_v2_1.0_224_imagenet_no_top.weights.h5"
    assert path.is_file()
    return path


@pytest.fixture(scope="module")
def photos(flickr8k_dir) -> list[Path]:
    return sorted((flickr8k_dir / "images").iterdir())[:3]


def _mobilenet(model):
    encoder = model.get_layer("encoder") if "encoder" in {x.name for x in model.layers} \
        else model
    return next(x for x in encoder.layers if x.name.startswith("mobilenetv2"))


def _features_model(shape=(9, 5), **kw):
    from ecgcap.captioning.models import build_captioner

    return build_captioner(VOCAB, encoder="features", feature_shape=shape, **{**SMALL, **kw})


def test_doubly_stochastic_penalty_by_hand():
    """The penalty added in training is sum over regions of (1 - attention summed over the
    caption's real steps)^2, summed over captions, over the number of real words."""
    import keras

    from ecgcap.captioning.layers import SoftAttentionLSTM

    rng = np.random.default_rng(0)
    layer = SoftAttentionLSTM(4, 3, penalty=0.5)
    words = rng.normal(size=(2, 5, 3)).astype("float32")
    feats = rng.normal(size=(2, 4, 6)).astype("float32")
    h = c = np.zeros((2, 4), "float32")
    # inputs: <start> words... <end> <pad>; the step fed <end> predicts padding: not counted
    tokens = np.array([[2, 5, 6, 3, 0], [2, 4, 5, 6, 7]], dtype="int32")
    _, _, alpha, _, _ = layer([words, feats, h, c, tokens], training=True)
    alpha = keras.ops.convert_to_numpy(alpha)
    np.testing.assert_allclose(alpha.sum(-1), 1.0, rtol=1e-5)  # a distribution per step
    real = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=bool)[..., None]
    expected = 0.5 * ((1 - (alpha * real).sum(1)) ** 2).sum() / real.sum()
    assert len(layer.losses) == 1
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(layer.losses[0])), expected,
                               rtol=1e-5)
    layer([words, feats, h, c, tokens], training=False)
    assert not layer.losses  # no penalty outside training


def test_compiled_greedy_and_beam_agree_with_predict_and_batches():
    from ecgcap.captioning.decoding import CaptionDecoder, greedy_with_predict

    model = _features_model(dropout=0.0)
    feats = np.random.default_rng(1).normal(size=(5, 9, 5)).astype("float32")
    decoder = CaptionDecoder(model)
    assert decoder.caption(feats) == greedy_with_predict(model, feats, VOCAB)
    assert decoder.caption(feats, beam=1) == decoder.caption(feats)
    one_by_one = [CaptionDecoder(model, batch_size=3).caption(f[None], beam=3)[0] for f in feats]
    assert decoder.caption(feats, beam=3) == one_by_one
    ids = decoder.decode(feats[:2])
    alphas = decoder.attention(feats[:2], [[*c, 3] for c in ids])
    assert [a.shape for a in alphas] == [(len(c) + 1, 9) for c in ids]
    # row t is where the model looked to emit word t: the teacher-forced layer, fed <start>
    # and the caption, gives the same weights
    import keras

    alpha_of = keras.Model(model.inputs, model.get_layer("soft_attention").output[2])
    for f, c, a in zip(feats[:2], ids, alphas, strict=True):
        caption = np.zeros((1, 1, 7), dtype="int32")
        fed = [2, *c][:7]
        caption[0, 0, :len(fed)] = fed
        forced = alpha_of.predict({"image": f[None], "caption": caption}, verbose=0)[0]
        n = min(len(a), 7)  # a caption of the maximum length has no step that emits <end>
        np.testing.assert_allclose(a[:n], forced[:n], atol=1e-5)


def test_save_load_round_trip_in_safe_mode(tmp_path):
    import keras

    from ecgcap.captioning.decoding import CaptionDecoder

    model = _features_model()
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    feats = np.random.default_rng(2).normal(size=(3, 9, 5)).astype("float32")
    assert CaptionDecoder(again).caption(feats, beam=2) == CaptionDecoder(model).caption(
        feats, beam=2)


def test_feature_cache_is_keyed_and_never_trusts_a_bad_file(photos, weights, tmp_path,
                                                            monkeypatch):
    import ecgcap.captioning.models as models
    from ecgcap.captioning.features import FeatureCache, compute_features

    root = tmp_path / "features"
    images = [tmp_path / p.name for p in photos]
    for src, dst in zip(photos, images, strict=True):
        dst.write_bytes(src.read_bytes())
    first = compute_features(images, weights, root=root, quiet=True)
    assert first.shape == (3, 2, 49, 1280) and first.dtype == np.float16
    assert not np.allclose(first[:, 0], first[:, 1])  # the mirror image differs
    cache = FeatureCache("mobilenet_v2", 224, weights, root)
    assert all(cache.path(p).is_file() for p in images)

    def no_encoder(*args, **kwargs):
        raise AssertionError("the encoder ran although every image was cached")

    monkeypatch.setattr(models, "build_pretrained_encoder", no_encoder)
    np.testing.assert_array_equal(compute_features(images, weights, root=root, quiet=True),
                                  first)
    monkeypatch.undo()
    # a corrupt cache file is computed again, and replaced
    cache.path(images[0]).write_bytes(b"not an array")
    np.testing.assert_array_equal(compute_features(images, weights, root=root, quiet=True),
                                  first)
    assert cache.load(images[0], None) is not None
    # a changed image is another key: the old file stays, the new one is computed
    old = cache.path(images[1])
    images[1].write_bytes(photos[2].read_bytes())
    os.utime(images[1], ns=(1, 1))
    assert cache.path(images[1]) != old
    again = compute_features(images, weights, root=root, quiet=True)
    np.testing.assert_array_equal(again[1], first[2])
    # another input size is another folder
    small = compute_features(images[:1], weights, image_size=96, root=root, quiet=True)
    assert small.shape == (1, 2, 9, 1280)
    assert FeatureCache("mobilenet_v2", 96, weights, root).folder != cache.folder


def test_decoder_weights_move_into_the_image_model(photos, weights, tmp_path):
    """The full model (MobileNetV2 + decoder) scores captions as the features model does."""
    from ecgcap.captioning.config import CaptionTrainConfig
    from ecgcap.captioning.feature_training import full_model
    from ecgcap.captioning.features import compute_features
    from ecgcap.captioning.images import load_images

    config = CaptionTrainConfig(encoder="mobilenet_v2", image_size=224, dropout=0.0, **SMALL)
    feats = compute_features(photos, weights, root=tmp_path, quiet=True)[:, 0]
    model = _features_model(shape=feats.shape[1:], dropout=0.0)
    full = full_model(model, config, weights)
    caps = np.random.default_rng(3).integers(2, len(VOCAB), (3, 2, 7)).astype("int32")
    a = model.predict({"image": feats.astype("float32"), "caption": caps}, verbose=0)["words"]
    b = full.predict({"image": load_images(photos, 224, use_cache=False).astype("float32"),
                      "caption": caps}, verbose=0)["words"]
    np.testing.assert_allclose(a, b, atol=0.02)


def _check_checkpoint_average(run: Path, files: list[Path], out: Path) -> None:
    """``benchmarks/caption_average.py``: the decoder is the mean of the checkpoints', the
    encoder the run's; a missing checkpoint is one line and no file."""
    import subprocess
    import sys

    import keras

    import ecgcap.captioning.models  # noqa: F401 - registers the captioner's layers

    script = str(Path(__file__).parents[1] / "benchmarks" / "caption_average.py")
    done = subprocess.run([sys.executable, script, str(run), "--out", str(out), "--checkpoints",
                           *map(str, files)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    averaged = keras.saving.load_model(out)
    first, second = (keras.saving.load_model(f) for f in files)
    layer = "word_logits"
    for a, b, mean in zip(first.get_layer(layer).get_weights(),
                          second.get_layer(layer).get_weights(),
                          averaged.get_layer(layer).get_weights(), strict=True):
        np.testing.assert_allclose(mean, (a + b) / 2, rtol=1e-6, atol=1e-7)
    assert not np.allclose(first.get_layer(layer).get_weights()[0],
                           second.get_layer(layer).get_weights()[0])
    full = keras.saving.load_model(run / "model.keras")
    for a, b in zip(full.get_layer("encoder").get_weights(),
                    averaged.get_layer("encoder").get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    bad = subprocess.run([sys.executable, script, str(run), "--out", str(out) + ".2",
                          "--checkpoints", str(files[0]), str(run / "nothing.keras")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "nothing.keras: no such file" in bad.stderr
    assert not Path(str(out) + ".2").exists()


@pytest.mark.slow
def test_train_resume_caption_and_attention_on_real_photos(flickr8k_dir, weights, tmp_path):
    """A tiny stage-1 run on 16 real Flickr8k photos (a Karpathy file naming them in place),
    resumed, then ``caption --attention`` with its model. The ImageNet weights are found
    under ``--data-dir`` (``$ECGCAP_DATA`` names a folder without them)."""
    from PIL import Image

    from ecgcap.captioning.datasets import read_flickr8k

    train = read_flickr8k(flickr8k_dir, "train", report=lambda line: None)
    entries = [{"filename": f, "split": "train" if i < 12 else "val",
                "sentences": [{"raw": c} for c in caps]}
               for i, (f, caps) in enumerate(zip(train.images[:16], train.captions[:16],
                                                 strict=True))]
    data = tmp_path / "dataset_photos.json"
    data.write_text(json.dumps({"images": entries}))
    runs = tmp_path / "runs"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pretrained").symlink_to(weights.parent.resolve(),
                                                  target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    env = {"ECGCAP_DATA": str(tmp_path / "elsewhere")}
    common = ["--dataset", str(data), "--image-dir", str(flickr8k_dir / "images"),
              "--data-dir", str(tmp_path / "data"), "--encoder", "mobilenet_v2", "--units", "16",
              "--embed-dim", "8", "--feature-dim", "8", "--attention-units", "8",
              "--min-count", "2", "--max-length", "12", "--batch-size", "4", "--val-holdout",
              "0", "--runs-dir", str(runs), "--name", "tiny", "-q"]
    first = run_module("ecgcap.train_caption", *common, "--epochs", "1", env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    report = json.loads((runs / "tiny" / "report.json").read_text())
    shutil.copy(runs / "tiny" / "checkpoint.keras", tmp_path / "epoch1.keras")
    assert report["images"] == {"train": 12, "val": 4}
    assert report["captions"]["train"] == sum(len(e["sentences"]) for e in entries[:12])
    assert report["stage1_val"]["same_caption_as_feature_model"] >= 4 * 0.9
    again = run_module("ecgcap.train_caption", *common, "--epochs", "2", "--resume", env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    resumed = json.loads((runs / "tiny" / "report.json").read_text())
    assert resumed["epochs_run"] == 2
    assert resumed["history"]["loss"][:1] == report["history"]["loss"]
    _check_checkpoint_average(runs / "tiny", [tmp_path / "epoch1.keras",
                                              runs / "tiny" / "checkpoint.keras"],
                              tmp_path / "averaged.keras")

    tuned = run_module("ecgcap.train_caption", *common, "--epochs", "2", "--resume",
                       "--fine-tune-blocks", "1", "--fine-tune-epochs", "1", env=env)
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    fine = json.loads((runs / "tiny" / "report.json").read_text())
    assert fine["epochs_run"] == 2 and fine["fine_tune"]["epochs_run"] == 1
    assert fine["fine_tune"]["unfrozen_layers"][0].startswith("block_16_")
    assert set(fine["fine_tune"]["unfrozen_layers"]) >= {"Conv_1", "block_16_project"}
    assert not any(n.endswith("BN") or n.endswith("_bn") for n in
                   fine["fine_tune"]["unfrozen_layers"])
    # batch norm kept its ImageNet statistics through stage 2 (frozen, inference mode)
    import keras

    from ecgcap.captioning.models import build_pretrained_encoder

    tuned_bn = _mobilenet(keras.saving.load_model(runs / "tiny" / "fine_tune" /
                                                  "checkpoint.keras")).get_layer("Conv_1_bn")
    fresh_bn = _mobilenet(build_pretrained_encoder(224, weights=str(weights))).get_layer(
        "Conv_1_bn")
    for a, b in zip(tuned_bn.get_weights(), fresh_bn.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    model = runs / "tiny" / "model.keras"
    photo = flickr8k_dir / "images" / entries[0]["filename"]
    png = tmp_path / "attention.png"
    out = run_module("ecgcap.caption", str(photo), "--model", str(model), "--attention",
                     str(png), "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    caption = json.loads(out.stdout)[0]["caption"]
    panels = len(caption.split()) + 2  # the image, each word, <end>
    with Image.open(png) as img:
        assert img.format == "PNG"
        assert img.size == (5 * 2.4 * 80, -(-panels // 5) * 2.5 * 80)
    bad = run_module("ecgcap.caption", str(photo), str(photo), "--model", str(model),
                     "--attention", str(tmp_path / "two.png"))
    assert bad.returncode == 2 and not (tmp_path / "two.png").exists()
    assert bad.stderr.strip().splitlines()[-1].endswith(
        "draws one image as a .png: give one image and an OUT.png")
    folder = run_module("ecgcap.caption", str(flickr8k_dir / "images"), "--model", str(model),
                        "--attention", str(tmp_path / "folder.png"))
    assert folder.returncode == 2 and not (tmp_path / "folder.png").exists()
    assert "draws one image;" in folder.stderr.strip().splitlines()[-1]
    checkpoint = run_module("ecgcap.caption", str(photo), "--model",
                            str(runs / "tiny" / "best.keras"))
    assert checkpoint.returncode == 2 and checkpoint.stderr.strip().splitlines()[-1].endswith(
        "a training checkpoint (cached-feature or stage-2 model); caption with the run "
        "folder's model.keras")


def test_several_caption_sets_are_one_training_set_reported_at_start(flickr8k_dir,
                                                                     flickr30k_dir):
    from ecgcap.captioning.config import CaptionTrainConfig
    from ecgcap.captioning.datasets import flickr_id, read_flickr8k, read_flickr30k
    from ecgcap.captioning.training import load_splits

    lines: list[str] = []
    config = CaptionTrainConfig(dataset="flickr8k", extra_datasets=("flickr30k",),
                                val_holdout=0.0)
    train, val = load_splits(config, data_dir=flickr8k_dir.parent, report=lines.append)
    f8 = read_flickr8k(flickr8k_dir, "train", report=lambda line: None)
    f30 = read_flickr30k(flickr30k_dir, report=lambda line: None)
    shared = {flickr_id(f) for f in f8.images} & {flickr_id(f) for f in f30.images}
    assert len(train) == len(f8) + len(f30) - len(shared)
    assert len(train.all_captions()) == len(f8.all_captions()) + len(f30.all_captions())
    assert len(val) == len(read_flickr8k(flickr8k_dir, "val", report=lambda line: None))
    [line] = [x for x in lines if x.startswith("training sets:")]
    assert line == (f"training sets: flickr8k-train {len(f8)} + flickr30k-train {len(f30)} "
                    f"photos = {len(train)} distinct ({len(shared)} in more than one, counted "
                    f"once), {len(train.all_captions())} captions")
    half = load_splits(CaptionTrainConfig(dataset="flickr8k", extra_datasets=("flickr30k",),
                                          val_holdout=0.0, train_fraction=0.5),
                       data_dir=flickr8k_dir.parent, report=lambda line: None)[0]
    assert len(half) == round(len(train) / 2) and set(half.images) <= set(train.images)
