"""Downloads that never leave a bad file behind, and archives unpacked only where they belong.

Standard library only. :func:`fetch` streams a URL to a temporary name, checks its size and
checksum, and only then renames it into place; :func:`extract_zip` unpacks an archive member by
member, refusing absolute paths, ``..``, links and anything that would land outside the target
folder. Both wings' download code (PhysioNet, Flickr8k) is built on these.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import stat
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from ecgcap.runtime.errors import EXIT_FAILURE, EXIT_USAGE, EcgcapError
from ecgcap.runtime.files import atomic_path

_CHUNK = 1 << 16
_USER_AGENT = "ecgcap (urllib)"
# Errors that mean "the network or the server is not there", raised by urlopen or by reads.
_NETWORK_ERRORS = (urllib.error.URLError, TimeoutError, ConnectionError,
                   http.client.HTTPException)


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """The hex digest of the file at ``path`` (read in chunks, so size does not matter)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_name(name: str, label: str) -> str:
    """Return ``name`` if it is a safe relative POSIX path, else raise EcgcapError."""
    parts = PurePosixPath(name).parts
    if (not name or "\\" in name or ":" in name or "\0" in name or name.startswith("/")
            or PurePosixPath(name).is_absolute() or ".." in parts or not parts):
        raise EcgcapError(f"refusing unsafe file name {name!r} (it could write outside the "
                          "destination folder)", input=label, exit_code=EXIT_FAILURE)
    return name


def unreachable(url: str, reason: object, label: str) -> EcgcapError:
    """The error for a server that cannot be reached: it names ``--data-dir``."""
    return EcgcapError(f"cannot reach {url} ({reason}); download it elsewhere and point "
                       "--data-dir at the folder", input=label, exit_code=EXIT_USAGE)


def open_url(url: str, timeout: float, label: str, *, missing_ok: bool = False):
    """Open ``url``; return None for a missing file when ``missing_ok``, else raise."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 404:
            if missing_ok:
                return None
            raise EcgcapError(f"{url} is not on the server (HTTP 404); check the database "
                              "name, version and record names", input=label,
                              exit_code=EXIT_USAGE) from exc
        raise EcgcapError(f"the server answered HTTP {exc.code} ({exc.reason}) for {url}",
                          input=label, exit_code=EXIT_FAILURE) from exc
    except urllib.error.URLError as exc:
        # file:// mirrors report a missing file this way
        if isinstance(exc.reason, FileNotFoundError):
            if missing_ok:
                return None
            raise EcgcapError(f"{url} does not exist", input=label,
                              exit_code=EXIT_USAGE) from exc
        raise unreachable(url, exc.reason, label) from exc
    except ValueError as exc:  # malformed URL
        raise EcgcapError(f"not a usable URL: {url} ({exc})", input=label,
                          exit_code=EXIT_USAGE) from exc
    except _NETWORK_ERRORS as exc:
        raise unreachable(url, exc, label) from exc


def fetch(url: str, target: Path, expected: str | None, timeout: float, label: str, *,
          algorithm: str = "sha256", missing_ok: bool = False,
          on_bytes: Callable[[int, int | None], None] | None = None) -> bool:
    """Download ``url`` to ``target`` atomically, verifying ``expected`` (a hex digest of
    ``algorithm``) before the rename.

    Returns False (writing nothing) when the file is missing and ``missing_ok``.
    ``on_bytes(done, total)`` reports progress (``total`` from Content-Length, or None).
    """
    response = open_url(url, timeout, label, missing_ok=missing_ok)
    if response is None:
        return False
    with response, atomic_path(target) as tmp:
        digest = hashlib.new(algorithm)
        size = 0
        length = response.headers.get("Content-Length")
        total = int(length) if length is not None and length.isdigit() else None
        with tmp.open("wb") as out:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except _NETWORK_ERRORS as exc:
                    raise unreachable(url, exc, label) from exc
                if not chunk:
                    break
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
                if on_bytes is not None:
                    on_bytes(size, total)
        if total is not None and total != size:
            raise EcgcapError(f"download of {target.name} was cut short ({size} of {total} "
                              "bytes); run again to retry", input=label,
                              exit_code=EXIT_FAILURE)
        if expected is not None and digest.hexdigest() != expected:
            # a stale copy at target is known bad too: leave no file behind
            target.unlink(missing_ok=True)
            raise EcgcapError(f"checksum mismatch for {target.name} from {url} (expected "
                              f"{algorithm} {expected}, got {digest.hexdigest()}); nothing was "
                              "kept, run again or download it elsewhere", input=label,
                              exit_code=EXIT_FAILURE)
    return True


def extract_zip(archive: str | os.PathLike, dest: str | os.PathLike,
                place: Callable[[str], str | None] = lambda name: name) -> int:
    """Unpack ``archive`` into ``dest``, each member written atomically; return the count.

    ``place(member name)`` gives the member's path inside ``dest`` (None: skip it). Every
    member is checked first: absolute paths, ``..``, links and targets outside ``dest`` make
    the whole archive refused before anything is written.
    """
    archive, dest = Path(archive), Path(dest)
    root = dest.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            plan = []
            for info in zf.infolist():
                if info.is_dir():
                    continue
                check_name(info.filename, str(archive))
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise EcgcapError(f"refusing link {info.filename!r} in the archive",
                                      input=str(archive), exit_code=EXIT_FAILURE)
                where = place(info.filename)
                if where is None:
                    continue
                target = dest / check_name(where, str(archive))
                if not target.resolve().is_relative_to(root):
                    raise EcgcapError(f"refusing {info.filename!r}: it would land outside "
                                      f"{dest}", input=str(archive), exit_code=EXIT_FAILURE)
                plan.append((info, target))
            for info, target in plan:
                with zf.open(info) as src, atomic_path(target) as tmp, tmp.open("wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
    except zipfile.BadZipFile as exc:
        raise EcgcapError(f"not a usable zip archive ({exc})", input=str(archive),
                          exit_code=EXIT_FAILURE) from None
    return len(plan)
