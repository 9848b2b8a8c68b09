"""Resumable, checksum-verified downloads of PhysioNet databases (standard library only).

A database is fetched file by file from ``{base_url}/{slug}/``: its ``RECORDS`` list, its
``SHA256SUMS.txt`` when it publishes one, then ``record + extension`` for every record. Each
file lands under a temporary name, is checked against its SHA-256 and only then renamed, so
an interrupted or corrupted download never leaves a bad file where a good one is expected,
and a second run fetches only what is missing.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from ecgcap.runtime.errors import EXIT_FAILURE, EXIT_USAGE, EcgcapError
from ecgcap.runtime.files import atomic_path
from ecgcap.runtime.progress import progress

PHYSIONET_URL = "https://physionet.org/files"
CHECKSUMS_NAME = "SHA256SUMS.txt"

_CHUNK = 1 << 16
_USER_AGENT = "ecgcap (urllib)"
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
# Errors that mean "the network or the server is not there", raised by urlopen or by reads.
_NETWORK_ERRORS = (urllib.error.URLError, TimeoutError, ConnectionError,
                   http.client.HTTPException)


def sha256_file(path: str | os.PathLike) -> str:
    """Return the hex SHA-256 digest of the file at ``path``.

    Parameters
    ----------
    path : str or PathLike
        The file to hash; read in chunks, so size does not matter.

    Returns
    -------
    str
        64 lowercase hex digits.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _parse_checksums(text: str, source: str) -> dict[str, str]:
    sums: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(None, 1)
        if len(fields) != 2 or not _SHA256_RE.match(fields[0]):
            raise EcgcapError(f"line {lineno} is not '<sha256> <file name>': {line[:80]!r}",
                              input=source, exit_code=EXIT_FAILURE)
        name = fields[1].strip()
        if name.startswith("*"):  # sha256sum's binary-mode marker
            name = name[1:]
        sums[name] = fields[0].lower()
    return sums


def read_checksums(path: str | os.PathLike) -> dict[str, str]:
    """Parse a ``SHA256SUMS.txt`` file into ``{file name: sha256}``.

    Parameters
    ----------
    path : str or PathLike
        A file of ``<sha256> <name>`` lines (one or more spaces, optional ``*`` before the
        name as ``sha256sum -b`` writes it); blank lines and ``#`` comments are ignored.

    Returns
    -------
    dict of str to str
        File name (relative, as listed) to lowercase hex digest.

    Raises
    ------
    EcgcapError
        When a line is not a checksum line.
    """
    return _parse_checksums(Path(path).read_text(encoding="utf-8"), str(path))


def _check_name(name: str, slug: str) -> str:
    """Return ``name`` if it is a safe relative POSIX path, else raise EcgcapError."""
    parts = PurePosixPath(name).parts
    if (not name or "\\" in name or ":" in name or "\0" in name or name.startswith("/")
            or PurePosixPath(name).is_absolute() or ".." in parts or not parts):
        raise EcgcapError(f"refusing unsafe file name {name!r} (it could write outside the "
                          "destination folder)", input=slug, exit_code=EXIT_FAILURE)
    return name


def _unreachable(url: str, reason: object, slug: str) -> EcgcapError:
    return EcgcapError(f"cannot reach {url} ({reason}); download it elsewhere and point "
                       "--data-dir at the folder", input=slug, exit_code=EXIT_USAGE)


def _open(url: str, timeout: float, slug: str, *, missing_ok: bool = False):
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
                              "name, version and record names", input=slug,
                              exit_code=EXIT_USAGE) from exc
        raise EcgcapError(f"the server answered HTTP {exc.code} ({exc.reason}) for {url}",
                          input=slug, exit_code=EXIT_FAILURE) from exc
    except urllib.error.URLError as exc:
        # file:// mirrors report a missing file this way
        if isinstance(exc.reason, FileNotFoundError):
            if missing_ok:
                return None
            raise EcgcapError(f"{url} does not exist", input=slug,
                              exit_code=EXIT_USAGE) from exc
        raise _unreachable(url, exc.reason, slug) from exc
    except ValueError as exc:  # malformed URL
        raise EcgcapError(f"not a usable URL: {url} ({exc})", input=slug,
                          exit_code=EXIT_USAGE) from exc
    except _NETWORK_ERRORS as exc:
        raise _unreachable(url, exc, slug) from exc


def _fetch_to(url: str, target: Path, expected: str | None, timeout: float, slug: str, *,
              missing_ok: bool = False) -> bool:
    """Download ``url`` to ``target`` atomically, verifying ``expected`` before the rename.

    Returns False (writing nothing) when the file is missing and ``missing_ok``.
    """
    response = _open(url, timeout, slug, missing_ok=missing_ok)
    if response is None:
        return False
    with response, atomic_path(target) as tmp:
        digest = hashlib.sha256()
        size = 0
        with tmp.open("wb") as out:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except _NETWORK_ERRORS as exc:
                    raise _unreachable(url, exc, slug) from exc
                if not chunk:
                    break
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) != size:
            raise EcgcapError(f"download of {target.name} was cut short ({size} of {length} "
                              "bytes); run again to resume", input=slug,
                              exit_code=EXIT_FAILURE)
        if expected is not None and digest.hexdigest() != expected:
            # a stale copy at target is known bad too: leave no file behind
            target.unlink(missing_ok=True)
            raise EcgcapError(f"checksum mismatch for {target.name} from {url} (expected "
                              f"sha256 {expected}, got {digest.hexdigest()}); nothing was "
                              "kept, run again or download it elsewhere", input=slug,
                              exit_code=EXIT_FAILURE)
    return True


def _is_complete(path: Path, expected: str | None) -> bool:
    """A local file counts as done if its checksum matches (or, with none known, non-empty)."""
    if not path.is_file():
        return False
    if expected is None:
        return path.stat().st_size > 0
    return sha256_file(path) == expected


def download_database(slug: str, dest: str | Path, *, records: Sequence[str] | None = None,
                      extensions: Sequence[str] = (".hea", ".dat", ".atr"),
                      base_url: str = PHYSIONET_URL, extra_files: Sequence[str] = ("RECORDS",),
                      quiet: bool = False, timeout: float = 30.0) -> Path:
    """Download (or finish downloading) a PhysioNet database into ``dest``.

    Parameters
    ----------
    slug : str
        Database path with version under ``base_url``, e.g. ``"mitdb/1.0.0"``.
    dest : str or Path
        Folder to fill; created if needed. Files already there with the right checksum
        (or, when the database publishes none, non-empty) are not fetched again.
    records : sequence of str, optional
        Record names to get; default: every record listed in the database's ``RECORDS``.
    extensions : sequence of str
        File extensions fetched for each record.
    base_url : str
        Server root; the default is PhysioNet.
    extra_files : sequence of str
        Other files to fetch from the database folder.
    quiet : bool
        No progress bar.
    timeout : float
        Seconds to wait on the network before giving up.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    EcgcapError
        Exit code 2 when the server cannot be reached (the message suggests ``--data-dir``)
        or a file is not on it; exit code 1 on a checksum mismatch, a cut-short download or an
        unsafe file name from the server.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise EcgcapError("is a file, not a folder", input=str(dest))
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EcgcapError(f"cannot create the download folder ({exc.strerror})",
                          input=str(dest), exit_code=EXIT_FAILURE) from exc
    root_url = f"{base_url.rstrip('/')}/{slug.strip('/')}"

    # Checksums: a versioned slug never changes, so a saved list is reused as it is.
    sums_path = dest / CHECKSUMS_NAME
    checksums: dict[str, str] | None = None
    if sums_path.is_file() and sums_path.stat().st_size > 0:
        checksums = read_checksums(sums_path)
    elif _fetch_to(f"{root_url}/{CHECKSUMS_NAME}", sums_path, None, timeout, slug,
                   missing_ok=True):
        checksums = read_checksums(sums_path)

    def expected_sum(name: str) -> str | None:
        return checksums.get(name) if checksums is not None else None

    if records is None:
        records_path = dest / "RECORDS"
        if not _is_complete(records_path, expected_sum("RECORDS")):
            _fetch_to(f"{root_url}/RECORDS", records_path, expected_sum("RECORDS"), timeout,
                      slug)
        text = records_path.read_text(encoding="utf-8")
        records = [line.strip() for line in text.splitlines() if line.strip()]

    wanted = [_check_name(name, slug) for name in extra_files]
    for record in records:
        _check_name(record, slug)
        wanted.extend(_check_name(f"{record}{ext}", slug) for ext in extensions)
    wanted = list(dict.fromkeys(wanted))  # drop duplicates, keep order
    dest_root = dest.resolve()
    for name in wanted:
        if not (dest / name).resolve().is_relative_to(dest_root):
            raise EcgcapError(f"refusing {name!r}: it resolves outside {dest}", input=slug,
                              exit_code=EXIT_FAILURE)

    for name in progress(wanted, label=f"downloading {slug} to {dest}", quiet=quiet):
        target = dest / name
        expected = expected_sum(name)
        if _is_complete(target, expected):
            continue
        _fetch_to(f"{root_url}/{name}", target, expected, timeout, slug)
    return dest
