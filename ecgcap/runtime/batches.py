"""Shuffled training batches as a ``keras.utils.PyDataset`` (both ECG tasks use it)."""

from __future__ import annotations

import keras
import numpy as np


class ShuffledBatches(keras.utils.PyDataset):
    """Training batches in a new order every epoch, all drawn from one seeded generator.

    Subclasses build batch ``i`` from :meth:`batch_indices` in ``__getitem__``.
    """

    def __init__(self, y: np.ndarray, weights: np.ndarray, batch_size: int, *, seed: int = 0):
        super().__init__()
        self.y, self.w, self.batch_size = y, weights, batch_size
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(y))

    def __len__(self) -> int:
        return int(np.ceil(len(self.y) / self.batch_size))

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.y))

    def batch_indices(self, i: int) -> np.ndarray:
        """The (unsorted) indices of batch ``i`` in this epoch's order."""
        return self.order[i * self.batch_size:(i + 1) * self.batch_size]
