"""Model files: a ``.keras`` file plus ecgcap's own description of it, in one file.

The description (what kind of model, its classes, its preprocessing) is stored as
``ecgcap.json`` inside the ``.keras`` zip archive, so one file is all inference needs. Models
are loaded with Keras safe mode on: never through pickle or arbitrary code.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from ecgcap.runtime.errors import EcgcapError
from ecgcap.runtime.files import atomic_path

INFO_NAME = "ecgcap.json"


def save_model(model: Any, path: str | os.PathLike, info: dict[str, Any]) -> Path:
    """Save ``model`` with ``info`` (must hold ``"kind"``) to ``path`` atomically."""
    if "kind" not in info:
        raise ValueError("info needs a 'kind' entry")
    path = Path(path)
    if path.suffix != ".keras":
        raise EcgcapError("model files end in .keras", input=str(path))
    with atomic_path(path) as tmp, tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        stored = Path(scratch) / "model.keras"
        model.save(stored)  # Keras stores its archive uncompressed: deflate it (a pretrained
        # encoder's weights, converted from 8-bit ones, shrink by a quarter)
        with zipfile.ZipFile(stored) as src, \
                zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as dst:
            for item in src.infolist():
                dst.writestr(item.filename, src.read(item.filename))
            dst.writestr(INFO_NAME, json.dumps(info, indent=2))
    return path


def without_optimizer(model: Any) -> Any:
    """An uncompiled copy of ``model`` with the same weights: the file to ship, a third the
    size of a checkpoint (which also holds Adam's two moments per weight)."""
    copy = model.__class__.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


def read_info(path: str | os.PathLike) -> dict[str, Any]:
    """The ecgcap description stored in a model file (errors name the file and the problem)."""
    path = Path(path)
    if not path.exists():
        raise EcgcapError("no such model file", input=str(path))
    if not path.is_file():
        raise EcgcapError("is not a model file", input=str(path))
    try:
        with zipfile.ZipFile(path) as zf:
            if INFO_NAME not in zf.namelist():
                raise EcgcapError("not an ecgcap model (no ecgcap.json inside)", input=str(path))
            return json.loads(zf.read(INFO_NAME))
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise EcgcapError(f"corrupt or truncated model file ({exc})", input=str(path)) from None


def load_model(path: str | os.PathLike, kinds: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
    """Load a model of one of ``kinds`` (safe mode) and return ``(model, info)``."""
    info = read_info(path)
    if info.get("kind") not in kinds:
        raise EcgcapError(f"this is a {info.get('kind')!r} model, not {' or '.join(kinds)}",
                          input=str(path))
    import keras

    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise EcgcapError(f"cannot load the model ({type(exc).__name__}: {first})",
                          input=str(path)) from None
    return model, info
