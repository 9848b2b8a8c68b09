"""Training the pretrained captioner on 2 cores: stage 1 on cached feature maps.

The ImageNet MobileNetV2 is frozen, so its feature maps are computed once per image (and its
mirror image) and cached (:mod:`ecgcap.captioning.features`); each epoch then runs only the
attention decoder, over every caption of every training image (an image with ten captions,
present in two caption sets, is two rows of five). Half the rows, drawn from ``(seed, epoch,
row)``, use the mirrored image, with "left" and "right" swapped in their captions. The epoch is
chosen by greedy CIDEr on the val images, never on test. At the end the decoder's weights are
copied into the full image-to-caption model (encoder included: one ``.keras`` file is the
model), which is checked to caption the val images as the feature model did.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ecgcap.captioning.config import CaptionTrainConfig
from ecgcap.captioning.datasets import CaptionSet
from ecgcap.captioning.decoding import CaptionDecoder
from ecgcap.captioning.features import compute_features, default_encoder_weights
from ecgcap.captioning.images import load_images
from ecgcap.captioning.models import build_captioner
from ecgcap.captioning.text import Vocabulary
from ecgcap.runtime.batches import ShuffledBatches
from ecgcap.runtime.checkpoint import (
    RESUMABLE_OPTIONS,
    Checkpoint,
    StopOnSignal,
    check_resume_config,
    checkpoint_files,
    fit_resumable,
)
from ecgcap.runtime.errors import EcgcapError
from ecgcap.runtime.files import atomic_write_json
from ecgcap.runtime.modelfile import load_model, save_model, without_optimizer

MIRRORED_WORDS = (("left", "right"),)
STAGE2_OPTIONS = frozenset({"fine_tune_blocks", "fine_tune_epochs", "fine_tune_learning_rate"})


def caption_rows(data: CaptionSet, vocab: Vocabulary, per_row: int, max_length: int,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(image index per row, captions (rows, per_row, max_length))``: each image's captions
    in rows of ``per_row`` (the last row of an image completed with some of its captions,
    drawn with ``seed``), so that every caption is trained on once per epoch."""
    rng = np.random.default_rng(seed)
    owners, rows = [], []
    for i, caps in enumerate(data.captions):
        for start in range(0, len(caps), per_row):
            chunk = caps[start:start + per_row]
            if len(chunk) < per_row:
                chunk = [*chunk, *rng.choice(caps, per_row - len(chunk)).tolist()]
            owners.append(i)
            rows.append([vocab.encode(c, max_length) for c in chunk])
    return np.array(owners, dtype=np.int64), np.array(rows, dtype=np.int32)


def mirror_tokens(captions: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """``captions`` with the ids of "left" and "right" swapped (true of the mirrored image)."""
    out = captions.copy()
    for a, b in MIRRORED_WORDS:
        if a in vocab.index and b in vocab.index:
            ia, ib = vocab.index[a], vocab.index[b]
            out[captions == ia], out[captions == ib] = ib, ia
    return out


class RowBatches(ShuffledBatches):
    """Each epoch: every caption row once, in an order drawn from ``(seed, epoch)``; with
    ``augment`` each row uses its mirrored image (and captions) at random. ``inputs(owners,
    mirrored)`` gives the model's image input (cached features or decoded pixels) of a batch.
    Teacher forcing: the captions without their last token in, without ``<start>`` out."""

    def __init__(self, inputs: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 owners: np.ndarray, captions: np.ndarray, mirrored: np.ndarray,
                 batch_size: int, *, augment: bool = True, seed: int = 0, epoch: int = 0):
        super().__init__(len(owners), batch_size, seed=seed, epoch=epoch)
        self.inputs, self.owners, self.augment = inputs, owners, augment
        self.captions, self.mirrored = captions, mirrored

    def __getitem__(self, i: int):
        idx = np.sort(self.batch_indices(i))
        flip = np.random.default_rng((self.seed, self.epoch, i)).integers(0, 2, len(idx)) \
            if self.augment else np.zeros(len(idx), dtype=np.int64)
        x = self.inputs(self.owners[idx], flip)
        caps = np.where(flip[:, None, None] == 1, self.mirrored[idx], self.captions[idx])
        return {"image": x, "caption": caps[:, :, :-1]}, {"words": caps[:, :, 1:]}


def cached_inputs(features: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Rows' inputs from cached ``(images, 2, regions, channels)`` feature maps."""
    return lambda owners, flip: features[owners, flip].astype(np.float32)


def pixel_inputs(images: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Rows' inputs from decoded ``(images, H, W, 3)`` pixels, mirrored where asked."""
    def get(owners: np.ndarray, flip: np.ndarray) -> np.ndarray:
        x = images[owners].astype(np.float32)
        x[flip == 1] = x[flip == 1, :, ::-1]
        return x
    return get


def _builder_args(config: CaptionTrainConfig) -> dict[str, Any]:
    return {"max_length": config.max_length, "embed_dim": config.embed_dim,
            "units": config.units, "feature_dim": config.feature_dim,
            "attention_units": config.attention_units,
            "attention_penalty": config.attention_penalty, "dropout": config.dropout,
            "name": re.sub(r"\W", "_", Path(config.dataset).stem) + "_captioner"}


def full_model(features_model: keras.Model, config: CaptionTrainConfig,
               weights: str | Path) -> keras.Model:
    """The image-to-caption model with the decoder weights of ``features_model``."""
    vocab = features_model.get_layer("word_embedding").vocabulary
    model = build_captioner(vocab, encoder="mobilenet_v2", encoder_weights=str(weights),
                            image_size=config.image_size, **_builder_args(config))
    for layer in features_model.layers:
        if layer.weights and layer.name != "encoder":
            model.get_layer(layer.name).set_weights(layer.get_weights())
    return model


def train_on_features(config: CaptionTrainConfig, run_dir: Path,
                      splits: tuple[CaptionSet, CaptionSet], *, data_dir: str | None = None,
                      resume: bool = False, quiet: bool = False,
                      config_json: dict[str, Any]) -> dict[str, Any]:
    """Stage 1: train the attention decoder on cached MobileNetV2 features; write
    ``model.keras`` (the full model) and ``report.json`` to ``run_dir``."""
    from ecgcap.captioning.training import (
        CAPTION_MODEL,
        HalveOnPlateau,
        ValidationCider,
        cider,
        words_loss,
    )

    if resume:  # stage 2 may be added to a run, or lengthened; once it has begun, stage 1 is
        # over for good (more stage-1 epochs would pull the ground from under stage 2)
        begun = (run_dir / "fine_tune" / "state.json").is_file()
        check_resume_config(run_dir / "state.json", config_json,
                            may_change=(STAGE2_OPTIONS | {"log_gradients"}) if begun
                            else (RESUMABLE_OPTIONS | STAGE2_OPTIONS))
    t0 = time.perf_counter()
    train, val = splits
    weights = Path(config.encoder_weights) if config.encoder_weights \
        else default_encoder_weights(data_dir)
    features = compute_features(train.paths(), weights, image_size=config.image_size,
                                quiet=quiet)
    val_features = compute_features(val.paths(), weights, image_size=config.image_size,
                                    quiet=quiet)[:, 0].astype(np.float32)
    state = None
    if resume:
        ckpt, state_file = checkpoint_files(run_dir, resume=True)
        model, _ = load_model(ckpt, (CAPTION_MODEL,))
        vocab = Vocabulary(model.get_layer("word_embedding").vocabulary)
        state = json.loads(state_file.read_text())
    else:
        vocab = Vocabulary.build(train.all_captions(), config.min_count)
        model = build_captioner(vocab.tokens, encoder="features",
                                feature_shape=features.shape[2:], **_builder_args(config))
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate,
                                                      clipnorm=config.clipnorm),
                      loss={"words": words_loss()})
    owners, captions = caption_rows(train, vocab, config.captions_per_image, config.max_length,
                                    config.seed)
    mirrored = mirror_tokens(captions, vocab)
    data = RowBatches(cached_inputs(features), owners, captions, mirrored, config.batch_size,
                      augment=config.augment, seed=config.seed)
    describes = "aerial and satellite images" if config.dataset == "rsicd" \
        else "ordinary photographs"
    info = {"kind": CAPTION_MODEL, "dataset": config.dataset,
            "datasets": [config.dataset, *config.extra_datasets], "encoder": config.encoder,
            "image_size": config.image_size, "max_length": config.max_length,
            "vocabulary_size": len(vocab), "scenes": [], "describes": describes}
    checkpoint = Checkpoint(run_dir, {**info, "stage": "features"}, monitor="val_cider",
                            patience=config.patience, state=state, config=config_json)
    callbacks = [StopOnSignal(), data.callback(), ValidationCider(val_features, val.captions),
                 HalveOnPlateau(checkpoint, config.learning_rate), checkpoint]
    prep_seconds = time.perf_counter() - t0
    train_seconds = fit_resumable(model, data, checkpoint, run_dir, epochs=config.epochs,
                                  initial_epoch=checkpoint.state["epoch"], shuffle=False,
                                  callbacks=callbacks, verbose=0 if quiet else 2)
    best, _ = load_model(run_dir / "best.keras", (CAPTION_MODEL,))
    feature_captions = CaptionDecoder(best).caption(val_features)
    model_out = full_model(best, config, weights)
    val_images = load_images(val.paths(), config.image_size, quiet=True)
    image_captions = CaptionDecoder(model_out).caption(val_images)
    agree = sum(a == b for a, b in zip(feature_captions, image_captions, strict=True))
    if agree < 0.9 * len(val):
        raise EcgcapError(f"the full model captions only {agree} of {len(val)} val images as "
                          "the feature model does", input=str(run_dir))
    stage1 = {"cider_greedy": cider(val.captions, image_captions),
              "distinct_captions": len(set(image_captions)),
              "same_caption_as_feature_model": agree}
    fine: dict[str, Any] | None = None
    if config.fine_tune_blocks:
        model_out, fine = fine_tune(model_out, config, train, val_images, val.captions,
                                    (owners, captions, mirrored), run_dir / "fine_tune", info,
                                    baseline=stage1["cider_greedy"], resume=resume,
                                    quiet=quiet, config_json=config_json)
        image_captions = CaptionDecoder(model_out).caption(val_images)
    result: dict[str, Any] = {
        "config": config_json,
        "images": {"train": len(train), "val": len(val)},
        "captions": {"train": len(train.all_captions()), "rows": len(owners)},
        "vocabulary_size": len(vocab), "scenes": [],
        "best_epoch": checkpoint.state["best_epoch"],
        "epochs_run": checkpoint.state["epoch"],
        "history": checkpoint.state["history"],
        "val": {"cider_greedy": cider(val.captions, image_captions),
                "distinct_captions": len(set(image_captions))},
        "stage1_val": stage1,
        "seconds": {"prepare": round(prep_seconds, 1), "train": round(train_seconds, 1)},
    }
    if fine is not None:
        result["fine_tune"] = fine
    save_model(without_optimizer(model_out), run_dir / "model.keras", info)
    atomic_write_json(run_dir / "report.json", result)
    return result


def unfreeze_top_blocks(model: keras.Model, blocks: int) -> list[str]:
    """Make MobileNetV2's last ``blocks`` inverted-residual blocks (and its final 1x1 conv)
    trainable, every other encoder layer frozen. BatchNorm layers stay frozen, so they keep
    using their moving statistics (Keras 3 passes ``training=True`` of ``fit`` through the
    encoder's ``training=False`` call). Returns the unfrozen layers' names."""
    net = next(layer for layer in model.get_layer("encoder").layers
               if isinstance(layer, keras.Model))
    ids = sorted({int(m.group(1)) for layer in net.layers
                  if (m := re.match(r"block_(\d+)_", layer.name))})
    top = set(ids[-blocks:]) if blocks > 0 else set()
    net.trainable = True
    names = []
    for layer in net.layers:
        m = re.match(r"block_(\d+)_", layer.name)
        layer.trainable = bool((m and int(m.group(1)) in top) or layer.name.startswith("Conv_1")
                               ) and not isinstance(layer, keras.layers.BatchNormalization)
        if layer.trainable and layer.weights:
            names.append(layer.name)
    return names


def fine_tune(model: keras.Model, config: CaptionTrainConfig, train: CaptionSet,
              val_images: np.ndarray, val_references: list[list[str]],
              rows: tuple[np.ndarray, np.ndarray, np.ndarray], folder: Path,
              info: dict[str, Any], *, baseline: float, resume: bool, quiet: bool,
              config_json: dict[str, Any]) -> tuple[keras.Model, dict[str, Any]]:
    """Stage 2: the full model with MobileNetV2's top ``config.fine_tune_blocks`` blocks
    unfrozen, trained on decoded (and mirrored) images at ``fine_tune_learning_rate``, chosen
    by val CIDEr against ``baseline``, the stage-1 model's (which is kept when no stage-2 epoch
    beats it); checkpoints in ``folder`` (``--resume`` continues there, or starts stage 2 after
    a finished stage 1). Returns the best model and a summary."""
    from ecgcap.captioning.training import CAPTION_MODEL, ValidationCider, words_loss

    state = None
    stage1_weights = model.get_weights()
    if resume and (folder / "state.json").is_file():
        check_resume_config(folder / "state.json", config_json,
                            may_change=RESUMABLE_OPTIONS | {"fine_tune_epochs"})
        model, _ = load_model(folder / "checkpoint.keras", (CAPTION_MODEL,))
        state = json.loads((folder / "state.json").read_text())
    unfrozen = unfreeze_top_blocks(model, config.fine_tune_blocks)
    if state is None:
        model.compile(optimizer=keras.optimizers.Adam(config.fine_tune_learning_rate,
                                                      clipnorm=config.clipnorm),
                      loss={"words": words_loss()})
    folder.mkdir(parents=True, exist_ok=True)
    state = state or {"epoch": 0, "best": baseline, "best_epoch": 0, "wait": 0, "history": {}}
    over = state["epoch"] >= config.fine_tune_epochs or state["wait"] >= config.patience
    images = load_images([] if over else train.paths(), config.image_size, quiet=quiet)
    owners, captions, mirrored = rows
    data = RowBatches(pixel_inputs(images), owners, captions, mirrored, config.batch_size,
                      augment=config.augment, seed=config.seed + 1)
    checkpoint = Checkpoint(folder, {**info, "stage": "fine_tune"}, monitor="val_cider",
                            patience=config.patience, state=state, config=config_json)
    callbacks = [StopOnSignal(), data.callback(), ValidationCider(val_images, val_references),
                 checkpoint]
    seconds = fit_resumable(model, data, checkpoint, folder, epochs=config.fine_tune_epochs,
                            initial_epoch=checkpoint.state["epoch"], shuffle=False,
                            callbacks=callbacks, verbose=0 if quiet else 2)
    if checkpoint.state["best_epoch"] == 0:  # no stage-2 epoch beat stage 1: keep it
        model.set_weights(stage1_weights)
        best = model
    else:
        best, _ = load_model(folder / "best.keras", (CAPTION_MODEL,))
    return best, {"blocks": config.fine_tune_blocks, "unfrozen_layers": unfrozen,
                  "stage1_val_cider": baseline,
                  "best_epoch": checkpoint.state["best_epoch"],
                  "epochs_run": checkpoint.state["epoch"],
                  "history": checkpoint.state["history"], "seconds": round(seconds, 1)}
