"""Reading WFDB records, annotations, record lists and reference labels (files only)."""

from __future__ import annotations

import contextlib
import csv
import datetime
import hashlib
import os
import re
import tempfile
import warnings
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


# A WFDB record line: NAME[/SEGMENTS] SIGNALS [FS[/COUNTER[(BASE)]] [SAMPLES [TIME [DATE]]]].
_NUMBER = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"
_FS_FIELD = re.compile(rf"^{_NUMBER}(/{_NUMBER}(\({_NUMBER}\))?)?$")
# wfdb's byte counts per sample of each format (FLAC formats 508/516/524 are compressed: 0).
_BYTES_PER_SAMPLE = {"8": 1, "16": 2, "24": 3, "32": 4, "61": 2, "80": 1, "160": 2, "212": 1.5,
                     "310": 4 / 3, "311": 4 / 3}


def _lines(text: str) -> list[str]:
    """A header's lines that are neither blank nor comments."""
    return [line for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def check_header_text(text: str, name: str) -> None:
    """Refuse a header whose record line or signal lines are missing or malformed, in words.

    wfdb answers such headers with ``list index out of range`` and the like; this says which
    field is wrong. ``name`` (the header's path) prefixes the message.
    """
    lines = _lines(text)
    if not lines:
        raise EcgcapError("empty header file" if not text.strip() else
                          "no record line (only comments)", input=name)
    fields = lines[0].split()
    shown = lines[0].strip() if len(lines[0]) <= 60 else lines[0].strip()[:57] + "..."
    if len(fields) < 2:
        raise EcgcapError(f"the record line {shown!r} has no number of signals (expected "
                          "'NAME SIGNALS [FS [SAMPLES [TIME [DATE]]]]')", input=name)
    problems = [(1, "number of signals", r"^\d+$"), (2, "sampling frequency", _FS_FIELD),
                (3, "number of samples", r"^\d+$")]
    for i, what, pattern in problems:
        if len(fields) > i and not re.match(pattern, fields[i]):
            raise EcgcapError(f"the record line {shown!r}: {what} {fields[i]!r} is not a "
                              "number", input=name)
    if len(fields) > 2 and float(re.split(r"[/(]", fields[2])[0]) <= 0:
        raise EcgcapError(f"the record line {shown!r}: sampling frequency {fields[2]!r} is "
                          "not positive", input=name)
    if "/" in fields[0]:
        return  # a multi-segment record: its lines list segments, not signals
    n_sig = int(fields[1])
    if len(lines) - 1 < n_sig:
        found = len(lines) - 1
        lines_follow = "1 signal line follows" if found == 1 else f"{found} signal lines follow"
        raise EcgcapError(f"the record line gives {n_sig} signals but {lines_follow}",
                          input=name)
    for lineno, line in enumerate(lines[1:n_sig + 1], 2):
        if len(line.split()) < 2:
            raise EcgcapError(f"signal line {lineno} {line.strip()!r} has no format (expected "
                              "'FILE FORMAT ...')", input=name)


def lenient_base_time(text: str, name: str) -> str:
    """Drop a base time or date that wfdb cannot read (``25:61:00``, ``31/02/2001``) from the
    record line, with a warning naming it: they only place the record in time."""
    from wfdb.io import _header

    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines)
                  if line.strip() and not line.lstrip().startswith("#")), None)
    if first is None:
        return text
    fields = lines[first].split()
    if len(fields) <= 4:
        return text
    time, date = fields[4], fields[5] if len(fields) > 5 else None
    try:
        match = _header.rx_record.match(lines[first])
        if match is None or (match.group(8) or "") != time or (match.group(9) or None) != date:
            raise ValueError
        _header.wfdb_strptime(time)
        if date is not None:
            datetime.datetime.strptime(date, "%d/%m/%Y")
    except ValueError:
        warnings.warn(f"{name}: base time and date {' '.join(fields[4:])!r} are not a valid "
                      "WFDB time (HH:MM:SS) and date (DD/MM/YYYY); ignored", stacklevel=3)
        lines[first] = " ".join(fields[:4])
        return "\n".join(lines) + "\n"
    return text


@contextlib.contextmanager
def _wfdb_readable(base: Path) -> Iterator[str]:
    """The record name wfdb should read: ``base`` itself, or a temporary copy of its header
    with a CinC 2017 style date rewritten or an unreadable base time or date dropped (the
    signal files linked beside it). A malformed header is refused here, in words."""
    header = base.with_suffix(".hea")
    try:
        text = header.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise EcgcapError(f"cannot read the header file ({exc.strerror})", input=str(header)) \
            from None
    check_header_text(text, str(header))
    fixed = lenient_base_time(fix_header_text(text), str(header))
    if fixed == text:
        yield str(base)
        return
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / header.name).write_text(fixed)
        for f in base.parent.glob(base.name + ".*"):
            if f.suffix != ".hea":
                os.symlink(f.resolve(), Path(tmp) / f.name)
        yield str(Path(tmp) / base.name)


def signal_file_sizes(header: wfdb.Record, folder: str | os.PathLike
                      ) -> list[tuple[Path, int, int, str]]:
    """``(path, size in bytes, bytes the header needs, what the header says)`` for each signal
    file a header names (those that exist and whose size the format fixes).

    ``what`` reads like ``2 signals x 650,000 samples, format 212``.
    """
    if not getattr(header, "sig_len", None) or not getattr(header, "file_name", None):
        return []
    files: dict[str, list[int]] = {}
    for i, file_name in enumerate(header.file_name):
        files.setdefault(file_name, []).append(i)
    out = []
    for file_name, signals in files.items():
        path = Path(folder) / file_name
        fmts = [str(header.fmt[i]) for i in signals]
        spf = [int((header.samps_per_frame or [1] * header.n_sig)[i] or 1) for i in signals]
        if not path.is_file() or any(not _BYTES_PER_SAMPLE.get(f) for f in fmts):
            continue
        offset = int((header.byte_offset or [None] * header.n_sig)[signals[0]] or 0)
        frame = sum(n * _BYTES_PER_SAMPLE[f] for n, f in zip(spf, fmts, strict=True))
        need = offset + int(np.ceil(round(header.sig_len * frame, 6)))
        n = len(signals)
        unit = "samples" if set(spf) == {1} else f"frames of {sum(spf)} samples"
        what = (f"{n} signal{'s' if n != 1 else ''} x {header.sig_len:,} {unit}, format"
                f"{'s' if len(set(fmts)) > 1 else ''} {', '.join(dict.fromkeys(fmts))}")
        if offset:
            what += f", after a {offset:,}-byte prefix"
        out.append((path, path.stat().st_size, need, what))
    return out


def check_signal_files(header: wfdb.Record, folder: str | os.PathLike) -> None:
    """Refuse a signal file shorter than its header says (a download cut short, or a header
    written for another length, format or number of signals), in bytes and the header's
    words: ``100.dat: 700,000 bytes, the header needs 1,950,000 (2 signals x 650,000
    samples, format 212)``."""
    for path, size, need, what in signal_file_sizes(header, folder):
        if size < need:
            raise EcgcapError(f"{size:,} bytes, the header needs {need:,} ({what})",
                              input=str(path))


def _read_header(name: str, base: Path) -> wfdb.Record:
    """wfdb's reading of the (checked) header ``name`` of record ``base``, with its signal
    files checked to be there and long enough."""
    header = base.with_suffix(".hea")
    try:
        head = wfdb.rdheader(name)
    except (ValueError, IndexError, KeyError, TypeError, AttributeError) as exc:
        raise EcgcapError(f"not a header wfdb can read ({exc})", input=str(header)) from None
    missing = [f for f in dict.fromkeys(getattr(head, "file_name", None) or [])
               if not (base.parent / f).is_file()]
    if missing:
        raise EcgcapError(f"signal file missing ({missing[0]})", input=str(base))
    check_signal_files(head, base.parent)
    return head


def check_record(path: str | os.PathLike) -> None:
    """Check what can be checked of a record without reading its samples: the header is
    there and well formed, its signal files are there and as long as it says. Raises the
    error :func:`read_record` would raise for these."""
    base = _record_base(path)
    if not base.with_suffix(".hea").is_file():
        what = "no such record folder" if not base.parent.is_dir() else "no header file (.hea)"
        raise EcgcapError(what, input=str(base))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # read_record warns, when the record is read
        with _wfdb_readable(base) as name:
            _read_header(name, base)


def read_record(path: str | os.PathLike) -> wfdb.Record:
    """Read a WFDB record (``path`` without extension, or its ``.hea``) with physical units.

    Copes with the ISO dates of the CinC 2017 headers, and drops (with a warning) a base time
    or date wfdb cannot read. Errors name the file and the problem: an empty or malformed
    header, a missing signal file, a signal file shorter than its header says (truncated, or
    a header for another length, format or number of signals, in bytes), or samples that do
    not match the header's checksums (:func:`check_checksums`).
    """
    base = _record_base(path)
    header = base.with_suffix(".hea")
    if not header.is_file():
        what = "no such record folder" if not base.parent.is_dir() else "no header file (.hea)"
        raise EcgcapError(what, input=str(base))
    with _wfdb_readable(base) as name:
        head = _read_header(name, base)
        try:
            record = wfdb.rdrecord(name, physical=False)
        except FileNotFoundError as exc:
            raise EcgcapError(f"signal file missing ({Path(exc.filename or '').name})",
                              input=str(base)) from None
        except (ValueError, IndexError):
            # what the size check cannot see (a format with compressed samples, say)
            raise EcgcapError("the signal file does not match its header (another length, "
                              "format or number of signals)", input=str(base)) from None
        except OSError as exc:
            raise EcgcapError(f"unreadable record ({exc.strerror or exc})",
                              input=str(base)) from None
    check_checksums(record, str(base), signal_file_sizes(head, base.parent))
    record.p_signal, record.d_signal = record.dac(), None
    return record


def check_checksums(record: wfdb.Record, name: str,
                    sizes: list[tuple[Path, int, int, str]] | None = None) -> None:
    """Refuse a signal file whose samples do not add up to the checksums in its header (a
    corrupt ``.dat``), as WFDB's own tools check them. A checksum of 0 is taken as "none
    given" (CinC 2017 headers write 0 for every recording). ``sizes`` (from
    :func:`signal_file_sizes`) lets the message say when the file is longer than the header
    says, i.e. the header describes another signal file."""
    given = record.checksum or []
    if record.d_signal is None or not any(given):
        return
    actual = record.calc_checksum()
    for lead, want, got in zip(record.sig_name, given, actual, strict=False):
        if want and (int(want) - int(got)) % 65536:
            for path, size, need, what in sizes or []:
                if size != need:
                    raise EcgcapError(f"{size:,} bytes where the header needs {need:,} ({what}), "
                                      "and the samples do not add up to its checksums: the "
                                      "header describes another signal file", input=str(path))
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
