"""Resumable, checksum-verified downloads of PhysioNet databases (standard library only).

A database is fetched file by file from ``{base_url}/{slug}/``: its ``RECORDS`` list, its
``SHA256SUMS.txt`` when it publishes one, then ``record + extension`` for every record. Each
file lands under a temporary name, is checked against its SHA-256 and only then renamed, so
an interrupted or corrupted download never leaves a bad file where a good one is expected,
and a second run fetches only what is missing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from ecgcap.runtime.download import check_name, fetch, file_digest
from ecgcap.runtime.errors import EXIT_FAILURE, EcgcapError
from ecgcap.runtime.progress import progress

PHYSIONET_URL = "https://physionet.org/files"
CHECKSUMS_NAME = "SHA256SUMS.txt"

_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")


def sha256_file(path: str | os.PathLike) -> str:
    """Return the hex SHA-256 digest (64 lowercase hex digits) of the file at ``path``."""
    return file_digest(path, "sha256")


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
    elif fetch(f"{root_url}/{CHECKSUMS_NAME}", sums_path, None, timeout, slug,
                   missing_ok=True):
        checksums = read_checksums(sums_path)

    def expected_sum(name: str) -> str | None:
        return checksums.get(name) if checksums is not None else None

    if records is None:
        records_path = dest / "RECORDS"
        if not _is_complete(records_path, expected_sum("RECORDS")):
            fetch(f"{root_url}/RECORDS", records_path, expected_sum("RECORDS"), timeout,
                      slug)
        text = records_path.read_text(encoding="utf-8")
        records = [line.strip() for line in text.splitlines() if line.strip()]

    wanted = [check_name(name, slug) for name in extra_files]
    for record in records:
        check_name(record, slug)
        wanted.extend(check_name(f"{record}{ext}", slug) for ext in extensions)
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
        fetch(f"{root_url}/{name}", target, expected, timeout, slug)
    return dest
