"""The settings of a captioner training run (no Keras import, so option parsing stays fast)."""

from __future__ import annotations

from dataclasses import dataclass

BACKBONE_NAMES = ("mobilenet_v2", "efficientnet_b0")  # ecgcap.captioning.models.BACKBONES


@dataclass
class CaptionTrainConfig:
    """Everything that defines a captioner training run (saved in ``report.json``)."""

    dataset: str = "rsicd"
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
    log_gradients: bool = False
    pipeline: str = "memory"  # or "shards": stream decoded images from shards (distributed)
    seed: int = 0
