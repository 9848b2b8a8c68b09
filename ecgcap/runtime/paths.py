"""Where datasets live (``--data-dir``, ``ECGCAP_DATA``, ``data/``) and where runs write."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from ecgcap.runtime.errors import EcgcapError

DATA_ENV = "ECGCAP_DATA"
DEFAULT_DATA_DIR = Path("data")
CACHE_ENV = "ECGCAP_CACHE"


def cache_dir() -> Path:
    """Where prepared data is cached: ``$ECGCAP_CACHE`` or ``data/cache``."""
    return Path(os.environ.get(CACHE_ENV, "data/cache"))


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: ``data_dir`` if given, else ``$ECGCAP_DATA``, else ``data/``.

    An explicitly given folder (argument or environment) must exist; the default need not,
    since it is also the download cache.
    """
    if data_dir is not None:
        path, origin = Path(data_dir), "--data-dir"
    elif os.environ.get(DATA_ENV):
        path, origin = Path(os.environ[DATA_ENV]), DATA_ENV
    else:
        return DEFAULT_DATA_DIR
    if not path.exists():
        raise EcgcapError("no such directory", input=f"{origin} {path}")
    if not path.is_dir():
        raise EcgcapError("is not a directory", input=f"{origin} {path}")
    return path


def find_dataset(name: str, marker: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Locate dataset ``name`` by a file it always has (``marker``, e.g. ``RECORDS``).

    ``data_dir`` (or ``$ECGCAP_DATA``, or ``data/``) may be the dataset's own folder or a root
    holding it as ``<root>/<name>``. Raises :class:`EcgcapError` naming the folder when neither
    holds ``marker``.
    """
    root = resolve_data_dir(data_dir)
    for candidate in (root, root / name):
        if (candidate / marker).is_file():
            return candidate
    raise EcgcapError(
        f"no {name} dataset here (looked for {marker} in it and in {root / name}); "
        f"point --data-dir or {DATA_ENV} at a copy, or download it",
        input=str(root),
    )


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def replaced_path(run_dir: Path) -> Path:
    """Where ``make_run_dir(..., keep_replaced=True)`` sets an overwritten run folder aside."""
    return run_dir.with_name(f".{run_dir.name}.replaced")


def make_run_dir(name: str, runs_dir: str | os.PathLike = "runs", *, overwrite: bool = False,
                 resume: bool = False, check_only: bool = False,
                 keep_replaced: bool = False) -> Path:
    """Create the run folder ``runs_dir/name`` for models, reports and plots.

    An existing run folder is refused unless ``overwrite`` (it is emptied) or ``resume``
    (it is reused as it is). ``check_only`` raises the same errors but touches nothing (to
    refuse before long work, then create it afterwards). ``keep_replaced`` moves an
    overwritten folder to :func:`replaced_path` instead of deleting it, so that
    :func:`ecgcap.runtime.cli.tidy_on_failure` can put it back if the new run fails early.
    """
    if not _NAME_RE.match(name):
        raise EcgcapError("run names use letters, digits, '.', '_' and '-'", input=f"--name {name}")
    runs_dir = Path(runs_dir)
    if runs_dir.exists() and not runs_dir.is_dir():
        raise EcgcapError("is a file, not a folder", input=f"--runs-dir {runs_dir}")
    run_dir = runs_dir / name
    if run_dir.exists() and not run_dir.is_dir():
        raise EcgcapError("is a file, not a folder", input=str(run_dir))
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        if not overwrite:
            raise EcgcapError("run folder exists; pass --overwrite to replace it or --resume "
                              "to continue it", input=str(run_dir))
        if not check_only:
            aside = replaced_path(run_dir)
            shutil.rmtree(aside, ignore_errors=True)
            if keep_replaced:
                run_dir.rename(aside)
            else:
                shutil.rmtree(run_dir)
    if resume and not run_dir.is_dir():
        raise EcgcapError("--resume given but there is no run folder to resume", input=str(run_dir))
    if check_only:
        return run_dir
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if keep_replaced and replaced_path(run_dir).is_dir() and not run_dir.exists():
            replaced_path(run_dir).rename(run_dir)  # put the old run back
        raise EcgcapError(f"cannot create the run folder ({exc.strerror})",
                          input=str(run_dir)) from exc
    if not os.access(run_dir, os.W_OK):
        raise EcgcapError("run folder is not writable", input=str(run_dir))
    return run_dir
