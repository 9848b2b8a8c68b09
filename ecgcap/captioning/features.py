"""Feature maps of the frozen pretrained encoder, computed once per image and cached on disk.

Stage 1 of training the pretrained captioner never runs MobileNetV2 twice on an image: each
image's feature map (and that of its mirror image, for augmentation) is stored as one ``.npy``
file under ``$ECGCAP_CACHE/features/<encoder>-<size>px-<weights checksum>/``, named by a
hash of the image's path, size and modification time. A changed image, size, encoder or
weights file gives another key and is computed afresh; a cache file that does not load as
the expected array is computed again and replaced, never trusted.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np

from ecgcap.runtime.errors import EcgcapError
from ecgcap.runtime.files import atomic_path
from ecgcap.runtime.paths import cache_dir, resolve_data_dir
from ecgcap.runtime.progress import progress

MOBILENET_WEIGHTS = Path("pretrained") / "mobilenet_v2_1.0_224_imagenet_no_top.weights.h5"
VARIANTS = 2  # the image and its mirror image


def default_encoder_weights(data_dir: str | os.PathLike | None = None) -> Path:
    """The ImageNet MobileNetV2 weights file under the data folder (``--data-dir`` or
    ``$ECGCAP_DATA``): ``pretrained/mobilenet_v2_1.0_224_imagenet_no_top.weights.h5``."""
    path = resolve_data_dir(data_dir) / MOBILENET_WEIGHTS
    if not path.is_file():
        raise EcgcapError("no ImageNet MobileNetV2 weights here; give --encoder-weights FILE "
                          "(a keras.applications.MobileNetV2 include_top=False .weights.h5)",
                          input=str(path))
    return path


@cache
def _checksum(path: str, size: int, mtime_ns: int) -> str:  # noqa: ARG001 - cache keys
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_checksum(path: str | os.PathLike) -> str:
    """sha256 of a file (computed once per process for an unchanged file)."""
    st = Path(path).stat()
    return _checksum(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


class FeatureCache:
    """Cached feature maps ``(VARIANTS, regions, channels)`` (float16), one file per image."""

    def __init__(self, encoder: str, image_size: int, weights: str | os.PathLike,
                 root: str | os.PathLike | None = None):
        self.encoder, self.image_size, self.weights = encoder, image_size, Path(weights)
        tag = f"{encoder}-{image_size}px-{file_checksum(weights)[:16]}"
        self.folder = Path(root or cache_dir() / "features") / tag

    def path(self, image: str | os.PathLike) -> Path:
        """The cache file of ``image`` (keyed by its resolved path, size and time)."""
        st = Path(image).stat()
        key = f"{Path(image).resolve()}|{st.st_size}|{st.st_mtime_ns}"
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npy"

    def load(self, image: str | os.PathLike, shape: tuple[int, ...] | None) -> np.ndarray | None:
        """The cached array of ``image``, or None when absent or not a sound array of
        ``shape`` (``None``: any ``(VARIANTS, regions, channels)``)."""
        path = self.path(image)
        if not path.is_file():
            return None
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        ok = (isinstance(arr, np.ndarray) and arr.dtype == np.float16 and arr.ndim == 3
              and arr.shape[0] == VARIANTS and (shape is None or arr.shape == shape)
              and bool(np.isfinite(arr).all()))
        return arr if ok else None

    def save(self, image: str | os.PathLike, arr: np.ndarray) -> None:
        with atomic_path(self.path(image)) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, arr.astype(np.float16), allow_pickle=False)


def compute_features(paths: Sequence[str | os.PathLike], weights: str | os.PathLike, *,
                     image_size: int = 224, batch_size: int = 32, quiet: bool = False,
                     root: str | os.PathLike | None = None) -> np.ndarray:
    """``(n, VARIANTS, regions, 1280)`` float16 MobileNetV2 feature maps of ``paths``, the
    second variant of the mirrored image; computed (with a progress bar) only for images
    whose cache file is missing or unsound."""
    from ecgcap.captioning.images import load_image

    cache_ = FeatureCache("mobilenet_v2", image_size, weights, root)
    side = -(-image_size // 32)  # MobileNetV2's output grid
    found = [cache_.load(p, (VARIANTS, side * side, 1280)) for p in paths]
    todo = [i for i, arr in enumerate(found) if arr is None]
    if todo:
        from ecgcap.captioning.models import build_pretrained_encoder

        encoder = build_pretrained_encoder(image_size, weights=str(weights))
        batches = [todo[s:s + batch_size] for s in range(0, len(todo), batch_size)]
        label = f"computing MobileNetV2 features of {len(todo)} images ({len(paths) - len(todo)}" \
                " cached)"
        for batch in progress(batches, label=label, quiet=quiet):
            images = np.stack([load_image(paths[i], image_size) for i in batch])
            both = np.concatenate([images, images[:, :, ::-1]]).astype(np.float32)
            fmap = np.asarray(encoder.predict_on_batch(both)[0], dtype=np.float32)
            for j, i in enumerate(batch):
                arr = np.stack([fmap[j], fmap[len(batch) + j]]).astype(np.float16)
                cache_.save(paths[i], arr)
                found[i] = arr
    out = np.empty((len(paths), VARIANTS, side * side, 1280), np.float16)
    for i, arr in enumerate(found):
        out[i] = arr
    return out
