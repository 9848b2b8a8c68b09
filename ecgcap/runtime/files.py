"""Atomic writes (a crash never leaves a half-written file where a good one was) and caches."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process umask (read by setting it and putting it back), for giving files made by
    ``mkstemp``/``mkdtemp`` (0600/0700) the rights a plain ``open`` would have."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The temporary name keeps the suffix of ``path`` (Keras insists on ``.keras``). On any
    exception the temporary file is removed and ``path`` is left as it was.

    Examples
    --------
    >>> with atomic_path("model.keras") as tmp:          # doctest: +SKIP
    ...     model.save(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                                    dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = current_umask()
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal rights
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8) and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically and return the path."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def cached_arrays(path: str | os.PathLike, source: str, make: Callable[[], dict[str, Any]], *,
                  use_cache: bool = True) -> dict[str, Any]:
    """The arrays ``make()`` returns, kept in the ``.npz`` file ``path`` for next time.

    ``source`` fingerprints what they were made from (e.g. the input files' paths, sizes and
    modification times); a cached file made from another source, or one that cannot be read,
    is made again, so a cache never answers for data it was not built from.
    """
    import zipfile

    import numpy as np

    path = Path(path)
    if use_cache and path.is_file():
        try:
            with np.load(path) as f:
                if "_source" in f.files and str(f["_source"]) == source:
                    return {k: f[k] for k in f.files if k != "_source"}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            pass  # a damaged cache file is simply made again
    arrays = make()
    if use_cache:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, _source=np.array(source), **arrays)
    return arrays
