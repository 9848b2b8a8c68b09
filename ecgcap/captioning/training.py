"""Training the captioner: batches, CIDEr on val in the loop, checkpoints, resume, report.

``train_captioner`` is the whole job of ``python -m ecgcap.train_caption``. Each epoch sees
every training image once, with all its captions (the encoder runs once per image), flipped
and rotated at random. After each epoch the val images are captioned greedily and scored with
CIDEr; the best epoch by val CIDEr is kept (``best.keras``), training stops after ``patience``
epochs without a gain, and ``checkpoint.keras`` + ``state.json`` let ``--resume`` continue.
The test split is never read here.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ecgcap.captioning.config import CaptionTrainConfig
from ecgcap.captioning.datasets import (
    CaptionSet,
    has_splits,
    load_captions,
    merge_caption_sets,
    without_photos,
)
from ecgcap.captioning.decoding import CaptionDecoder
from ecgcap.captioning.images import augment, load_images
from ecgcap.captioning.models import build_captioner
from ecgcap.captioning.pairs import write_pair_shards
from ecgcap.captioning.text import Vocabulary, tokenize
from ecgcap.runtime.batches import ShuffledBatches
from ecgcap.runtime.checkpoint import (
    Checkpoint,
    StopOnSignal,
    backup_epoch,
    check_resume_config,
    checkpoint_files,
    fit_resumable,
    gradient_log,
    streamed_checkpoint,
)
from ecgcap.runtime.distribute import Distribution, no_distribution
from ecgcap.runtime.errors import EcgcapError
from ecgcap.runtime.files import atomic_write_json
from ecgcap.runtime.modelfile import load_model, save_model, without_optimizer
from ecgcap.runtime.shards import ShardSet, steps_per_epoch, stream

CAPTION_MODEL = "caption"
_SCENE = re.compile(r"^([A-Za-z]+)_\d+\.\w+$")


def scene_of(filename: str) -> str | None:
    """The scene a file name states (RSICD: ``airport_12.jpg`` -> ``airport``), else None."""
    match = _SCENE.match(filename)
    return match.group(1).lower() if match else None


def scene_classes(images: list[str]) -> list[str]:
    """Sorted scene names of ``images`` when every name states one and there are two or more."""
    scenes = [scene_of(f) for f in images]
    if any(s is None for s in scenes) or len(set(scenes)) < 2:
        return []
    return sorted(set(scenes))  # type: ignore[arg-type]


def encode_captions(data: CaptionSet, vocab: Vocabulary, per_image: int, max_length: int,
                    seed: int = 0) -> np.ndarray:
    """``(images, per_image, max_length)`` token ids; images with fewer captions repeat some
    (chosen with ``seed``), images with more keep the first ``per_image``."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(data), per_image, max_length), dtype=np.int32)
    for i, caps in enumerate(data.captions):
        chosen = caps[:per_image] if len(caps) >= per_image else \
            [*caps, *rng.choice(caps, per_image - len(caps)).tolist()]
        for k, c in enumerate(chosen):
            out[i, k] = vocab.encode(c, max_length)
    return out


class CaptionBatches(ShuffledBatches):
    """Each epoch: every image once, in an order drawn from ``(seed, epoch)``, with all its
    captions; images flipped / rotated at random. Inputs are the captions without their last
    token, targets the captions without ``<start>`` (teacher forcing)."""

    def __init__(self, images: np.ndarray, captions: np.ndarray, scenes: np.ndarray | None,
                 batch_size: int, *, augment: bool = True, seed: int = 0, epoch: int = 0):
        super().__init__(len(images), batch_size, seed=seed, epoch=epoch)
        self.images, self.captions, self.scenes, self.augment = images, captions, scenes, augment

    def __getitem__(self, i: int):
        idx = np.sort(self.batch_indices(i))
        images = self.images[idx]
        if self.augment:
            images = augment(images, np.random.default_rng((self.seed, self.epoch, i)))
        caps = self.captions[idx]
        x = {"image": images.astype(np.float32), "caption": caps[:, :, :-1]}
        y = {"words": caps[:, :, 1:]}
        if self.scenes is not None:
            y["scene"] = self.scenes[idx]
        return x, y


def cider(references: list[list[str]], candidates: list[str]) -> float:
    """Corpus CIDEr-D (pycocoevalcap) of ``candidates`` against ``references``, on ecgcap's
    tokens (lowercase words). The in-loop score; ``evaluate_caption`` uses the PTB tokenizer."""
    from pycocoevalcap.cider.cider import Cider

    gts = {i: [" ".join(tokenize(r)) for r in refs] for i, refs in enumerate(references)}
    res = {i: [" ".join(tokenize(c))] for i, c in enumerate(candidates)}
    score, _ = Cider().compute_score(gts, res)
    return float(score)


class ValidationCider(keras.callbacks.Callback):
    """Adds ``val_cider`` (greedy captions of the val images) and ``val_distinct`` to the logs.

    Under a ``distribution`` the captions come from a single-device copy of the model, so
    that every worker decodes every val image (and stops early on the same score).
    """

    def __init__(self, images: np.ndarray, references: list[list[str]],
                 distribution: Distribution | None = None):
        super().__init__()
        self.images, self.references = images, references
        self.distributed = distribution is not None and distribution.active

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.distributed:
            with no_distribution():
                captions = CaptionDecoder(without_optimizer(self.model)).caption(self.images)
        else:
            captions = CaptionDecoder(self.model).caption(self.images)
        if logs is not None:
            logs["val_cider"] = cider(self.references, captions)
            logs["val_distinct"] = float(len(set(captions)))


def plateau_halvings(scores: list[float], patience: int = 2, min_delta: float = 1e-4) -> int:
    """How many times the learning rate has been halved after ``scores`` (one per epoch): once
    each time ``patience`` epochs pass without beating the best by ``min_delta`` (as
    ``keras.callbacks.ReduceLROnPlateau``, but a function of the history alone).

    >>> plateau_halvings([0.1, 0.3, 0.25, 0.25, 0.27, 0.24])
    2
    """
    best, wait, halvings = -np.inf, 0, 0
    for score in scores:
        if score > best + min_delta:
            best, wait = score, 0
        else:
            wait += 1
            if wait >= patience:
                halvings, wait = halvings + 1, 0
    return halvings


class HalveOnPlateau(keras.callbacks.Callback):
    """Sets the learning rate to ``base * 0.5 ** plateau_halvings(val_cider history)`` after
    each epoch. Being a function of the checkpointed history, it continues exactly on
    ``--resume`` (``ReduceLROnPlateau`` would forget its counters)."""

    def __init__(self, checkpoint: Checkpoint, base: float, monitor: str = "val_cider"):
        super().__init__()
        self.checkpoint, self.base, self.monitor = checkpoint, base, monitor

    def _set(self, scores: list[float]) -> None:
        self.model.optimizer.learning_rate.assign(self.base * 0.5 ** plateau_halvings(scores))

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._set(self.checkpoint.state["history"].get(self.monitor, []))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        # runs before the checkpoint is written, so that it holds the next epoch's rate
        scores = self.checkpoint.state["history"].get(self.monitor, [])
        self._set([*scores, float((logs or {})[self.monitor])])


def words_loss() -> keras.losses.Loss:
    """Cross-entropy of the next word at every step of every caption (back-propagated through
    all of them), averaged over the batch's real words: padding is masked out
    (``ignore_class=0``)."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)


def build_model(config: CaptionTrainConfig, vocab: Vocabulary, scenes: list[str]) -> keras.Model:
    """The configured captioner, compiled with its losses."""
    model = build_captioner(
        vocab.tokens, image_size=config.image_size, max_length=config.max_length,
        encoder_filters=config.encoder_filters, convs_per_block=config.convs_per_block,
        backbone=config.backbone, backbone_weights=config.backbone_weights,
        code_dim=config.code_dim, embed_dim=config.embed_dim, units=config.units,
        decoder_layers=config.decoder_layers, inject=config.inject,
        attention=config.attention, dropout=config.dropout,
        scene_classes=len(scenes) if config.scene_loss > 0 else 0,
        name=re.sub(r"\W", "_", Path(config.dataset).stem) + "_captioner")
    losses: dict[str, Any] = {"words": words_loss()}
    weights = {"words": 1.0}
    if config.scene_loss > 0 and scenes:
        losses["scene"] = "sparse_categorical_crossentropy"
        weights["scene"] = config.scene_loss
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate,
                                                  clipnorm=config.clipnorm),
                  loss=losses, loss_weights=weights)
    return model


def _config_json(config: CaptionTrainConfig) -> dict[str, Any]:
    out = asdict(config)
    out["encoder_filters"] = list(config.encoder_filters)
    out["extra_datasets"] = list(config.extra_datasets)
    return out


def load_splits(config: CaptionTrainConfig, *, data_dir: str | None = None,
                image_dir: str | None = None, report=None) -> tuple[CaptionSet, CaptionSet]:
    """The train and val sets of ``config.dataset``.

    Val is the dataset's val split (cut to ``config.val_images``) plus ``config.val_holdout``
    of the training images, held out stratified by scene (``seed``): RSICD's official val split
    holds four scenes, three of them absent from training, so alone it would select models for
    unseen scenes only. A COCO or JSON-lines file is one split (:func:`has_splits`): all of it
    is training data and val is the hold-out alone. Test is never read.
    """
    from sklearn.model_selection import train_test_split

    train = load_captions(config.dataset, "train", data_dir=data_dir, image_dir=image_dir,
                          report=report)
    if config.extra_datasets:  # a photo in several sets counts once, with all its captions
        sets = [train, *(load_captions(d, "train", data_dir=data_dir, report=report)
                         for d in config.extra_datasets)]
        held = _held_out_splits(config.dataset, data_dir, image_dir)
        for k in range(1, len(sets)):  # never another set's copy of a val or test photo
            sets[k], dropped = without_photos(sets[k], held)
            if dropped and report:
                report(f"{sets[k].name}: {dropped} photos are {config.dataset} val or test "
                       "photos; left out of training")
        train = merge_caption_sets(sets)
        if report:
            report(f"training sets: {' + '.join(f'{s.name} {len(s)}' for s in sets)} photos = "
                   f"{len(train)} distinct ({sum(map(len, sets)) - len(train)} in more than "
                   f"one, counted once), {len(train.all_captions())} captions")
    if config.train_fraction < 1.0:  # a seeded subset of the photos, all their captions
        keep = np.sort(np.random.default_rng(config.seed).permutation(len(train))[
            :max(1, round(config.train_fraction * len(train)))])
        train = CaptionSet(train.name, train.image_dir, [train.images[i] for i in keep],
                           [train.captions[i] for i in keep], train.missing)
    if has_splits(config.dataset):
        val = load_captions(config.dataset, "val", data_dir=data_dir, image_dir=image_dir,
                            report=report)
    else:  # one split: val is only the hold-out below, never the training images themselves
        if config.val_holdout <= 0:
            raise EcgcapError("a COCO or JSON-lines caption file is one split; val comes from "
                              "--val-holdout, which must then be above 0", input=config.dataset)
        val = CaptionSet(train.name, train.image_dir, [], [])
    if len(train) == 0 or (len(val) == 0 and config.val_holdout <= 0):
        raise EcgcapError("no usable training or val images", input=config.dataset)
    if config.val_images:
        val = CaptionSet(val.name, val.image_dir, val.images[:config.val_images],
                         val.captions[:config.val_images])
    if config.val_holdout > 0:
        if val.image_dir != train.image_dir and not all(Path(f).is_absolute()
                                                        for f in train.images):
            raise EcgcapError("--val-holdout needs train and val images in one folder",
                              input=config.dataset)
        scenes = [scene_of(f) or "" for f in train.images]
        counts = {s: scenes.count(s) for s in set(scenes)}
        held_out = int(np.ceil(config.val_holdout * len(train)))
        stratify = scenes if min(counts.values()) >= 2 and held_out >= len(counts) else None
        keep, held = train_test_split(np.arange(len(train)), test_size=config.val_holdout,
                                      random_state=config.seed, stratify=stratify)
        keep, held = np.sort(keep), np.sort(held)
        val = CaptionSet(val.name, val.image_dir,
                         [*val.images, *(train.images[i] for i in held)],
                         [*val.captions, *(train.captions[i] for i in held)])
        train = CaptionSet(train.name, train.image_dir, [train.images[i] for i in keep],
                           [train.captions[i] for i in keep], train.missing)
    return train, val


def _held_out_splits(dataset: str, data_dir: str | None,
                     image_dir: str | None) -> list[CaptionSet]:
    """The val and test sets of ``dataset`` (none for a one-split file)."""
    if not has_splits(dataset):
        return []
    return [load_captions(dataset, split, data_dir=data_dir, image_dir=image_dir,
                          report=lambda line: None) for split in ("val", "test")]


def caption_stream(shards: ShardSet, config: CaptionTrainConfig, distribution: Distribution,
                   first_epoch: int = 0) -> Any:
    """The training input of a streamed run: every image once per epoch with all its captions,
    each image flipped / rotated by a draw from ``(seed, epoch, image)``."""
    import tensorflow as tf

    with_scene = bool((shards.column("scene") >= 0).all())

    def make_batch(ex: dict[str, np.ndarray], keys: np.ndarray, mask: np.ndarray, epoch: int):
        images = ex["image"]
        if config.augment:
            images = np.concatenate([
                augment(img[None], np.random.default_rng([config.seed, epoch, int(key)]))
                for img, key in zip(images, keys, strict=True)])
        caps, weight = ex["captions"], mask.astype(np.float32)
        y = {"words": caps[:, :, 1:]}
        w = {"words": np.broadcast_to(weight[:, None, None], y["words"].shape).copy()}
        if with_scene:
            y["scene"], w["scene"] = ex["scene"], weight
        x = {"image": images.astype(np.float32), "caption": caps[:, :, :-1]}
        return x, y, w  # the filler that completes the last batch weighs 0

    size, (per_image, length) = config.image_size, shards.arrays["captions"]["shape"]
    words = (None, per_image, length - 1)
    y_spec = {"words": tf.TensorSpec(words, tf.int32)}
    w_spec = {"words": tf.TensorSpec(words, tf.float32)}
    if with_scene:
        y_spec["scene"] = tf.TensorSpec((None,), tf.int32)
        w_spec["scene"] = tf.TensorSpec((None,), tf.float32)
    signature = ({"image": tf.TensorSpec((None, size, size, 3), tf.float32),
                  "caption": tf.TensorSpec(words, tf.int32)}, y_spec, w_spec)
    return distribution.dataset(lambda pipeline, pipelines, pieces: stream(
        shards, make_batch, signature, global_batch=config.batch_size, seed=config.seed,
        first_epoch=first_epoch, pipeline=pipeline, pipelines=pipelines, pieces=pieces))


def train_captioner(config: CaptionTrainConfig, run_dir: Path, *, data_dir: str | None = None,
                    image_dir: str | None = None, resume: bool = False, quiet: bool = False,
                    splits: tuple[CaptionSet, CaptionSet] | None = None,
                    report=None, distribution: Distribution | None = None) -> dict[str, Any]:
    """Train on the train split, select on val; write ``model.keras`` and ``report.json``.

    ``splits`` are the ``(train, val)`` sets when already loaded (else :func:`load_splits`).
    With ``distribution`` (or ``config.pipeline == "shards"``) the training images stream from
    shards decoded in parallel (:mod:`ecgcap.captioning.pairs`); every worker keeps
    ``keras.callbacks.BackupAndRestore`` files in ``run_dir/backup`` (a restarted run
    continues from its last whole epoch) and only the chief writes models and the report;
    other workers return ``{"worker": index, ...}``.
    """
    if config.encoder == "mobilenet_v2":
        if (distribution is not None and distribution.active) or config.pipeline != "memory":
            raise EcgcapError("the pretrained encoder trains on cached features on one "
                              "machine", input="--encoder mobilenet_v2")
        from ecgcap.captioning.feature_training import train_on_features

        return train_on_features(config, run_dir, splits or load_splits(
            config, data_dir=data_dir, image_dir=image_dir, report=report),
            data_dir=data_dir, resume=resume, quiet=quiet, config_json=_config_json(config))
    dist = distribution or Distribution()
    streamed = dist.active or config.pipeline == "shards"
    if config.pipeline not in ("memory", "shards"):
        raise EcgcapError("unknown pipeline; choose memory or shards",
                          input=f"--pipeline {config.pipeline}")
    if streamed:
        dist.check_batch(config.batch_size)
        if config.log_gradients:
            raise EcgcapError("gradient logging runs on the in-memory pipeline on one device",
                              input="--log-gradients")
    if streamed or resume:  # a streamed run in a folder with a backup always continues
        check_resume_config(run_dir / ("backup" if streamed else "") / "state.json",
                            _config_json(config))
    t0 = time.perf_counter()
    train, val = splits or load_splits(config, data_dir=data_dir, image_dir=image_dir,
                                       report=report)
    scenes = scene_classes(train.images) if config.scene_loss > 0 else []
    train_images = None if streamed else load_images(train.paths(), config.image_size,
                                                     quiet=quiet)
    val_images = load_images(val.paths(), config.image_size, quiet=True)

    state, backup, first_epoch = None, run_dir / "backup", 0
    if streamed:
        first_epoch = backup_epoch(backup)  # weights come back in fit (BackupAndRestore)
        dist.check_same(first_epoch, "the epoch to resume from", str(backup))
        vocab = Vocabulary.build(train.all_captions(), config.min_count)
        with dist.scope():
            model = build_model(config, vocab, scenes)
    elif resume:
        ckpt, state_file = checkpoint_files(run_dir, resume=True)
        model, saved = load_model(ckpt, (CAPTION_MODEL,))
        vocab = Vocabulary(model.get_layer("word_embedding").vocabulary)
        scenes = list(saved.get("scenes") or [])
        state = json.loads(state_file.read_text())
    else:
        vocab = Vocabulary.build(train.all_captions(), config.min_count)
        model = build_model(config, vocab, scenes)
    info = {"kind": CAPTION_MODEL, "dataset": config.dataset, "image_size": config.image_size,
            "max_length": config.max_length, "vocabulary_size": len(vocab), "scenes": scenes,
            "describes": "aerial and satellite images" if config.dataset == "rsicd" else None}
    captions = encode_captions(train, vocab, config.captions_per_image, config.max_length,
                               config.seed)
    scene_index = {s: i for i, s in enumerate(scenes)}
    scene_y = np.array([scene_index[scene_of(f)] for f in train.images], dtype=np.int32) \
        if scenes else None
    callbacks: list[keras.callbacks.Callback] = [StopOnSignal()]
    if streamed:
        shards = write_pair_shards(train.paths(), captions, scene_y, config.image_size,
                                   quiet=quiet or not dist.is_chief)
        data = caption_stream(shards, config, dist, first_epoch)
        example = next(iter(caption_stream(shards, config, Distribution()).take(1)))
        dist.prepare_fit(model, tuple({k: v.numpy() for k, v in part.items()}
                                      for part in example))
        fit = {"steps_per_epoch": steps_per_epoch(len(shards), config.batch_size)}
        checkpoint = streamed_checkpoint(run_dir, info, "val_cider", config.patience, dist,
                                         backup, first_epoch, config=_config_json(config))
    else:
        data = CaptionBatches(train_images, captions, scene_y, config.batch_size,
                              augment=config.augment, seed=config.seed)
        probe_x, probe_y = data[0]
        callbacks.append(data.callback())
        fit = {}
        checkpoint = Checkpoint(run_dir, info, monitor="val_cider", patience=config.patience,
                                state=state, config=_config_json(config))
    callbacks.append(ValidationCider(val_images, val.captions, dist))
    if not streamed:
        callbacks += gradient_log(config.log_gradients, probe_x, probe_y["words"], _WordsOnly())
    callbacks += [HalveOnPlateau(checkpoint, config.learning_rate), checkpoint]
    if streamed:
        callbacks.append(keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True))
    prep_seconds = time.perf_counter() - t0
    train_seconds = fit_resumable(model, data, checkpoint, run_dir, epochs=config.epochs,
                                  initial_epoch=checkpoint.state["epoch"], shuffle=False,
                                  callbacks=callbacks,
                                  verbose=0 if quiet or not dist.is_chief else 2, **fit)
    if not dist.is_chief:
        return {"worker": dist.worker, "epochs_run": checkpoint.state["epoch"]}
    with no_distribution():
        best, _ = load_model(run_dir / "best.keras", (CAPTION_MODEL,))
        captions_val = CaptionDecoder(best).caption(val_images)
    result: dict[str, Any] = {
        "config": _config_json(config),
        "images": {"train": len(train), "val": len(val)},
        "vocabulary_size": len(vocab),
        "scenes": scenes,
        "best_epoch": checkpoint.state["best_epoch"],
        "epochs_run": checkpoint.state["epoch"],
        "history": checkpoint.state["history"],
        "val": {"cider_greedy": cider(val.captions, captions_val),
                "distinct_captions": len(set(captions_val))},
        "seconds": {"prepare": round(prep_seconds, 1), "train": round(train_seconds, 1)},
    }
    if streamed:
        result["distribution"] = dist.as_dict(config.batch_size)
        result["resumed_from_epoch"] = first_epoch
    save_model(without_optimizer(best), run_dir / "model.keras", info)
    atomic_write_json(run_dir / "report.json", result)
    return result


class _WordsOnly:
    """The words loss applied to a captioner's output dict (for ``--log-gradients``)."""

    def __call__(self, y_true, y_pred):
        return words_loss()(y_true, y_pred["words"])
