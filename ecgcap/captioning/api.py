"""The captioning wing's public API, and the glue between command-line options and it."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ecgcap.captioning.config import CaptionTrainConfig
from ecgcap.runtime.checkpoint import checkpoint_files
from ecgcap.runtime.cli import finish_worker, say, tidy_on_failure, training_run_dir
from ecgcap.runtime.paths import make_run_dir


def config_from_args(args: argparse.Namespace) -> CaptionTrainConfig:
    """A :class:`CaptionTrainConfig` from ``train_caption``'s options (an option not given
    takes the default of its encoder: :data:`PRETRAINED_DEFAULTS` for mobilenet_v2)."""
    from ecgcap.captioning.config import PRETRAINED_DEFAULTS
    from ecgcap.runtime.errors import EcgcapError

    datasets = list(args.dataset or ["rsicd"])
    base = PRETRAINED_DEFAULTS if args.encoder == "mobilenet_v2" else {}
    for key in ("image_size", "embed_dim", "units", "dropout", "scene_loss", "min_count",
                "patience", "epochs"):
        if getattr(args, key) is None:
            setattr(args, key, base.get(key, getattr(CaptionTrainConfig, key)))
    if args.val_holdout is None:
        args.val_holdout = 0.0 if datasets[0] == "flickr8k" else CaptionTrainConfig.val_holdout
    if args.encoder_weights is not None:
        if args.encoder != "mobilenet_v2":
            raise EcgcapError("needs --encoder mobilenet_v2",
                              input=f"--encoder-weights {args.encoder_weights}")
        if not Path(args.encoder_weights).is_file():
            raise EcgcapError("no such weights file",
                              input=f"--encoder-weights {args.encoder_weights}")
    if args.encoder == "mobilenet_v2" and args.backbone:
        raise EcgcapError("--backbone is for --encoder convpool", input="--backbone")
    if args.encoder == "mobilenet_v2" and (args.distribute != "none"
                                           or args.pipeline != "memory"):
        raise EcgcapError("the pretrained encoder trains on cached features on one machine",
                          input="--encoder mobilenet_v2")
    if args.fine_tune_blocks and (args.encoder != "mobilenet_v2" or not
                                  0 < args.fine_tune_blocks <= 16):
        raise EcgcapError("needs --encoder mobilenet_v2 and N from 1 to 16 (its blocks)",
                          input=f"--fine-tune-blocks {args.fine_tune_blocks}")
    if not 0 < args.train_fraction <= 1:
        raise EcgcapError("must be in (0, 1]", input=f"--train-fraction {args.train_fraction}")
    if args.attention_penalty < 0:
        raise EcgcapError("must be 0 or more", input=f"--attention-penalty "
                                                     f"{args.attention_penalty}")
    if args.scene_loss < 0:
        raise EcgcapError("must be 0 or more", input=f"--scene-loss {args.scene_loss}")
    if not 0 <= args.val_holdout < 1:
        raise EcgcapError("must be in [0, 1)", input=f"--val-holdout {args.val_holdout}")
    if not 0 <= args.dropout < 1:
        raise EcgcapError("must be in [0, 1)", input=f"--dropout {args.dropout}")
    if args.max_length < 3:
        raise EcgcapError("must be 3 or more", input=f"--max-length {args.max_length}")
    weights = args.backbone_weights
    if weights is not None:
        if args.backbone is None:
            raise EcgcapError("needs --backbone", input=f"--backbone-weights {weights}")
        if weights != "imagenet" and not Path(weights).is_file():
            raise EcgcapError("no such weights file", input=f"--backbone-weights {weights}")
    return CaptionTrainConfig(
        dataset=datasets[0], extra_datasets=tuple(datasets[1:]), encoder=args.encoder,
        encoder_weights=args.encoder_weights, feature_dim=args.feature_dim,
        attention_units=args.attention_units, attention_penalty=args.attention_penalty,
        fine_tune_blocks=args.fine_tune_blocks, fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_learning_rate=args.fine_tune_learning_rate,
        image_size=args.image_size, max_length=args.max_length,
        min_count=args.min_count, encoder_filters=tuple(args.encoder_filters),
        convs_per_block=args.convs_per_block, backbone=args.backbone, backbone_weights=weights,
        embed_dim=args.embed_dim, units=args.units,
        decoder_layers=args.layers, inject=args.inject, attention=args.attention,
        dropout=args.dropout,
        scene_loss=args.scene_loss, batch_size=args.batch_size, epochs=args.epochs,
        learning_rate=args.learning_rate, clipnorm=None if args.no_clip else args.clipnorm,
        patience=args.patience, augment=not args.no_augment, val_images=args.val_images,
        val_holdout=args.val_holdout, train_fraction=args.train_fraction,
        log_gradients=args.log_gradients, seed=args.seed,
        pipeline="shards" if args.distribute != "none" else args.pipeline)


def train_from_args(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """Run ``train_caption``: read the captions, make the run folder, train; return (report,
    run folder). Bad data is found before the run folder is made."""
    from ecgcap.captioning.training import load_splits, train_captioner

    config = config_from_args(args)
    report = (lambda line: say(args, line))  # noqa: E731
    stems = "+".join(Path(d).stem for d in (config.dataset, *config.extra_datasets))
    kind = "" if config.encoder == "convpool" else f"-{config.encoder}"
    name = args.name or f"{stems}{kind}-captioner-seed{config.seed}"
    if config.pipeline == "memory":  # refused before the images are decoded
        make_run_dir(name, args.runs_dir, overwrite=args.overwrite, resume=args.resume,
                     check_only=True)
        checkpoint_files(Path(args.runs_dir) / name, resume=args.resume)
    splits = load_splits(config, data_dir=args.data_dir, image_dir=args.image_dir, report=report)
    report(f"{len(splits[0])} training images ({len(splits[0].all_captions())} captions), "
           f"{len(splits[1])} val images")
    with tidy_on_failure(args.runs_dir) as made:
        run_dir, dist = training_run_dir(args, name, config)
        made.append(run_dir)
        result = train_captioner(config, run_dir, data_dir=args.data_dir, resume=args.resume,
                                 quiet=args.quiet, splits=splits, report=report,
                                 distribution=dist)
    finish_worker(dist, run_dir)
    return result, run_dir


def format_training(report: dict[str, Any]) -> str:
    """One paragraph on a training run, for the terminal."""
    val = report["val"]
    return (f"best epoch {report['best_epoch']} of {report['epochs_run']}: val CIDEr (greedy, "
            f"ecgcap tokens) {val['cider_greedy']:.3f}, {val['distinct_captions']} distinct "
            f"captions on {report['images']['val']} val images; vocabulary "
            f"{report['vocabulary_size']} words; trained {report['seconds']['train'] / 60:.1f} min")


def evaluate_captioner(model: Any, dataset: str = "rsicd", split: str = "test", *, beam: int = 3,
                       no_repeat_ngram: int = 3, length_penalty: float = 1.0,
                       data_dir: str | None = None,
                       image_dir: str | None = None,
                       limit: int | None = None, meteor: bool = True,
                       train_datasets: Sequence[str] = (), neighbours: int = 10,
                       report=None) -> dict[str, Any]:
    """Greedy and beam captions of ``split`` scored beside the two baselines.

    The nearest-neighbour baseline retrieves, under the model's image vector, the most typical
    caption of the ``neighbours`` nearest training images of ``dataset`` and of
    ``train_datasets`` (the other sets the model was trained on, a photo in several counted
    once).

    Returns ``{"scores": {row: {metric: value}}, "images": [...], "captions": {row: [...]},
    "references": [...], "fixed_caption": str}``. Baselines need the dataset's train split
    (and val, where the fixed caption is chosen); without them they are left out.
    """
    from ecgcap.captioning.datasets import (
        CaptionSet,
        has_splits,
        load_captions,
        merge_caption_sets,
        without_photos,
    )
    from ecgcap.captioning.decoding import CaptionDecoder
    from ecgcap.captioning.evaluation import fixed_caption, nearest_neighbour, score_captions
    from ecgcap.captioning.images import load_images

    data = load_captions(dataset, split, data_dir=data_dir, image_dir=image_dir, report=report)
    if limit:
        data = CaptionSet(data.name, data.image_dir, data.images[:limit], data.captions[:limit])
    if len(data) == 0:
        from ecgcap.runtime.errors import EcgcapError

        raise EcgcapError(f"no usable {split} images", input=dataset)
    decoder = CaptionDecoder(model, length_penalty=length_penalty)
    images = load_images(data.paths(), decoder.image_size)
    captions = {"greedy": decoder.caption(images, beam=1, no_repeat_ngram=no_repeat_ngram),
                f"beam {beam}": decoder.caption(images, beam=beam,
                                                no_repeat_ngram=no_repeat_ngram)}
    fixed = None
    if not has_splits(dataset):  # its "train" would be these very images
        if report:
            report(f"baselines left out: {dataset} is one split, with no training images")
    else:
        train = load_captions(dataset, "train", data_dir=data_dir, image_dir=image_dir,
                              report=report)
        val = load_captions(dataset, "val", data_dir=data_dir, image_dir=image_dir,
                            report=report)
        if len(train) and len(val):
            fixed = fixed_caption(train.all_captions(), val.captions)
            captions["fixed caption"] = [fixed] * len(data)
            if train_datasets:  # never the evaluated photos themselves
                extra = [without_photos(load_captions(d, "train", data_dir=data_dir,
                                                      report=report), [data])[0]
                         for d in train_datasets]
                train = merge_caption_sets([train, *extra])
            _, train_vectors = decoder.encode(load_images(train.paths(), decoder.image_size))
            _, vectors = decoder.encode(images)
            captions["nearest neighbour"] = nearest_neighbour(
                train_vectors, train.captions, vectors, k=neighbours)
        elif report:
            report("baselines left out: the dataset has no train or no val images")
    scores = {name: score_captions(data.captions, caps, meteor=meteor)
              for name, caps in captions.items()}
    return {"dataset": dataset, "split": split, "beam": beam,
            "no_repeat_ngram": no_repeat_ngram, "length_penalty": length_penalty, "scores": scores,
            "fixed_caption": fixed, "images": data.images, "captions": captions,
            "references": data.captions, "_pixels": images}


def evaluate_from_args(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """Run ``evaluate_caption``: score, then write scores, captions and the HTML sheet."""
    from ecgcap.captioning.decoding import model_length_penalty
    from ecgcap.captioning.evaluation import caption_sheet
    from ecgcap.captioning.inference import load_captioner
    from ecgcap.runtime.files import atomic_write_json

    out = Path(args.out or f"runs/eval-{Path(args.dataset).stem}-{args.split}")
    make_run_dir(out.name, out.parent, overwrite=args.overwrite, check_only=True)  # fail first
    model, info = load_captioner(args.model or ("rsicd" if args.dataset == "rsicd" else "photo"))
    result = evaluate_captioner(model, args.dataset, args.split, beam=args.beam,
                                no_repeat_ngram=args.no_repeat,
                                length_penalty=model_length_penalty(info, args.length_penalty),
                                data_dir=args.data_dir, image_dir=args.image_dir,
                                limit=args.limit, meteor=not args.no_meteor,
                                train_datasets=[d for d in info.get("datasets", [])
                                                if d != args.dataset],
                                report=lambda line: say(args, line))
    out_dir = make_run_dir(out.name, out.parent, overwrite=args.overwrite)
    pixels = result.pop("_pixels")
    if args.teacher_forcing:
        from ecgcap.captioning.diagnostics import teacher_forcing_gap

        result["teacher_forcing"] = teacher_forcing_gap(model, pixels, result["references"])
        atomic_write_json(out_dir / "teacher_forcing.json", result["teacher_forcing"])
    atomic_write_json(out_dir / "scores.json", {k: result[k] for k in (
        "dataset", "split", "beam", "no_repeat_ngram", "length_penalty", "scores",
        "fixed_caption")} | {"model": str(
            args.model or "shipped"), "images": len(result["images"])})
    atomic_write_json(out_dir / "captions.json", [
        {"image": name, **{k: v[i] for k, v in result["captions"].items()},
         "references": result["references"][i]} for i, name in enumerate(result["images"])])
    caption_sheet(out_dir / "sheet.html", result["images"], pixels, result["captions"],
                  result["references"], title=f"{args.dataset} {args.split}")
    return result, out_dir
