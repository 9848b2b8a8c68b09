"""Reading WFDB records, annotations, record lists and reference labels (files only)."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import wfdb

from ecgcap.runtime.errors import EcgcapError

# CinC 2017 headers put an ISO date before the time ("A00001 1 300 9000 2014-05-08 05:05:15"),
# which is not WFDB syntax (wfdb-python issue #128). WFDB wants "HH:MM:SS DD/MM/YYYY".
_ISO_DATE_TIME = re.compile(r"^(\S+ \d+ \S+ \d+) (\d{4})-(\d{2})-(\d{2}) (\d{1,2}:\d{2}:\d{2})")


def list_records(db_dir: str | os.PathLike) -> list[str]:
    """Record names from the database's ``RECORDS`` file, in file order."""
    path = Path(db_dir) / "RECORDS"
    if not path.is_file():
        raise EcgcapError("no RECORDS file: not a WFDB database folder", input=str(db_dir))
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise EcgcapError("the RECORDS list is empty", input=str(path))
    return names


def _record_base(path: str | os.PathLike) -> Path:
    """``100``, ``100.hea`` or ``100.dat`` all name the record ``100``."""
    path = Path(path)
    if path.suffix in (".hea", ".dat", ".atr", ".mat"):
        path = path.with_suffix("")
    return path


def fix_header_text(text: str) -> str:
    """Rewrite a CinC 2017 style ISO date in a header's record line into WFDB syntax."""
    lines = text.splitlines()
    if lines:
        m = _ISO_DATE_TIME.match(lines[0])
        if m:
            head, year, month, day, time = m.groups()
            lines[0] = f"{head} {time} {day}/{month}/{year}"
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _wfdb_readable(base: Path) -> Iterator[str]:
    """The record name wfdb should read: ``base`` itself, or a temporary copy of its header
    with a CinC 2017 style date rewritten (the signal files linked beside it)."""
    header = base.with_suffix(".hea")
    text = header.read_text(errors="replace")
    fixed = fix_header_text(text)
    if fixed == text:
        yield str(base)
        return
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / header.name).write_text(fixed)
        for f in base.parent.glob(base.name + ".*"):
            if f.suffix != ".hea":
                os.symlink(f.resolve(), Path(tmp) / f.name)
        yield str(Path(tmp) / base.name)


def read_record(path: str | os.PathLike) -> wfdb.Record:
    """Read a WFDB record (``path`` without extension, or its ``.hea``) with physical units.

    Copes with the ISO dates of the CinC 2017 headers. Errors name the record and the problem:
    a header wfdb cannot parse, a missing signal file, a signal file that does not match
    its header (truncated, or another length, format or number of signals), or samples that
    do not match the header's checksums (:func:`check_checksums`).
    """
    base = _record_base(path)
    header = base.with_suffix(".hea")
    if not header.is_file():
        what = "no such record folder" if not base.parent.is_dir() else "no header file (.hea)"
        raise EcgcapError(what, input=str(base))
    with _wfdb_readable(base) as name:
        try:
            wfdb.rdheader(name)
        except (ValueError, IndexError, KeyError, TypeError, AttributeError) as exc:
            raise EcgcapError(f"unreadable header ({exc})", input=str(header)) from None
        try:
            record = wfdb.rdrecord(name, physical=False)
        except FileNotFoundError as exc:
            raise EcgcapError(f"signal file missing ({Path(exc.filename or '').name})",
                              input=str(base)) from None
        except (ValueError, IndexError) as exc:
            # wfdb reads samples by the header's length, format and signal count, so a short
            # or mismatched signal file surfaces here ("Samples were not loaded correctly")
            raise EcgcapError("the signal file does not match its header (truncated, or "
                              f"another length, format or number of signals): {exc}",
                              input=str(base)) from None
        except OSError as exc:
            raise EcgcapError(f"unreadable record ({exc})", input=str(base)) from None
    check_checksums(record, str(base))
    record.p_signal, record.d_signal = record.dac(), None
    return record


def check_checksums(record: wfdb.Record, name: str) -> None:
    """Refuse a signal file whose samples do not add up to the checksums in its header (a
    corrupt ``.dat``), as WFDB's own tools check them. A checksum of 0 is taken as "none
    given" (CinC 2017 headers write 0 for every recording)."""
    given = record.checksum or []
    if record.d_signal is None or not any(given):
        return
    actual = record.calc_checksum()
    for lead, want, got in zip(record.sig_name, given, actual, strict=False):
        if want and (int(want) - int(got)) % 65536:
            raise EcgcapError(f"the samples of {lead} do not add up to the header's checksum "
                              "(a corrupt signal file, or a header with the wrong format or "
                              "number of signals)", input=name)


def source_fingerprint(path: str | os.PathLike,
                       suffixes: tuple[str, ...] = (".hea", ".dat", ".mat", ".atr")) -> str:
    """A short digest of a record's files (resolved path, size, modification time), for
    caches of what was prepared from them."""
    base = _record_base(path)
    parts = []
    for suffix in suffixes:
        f = base.with_name(base.name + suffix)
        with contextlib.suppress(OSError):
            st = f.stat()
            parts.append(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def read_annotation(path: str | os.PathLike, extension: str = "atr") -> wfdb.Annotation:
    """Read the annotation file ``<record>.<extension>``."""
    base = _record_base(path)
    ann = base.with_name(f"{base.name}.{extension}")
    if not ann.is_file():
        raise EcgcapError(f"no annotation file .{extension}", input=str(base))
    try:
        return wfdb.rdann(str(base), extension)
    except (ValueError, IndexError, OSError) as exc:
        raise EcgcapError(f"unreadable annotation file ({exc})", input=str(ann)) from None


def read_reference(path: str | os.PathLike, classes: tuple[str, ...] = ("N", "A", "O", "~")
                   ) -> dict[str, str]:
    """Parse a challenge ``REFERENCE.csv`` (``record,label`` lines) into ``{record: label}``."""
    path = Path(path)
    if not path.is_file():
        raise EcgcapError("no reference file", input=str(path))
    labels: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for lineno, row in enumerate(csv.reader(fh), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 2 or row[1].strip() not in classes:
                raise EcgcapError(f"line {lineno}: expected 'record,label' with a label in "
                                  f"{', '.join(classes)}, got {','.join(row)!r}", input=str(path))
            labels[row[0].strip()] = row[1].strip()
    if not labels:
        raise EcgcapError("the reference file is empty", input=str(path))
    return labels


def signal_of(record: wfdb.Record) -> np.ndarray:
    """The record's physical signal as float32 (samples, leads)."""
    if record.p_signal is None:
        raise EcgcapError("record has no physical signal", input=record.record_name)
    return np.asarray(record.p_signal, dtype=np.float32)
