"""The settings of a captioner training run (no Keras import, so option parsing stays fast)."""

from __future__ import annotations

from dataclasses import dataclass

BACKBONE_NAMES = ("mobilenet_v2", "efficientnet_b0")  # ecgcap.captioning.models.BACKBONES


@dataclass
class CaptionTrainConfig:
    """Everything that defines a captioner training run (saved in ``report.json``)."""

    dataset: str = "rsicd"
    extra_datasets: tuple[str, ...] = ()  # more training sets (their train splits), one photo once
    encoder: str = "convpool"            # or "mobilenet_v2": the ImageNet encoder, frozen
    encoder_weights: str | None = None   # its local weights file
    feature_dim: int = 512               # mobilenet_v2: features projected to this size
    attention_units: int = 256           # mobilenet_v2: size of the additive attention
    attention_penalty: float = 1.0       # mobilenet_v2: the doubly stochastic penalty's weight
    fine_tune_blocks: int = 0            # stage 2: unfreeze MobileNetV2's top N blocks (0: none)
    fine_tune_epochs: int = 3            # stage 2: epochs on decoded images
    fine_tune_learning_rate: float = 1e-4  # stage 2: Adam's rate
    image_size: int = 128
    max_length: int = 24
    min_count: int = 5
    encoder_filters: tuple[int, ...] = (16, 32, 64, 128, 256)
    convs_per_block: int = 1
    code_dim: int = 256
    backbone: str | None = None          # a keras.applications encoder instead of the conv blocks
    backbone_weights: str | None = None  # its weights: a file, or "imagenet" (Keras' cache)
    embed_dim: int = 128
    units: int = 256
    decoder_layers: int = 1
    inject: str = "both"
    attention: bool = True
    dropout: float = 0.3
    scene_loss: float = 0.3
    captions_per_image: int = 5
    batch_size: int = 32
    epochs: int = 30
    learning_rate: float = 1e-3
    clipnorm: float | None = 1.0
    patience: int = 5
    augment: bool = True
    val_images: int | None = None
    val_holdout: float = 0.05
    train_fraction: float = 1.0  # train on this share of the training images (learning curves)
    log_gradients: bool = False
    pipeline: str = "memory"  # or "shards": stream decoded images from shards (distributed)
    seed: int = 0


# what --encoder mobilenet_v2 changes when an option is not given
PRETRAINED_DEFAULTS = {"image_size": 224, "embed_dim": 256, "units": 512, "dropout": 0.5,
                       "scene_loss": 0.0, "min_count": 5, "patience": 4, "epochs": 20}
