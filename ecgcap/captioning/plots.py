"""Attention made visible: where the captioner looked for each word (Xu et al. 2015, fig. 2).

matplotlib is imported inside the function (headless ``Agg`` backend); the figure is written
atomically and closed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ecgcap.runtime.files import atomic_path


def attention_figure(image: np.ndarray, words: Sequence[str], alphas: np.ndarray,
                     path: str | os.PathLike, *, columns: int = 5, title: str = "") -> Path:
    """Write a PNG: the image, then one panel per word with its attention weights
    (``alphas`` ``(len(words), regions)``, regions a square grid) upsampled over the image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    alphas = np.asarray(alphas, dtype=np.float64)
    side = int(round(np.sqrt(alphas.shape[1]))) if alphas.size else 0
    if alphas.ndim != 2 or side * side != alphas.shape[1] or len(words) != len(alphas):
        raise ValueError(f"need one square grid of weights per word, got {alphas.shape} for "
                         f"{len(words)} words")
    h, w = image.shape[:2]
    panels = len(words) + 1
    rows = -(-panels // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(image)
    axes.flat[0].set_title("image", fontsize=10)
    for ax, word, alpha in zip(axes.flat[1:], words, alphas, strict=False):
        grid = alpha.reshape(side, side)
        grid = grid / grid.max() if grid.max() > 0 else grid
        up = Image.fromarray((grid * 255).astype(np.uint8)).resize((w, h),
                                                                  Image.Resampling.BICUBIC)
        ax.imshow(image)
        ax.imshow(np.asarray(up) / 255.0, cmap="gray", alpha=0.6, vmin=0, vmax=1)
        ax.set_title(word, fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path
