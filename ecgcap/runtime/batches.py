"""Shuffled training batches as a ``keras.utils.PyDataset`` (ECG beats and rhythm, captions)."""

from __future__ import annotations

import keras
import numpy as np


class ShuffledBatches(keras.utils.PyDataset):
    """Training batches in a new order every epoch, a function of ``(seed, epoch)`` alone.

    Nothing is drawn from a running generator, so a run resumed at epoch ``k`` (``epoch=k``)
    sees exactly the batches an uninterrupted run sees. Give ``fit`` :meth:`callback`, which
    sets the epoch as each one begins (without it, the order still changes at every epoch's
    end, but the count is Keras' to keep), and ``shuffle=False`` (else Keras shuffles the batch
    order again with Python's global ``random``, which a checkpoint does not hold). Subclasses
    build batch ``i`` from :meth:`batch_indices` in ``__getitem__`` and draw any augmentation
    from ``(seed, epoch, example)``.
    """

    def __init__(self, n: int, batch_size: int, *, seed: int = 0, epoch: int = 0):
        super().__init__()
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.set_epoch(epoch)

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order (and augmentation) from now on."""
        self.epoch = int(epoch)
        self.order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)

    def callback(self) -> keras.callbacks.Callback:
        """The callback that calls :meth:`set_epoch` as each epoch of ``fit`` begins."""
        return keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs=None: self.set_epoch(epoch))

    def batch_indices(self, i: int) -> np.ndarray:
        """The (unsorted) indices of batch ``i`` in this epoch's order."""
        return self.order[i * self.batch_size:(i + 1) * self.batch_size]
