"""``python -m ecgcap.train_caption``: train the CNN-encoder / LSTM-decoder captioner.

Trains on the train split, selects the epoch by CIDEr on val (never test), checkpoints every
epoch (``--resume`` continues), and writes ``model.keras`` and ``report.json`` to the run folder.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ecgcap.captioning.config import BACKBONE_NAMES
from ecgcap.runtime.cli import make_parser, positive_float, positive_int, run, say, setup_runtime


def _filters(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of "
                                         "integers") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: filter counts must be 1 or more")
    return out


def build_parser() -> argparse.ArgumentParser:
    from ecgcap.captioning.config import PRETRAINED_DEFAULTS as PD
    from ecgcap.captioning.config import CaptionTrainConfig as C

    parser = make_parser("train_caption", "Train an image captioner (CNN encoder, LSTM decoder).",
                         run_folder=True, distribute=True)
    parser.add_argument("--dataset", action="append", default=None,
                        help="rsicd, flickr8k, flickr30k, or a caption file (.json Karpathy or "
                             "COCO, .jsonl); repeat it to train on several (a photo in more than "
                             "one counted once); the first one's val split chooses the epoch "
                             "(default: rsicd)")
    parser.add_argument("--image-dir", metavar="DIR", default=None,
                        help="images of a caption file (default: images/ beside it)")
    parser.add_argument("--encoder", choices=("convpool", "mobilenet_v2"), default=C.encoder,
                        help="convpool: conv + pooling blocks trained from scratch; "
                             "mobilenet_v2: the ImageNet MobileNetV2, frozen, its feature maps "
                             "cached, with Show-Attend-Tell soft attention (then the defaults "
                             "marked * change: " + ", ".join(
                                 f"{k.replace('_', '-')} {v}" for k, v in PD.items()) + ")")
    parser.add_argument("--encoder-weights", metavar="PATH", default=None,
                        help="mobilenet_v2's ImageNet weights (.weights.h5; default: "
                             "pretrained/mobilenet_v2_1.0_224_imagenet_no_top.weights.h5 under "
                             "the data folder)")
    parser.add_argument("--feature-dim", type=positive_int, default=C.feature_dim,
                        help="mobilenet_v2: features projected to this size")
    parser.add_argument("--attention-units", type=positive_int, default=C.attention_units,
                        help="mobilenet_v2: size of the additive attention")
    parser.add_argument("--attention-penalty", type=float, default=C.attention_penalty,
                        help="mobilenet_v2: weight of the doubly stochastic attention penalty")
    parser.add_argument("--fine-tune-blocks", type=int, default=0, metavar="N",
                        help="mobilenet_v2, stage 2 after the cached-feature stage: unfreeze "
                             "the top N blocks and train on decoded, mirrored images (0: off)")
    parser.add_argument("--fine-tune-epochs", type=positive_int, default=C.fine_tune_epochs,
                        help="stage 2 epochs")
    parser.add_argument("--fine-tune-learning-rate", type=positive_float,
                        default=C.fine_tune_learning_rate, help="stage 2 learning rate")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help=f"maximum epochs (default {C.epochs}*)")
    parser.add_argument("--batch-size", type=positive_int, default=C.batch_size,
                        help="images per batch (each with all its captions)")
    parser.add_argument("--learning-rate", type=positive_float, default=C.learning_rate)
    parser.add_argument("--clipnorm", type=positive_float, default=C.clipnorm,
                        help="gradient clipping by norm")
    parser.add_argument("--no-clip", action="store_true", help="turn gradient clipping off")
    parser.add_argument("--patience", type=positive_int, default=None,
                        help=f"early stopping: epochs without a better val CIDEr "
                             f"(default {C.patience}*)")
    parser.add_argument("--image-size", type=positive_int, default=None,
                        help=f"images are resized to this square (default {C.image_size}*)")
    parser.add_argument("--encoder-filters", type=_filters, default=C.encoder_filters,
                        metavar="F,F,...", help="filters of each conv block (one 2x2 pool each)")
    parser.add_argument("--convs-per-block", type=positive_int, default=C.convs_per_block)
    parser.add_argument("--backbone", choices=BACKBONE_NAMES, default=None,
                        help="a keras.applications encoder instead of the conv blocks")
    parser.add_argument("--backbone-weights", metavar="PATH", default=None,
                        help="the backbone's weights: a weights file (ImageNet weights you "
                             "have), or 'imagenet' to let Keras fetch or reuse its cached copy")
    parser.add_argument("--units", type=positive_int, default=None,
                        help=f"LSTM units (default {C.units}*)")
    parser.add_argument("--layers", type=positive_int, default=C.decoder_layers,
                        help="LSTM layers")
    parser.add_argument("--embed-dim", type=positive_int, default=None,
                        help=f"word embedding size (default {C.embed_dim}*)")
    parser.add_argument("--dropout", type=float, default=None,
                        help=f"dropout after the embedding, LSTM and attention (0 to <1; "
                             f"default {C.dropout}*)")
    parser.add_argument("--inject", choices=("init", "every", "both"), default=C.inject,
                        help="image vector as the LSTM's initial state, beside every word, or both")
    parser.add_argument("--attention", action=argparse.BooleanOptionalAction, default=C.attention,
                        help="soft attention over the encoder's feature map")
    parser.add_argument("--scene-loss", type=float, default=None,
                        help=f"weight of the auxiliary scene-class loss (scenes from file names "
                             f"like airport_12.jpg); 0 = off (default {C.scene_loss}*)")
    parser.add_argument("--min-count", type=positive_int, default=None,
                        help=f"words seen fewer times in training captions become <unk> "
                             f"(default {C.min_count}*)")
    parser.add_argument("--max-length", type=positive_int, default=C.max_length,
                        help="tokens per caption with <start> and <end>")
    parser.add_argument("--no-augment", action="store_true", help="no flips or rotations")
    parser.add_argument("--val-images", type=positive_int, default=None,
                        help="score only the first N val images each epoch (faster)")
    parser.add_argument("--val-holdout", type=float, default=None,
                        help="share of the training images (stratified by scene) added to the "
                             "val split for selection; 0 = the val split alone (default: 0 "
                             f"for flickr8k, else {C.val_holdout})")
    parser.add_argument("--train-fraction", type=float, default=1.0,
                        help="train on this share of the training images (0 to 1, drawn with "
                             "--seed; for learning curves)")
    parser.add_argument("--log-gradients", action="store_true",
                        help="log each layer's gradient norm (before clipping) every epoch")
    parser.add_argument("--pipeline", default="memory", choices=("memory", "shards"),
                        help="memory decodes the training images into one array; shards decodes "
                             "them in parallel into NumPy shards and streams batches from them "
                             "(always used with --distribute)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run folder's last checkpoint")
    return parser


def _work(args: argparse.Namespace) -> int:
    setup_runtime(args)
    from ecgcap.captioning import api

    report, run_dir = api.train_from_args(args)
    if "worker" in report:
        say(args, f"worker {report['worker']} finished after {report['epochs_run']} epochs; "
                  "the chief writes the model and report")
        return 0
    print(api.format_training(report))
    say(args, f"model.keras and report.json written to {run_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), _work, argv)


if __name__ == "__main__":
    sys.exit(main())
