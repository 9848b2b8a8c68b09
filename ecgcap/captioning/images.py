"""Images for the captioner: decoding with Pillow, a decoded cache, and caption-true augmentation.

Every mode Pillow reads (grayscale, RGBA, palette, CMYK, 16-bit, ...) becomes 8-bit RGB of the
model's size. Images larger than ``MAX_PIXELS`` are refused before decoding (a decompression
bomb), and every unreadable file raises :class:`~ecgcap.runtime.errors.EcgcapError` naming it.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ecgcap.runtime.errors import EcgcapError
from ecgcap.runtime.files import atomic_path
from ecgcap.runtime.paths import cache_dir
from ecgcap.runtime.progress import progress

MAX_PIXELS = 64_000_000  # ~8000 x 8000; larger images are refused, never decoded
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _to_rgb(img):
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16/32-bit grey: scale to 8 bits
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(a)
        img = Image.fromarray(a.round().astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)  # transparent -> white, not black
    return img.convert("RGB")


def load_image(path: str | os.PathLike, size: int | tuple[int, int]) -> np.ndarray:
    """Decode ``path`` as an RGB ``uint8`` array of ``size`` (height, width).

    >>> load_image("../shared/data/rsicd/images/airport_1.jpg", 96).shape  # doctest: +SKIP
    (96, 96, 3)
    """
    from PIL import Image, UnidentifiedImageError

    height, width = (size, size) if isinstance(size, int) else size
    path = Path(path)
    if path.is_dir():
        raise EcgcapError("is a folder, not an image", input=str(path))
    if not path.is_file():
        raise EcgcapError("no such image file", input=str(path))
    if path.stat().st_size == 0:
        raise EcgcapError("empty file, not an image", input=str(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise EcgcapError(f"image too large ({img.width}x{img.height} pixels; "
                                      f"limit {MAX_PIXELS:,}): refused, not decoded",
                                      input=str(path))
                img.load()
                rgb = _to_rgb(img)
            if rgb.size != (width, height):
                rgb = rgb.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)
    except EcgcapError:
        raise
    except UnidentifiedImageError:
        raise EcgcapError("not an image Pillow can read", input=str(path)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise EcgcapError("image too large (decompression bomb): refused, not decoded",
                          input=str(path)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise EcgcapError(f"truncated or corrupt image ({exc})", input=str(path)) from None
    return np.asarray(rgb, dtype=np.uint8)


def find_images(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given, and the image files of folders (sorted by name)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir()
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise EcgcapError("folder holds no image files", input=str(p))
            out.extend(found)
        else:
            out.append(p)
    return out


def load_images(paths: Sequence[str | os.PathLike], size: int, *, use_cache: bool = True,
                quiet: bool = True) -> np.ndarray:
    """Decode ``paths`` into one ``(n, size, size, 3)`` uint8 array, cached after the first time.

    The cache (under ``$ECGCAP_CACHE``) is keyed by the file names, sizes and modification
    times, so a changed image is decoded again.
    """
    paths = [Path(p) for p in paths]
    key = hashlib.sha256(repr([(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns)
                               for p in paths]).encode()).hexdigest()[:16]
    cached = cache_dir() / "images" / f"{size}px-{len(paths)}-{key}.npy"
    if use_cache and cached.is_file():
        return np.load(cached)
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, p in enumerate(progress(paths, label=f"decoding {len(paths)} images", quiet=quiet)):
        out[i] = load_image(p, size)
    if use_cache:
        with atomic_path(cached) as tmp:
            np.save(tmp, out)
    return out


def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random flips and 90-degree rotations, one draw per image (they keep an aerial caption
    true: there is no up in a photo taken from above)."""
    out = np.empty_like(images)
    turns, flips = rng.integers(0, 4, len(images)), rng.integers(0, 2, len(images))
    for i, (img, k, f) in enumerate(zip(images, turns, flips, strict=True)):
        img = np.rot90(img, int(k), axes=(0, 1))
        out[i] = img[:, ::-1] if f else img
    return out
