"""Caption pairs as NumPy shards: images decoded and captions encoded once, chunk by chunk.

Streamed (and distributed) captioner training reads its images and captions from shards of
:mod:`ecgcap.runtime.shards` instead of one in-memory array: each shard holds ``chunk`` images
(``image``, uint8), their encoded captions (``captions``, ``(K, max_length)`` token ids), the
scene label (``scene``, -1 when none) and the image's position in the training set (``id``).
Chunks are decoded in parallel worker processes; no deep-learning backend is imported here.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ecgcap.captioning.images import load_image
from ecgcap.runtime.device import cpu_threads
from ecgcap.runtime.paths import cache_dir
from ecgcap.runtime.shards import ShardSet, prepare_shards


def pair_shard(task: tuple[list[str], np.ndarray, np.ndarray, np.ndarray, int]
               ) -> dict[str, np.ndarray]:
    """One chunk: ``(paths, captions, scenes, ids, size)`` -> the shard's arrays."""
    paths, captions, scenes, ids, size = task
    images = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        images[i] = load_image(path, size)
    return {"image": images, "captions": captions.astype(np.int32),
            "scene": scenes.astype(np.int32), "id": ids.astype(np.int64)}


def pairs_key(paths: Sequence[Path], captions: np.ndarray, scenes: np.ndarray, size: int) -> str:
    """A key for the shard folder: file names, sizes and times, the encoded captions, scenes."""
    digest = hashlib.sha256(repr([(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns)
                                  for p in paths]).encode())
    digest.update(np.ascontiguousarray(captions).tobytes())
    digest.update(np.ascontiguousarray(scenes).tobytes())
    digest.update(f"{size}|v1".encode())
    return digest.hexdigest()[:16]


def write_pair_shards(paths: Sequence[str | os.PathLike], captions: np.ndarray,
                      scenes: np.ndarray | None, size: int, *, chunk: int = 512,
                      folder: str | os.PathLike | None = None, workers: int | None = None,
                      quiet: bool = False) -> ShardSet:
    """Shards of ``chunk`` images each (in parallel, skipping finished ones).

    ``captions`` is ``(images, K, max_length)``; ``scenes`` the scene index per image (or
    None). ``folder`` defaults to the data cache, keyed by :func:`pairs_key`.
    """
    paths = [Path(p) for p in paths]
    scenes = np.full(len(paths), -1, np.int32) if scenes is None else np.asarray(scenes)
    if folder is None:
        folder = cache_dir() / "caption_pairs" / pairs_key(paths, captions, scenes, size)
    tasks = []
    for start in range(0, len(paths), chunk):
        part = slice(start, start + chunk)
        ids = np.arange(start, min(start + chunk, len(paths)))
        tasks.append((f"{start:08d}", ([str(p) for p in paths[part]], captions[part],
                                       scenes[part], ids, size)))
    return prepare_shards(tasks, pair_shard, folder, workers=workers or cpu_threads(),
                          quiet=quiet, label="decoding images into")
