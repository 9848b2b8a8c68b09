"""Reading records, annotations, RECORDS and REFERENCE.csv, on real files and broken copies."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ecgcap.ecg import io
from ecgcap.runtime.errors import EcgcapError


def test_read_real_mitdb_record(mitdb_dir):
    rec = io.read_record(mitdb_dir / "100")
    assert rec.fs == 360 and rec.sig_len == 650_000 and rec.sig_name == ["MLII", "V5"]
    assert io.signal_of(rec).dtype == np.float32
    assert io.read_record(mitdb_dir / "100.hea").sig_len == 650_000
    assert len(io.list_records(mitdb_dir)) == 48


def test_cinc2017_iso_date_header_is_read_as_published(cinc2017_dir):
    first = (cinc2017_dir / "A00001.hea").read_text().splitlines()[0]
    assert "2014-05-08" in first  # the quirk is really in the file
    assert io.fix_header_text(first).startswith("A00001 1 300 9000 05:05:15 08/05/2014")
    rec = io.read_record(cinc2017_dir / "A00001")  # format 16+24 in a .mat file
    assert rec.fs == 300 and rec.sig_len == 9000 and rec.n_sig == 1
    assert np.isfinite(io.signal_of(rec)).all() and np.ptp(io.signal_of(rec)) > 0.5


def test_reference_csv_parser(cinc2017_dir, tmp_path):
    labels = io.read_reference(cinc2017_dir / "REFERENCE.csv")
    assert len(labels) == 3022 and labels["A00001"] == "N" and labels["A00005"] == "A"
    counts = {c: sum(v == c for v in labels.values()) for c in "NAO~"}
    assert counts == {"N": 1790, "A": 261, "O": 870, "~": 101}
    bad = tmp_path / "REFERENCE.csv"
    bad.write_text("A00001,N\nA00002,X\n")
    with pytest.raises(EcgcapError, match="line 2"):
        io.read_reference(bad)
    bad.write_text("\n")
    with pytest.raises(EcgcapError, match="empty"):
        io.read_reference(bad)


def test_missing_record_header_signal_and_annotation(mitdb_dir, tmp_path):
    with pytest.raises(EcgcapError, match="no such record folder"):
        io.read_record(tmp_path / "nowhere" / "100")
    with pytest.raises(EcgcapError, match="no header file"):
        io.read_record(tmp_path / "100")
    shutil.copy(mitdb_dir / "100.hea", tmp_path / "100.hea")
    with pytest.raises(EcgcapError, match="signal file missing"):
        io.read_record(tmp_path / "100")
    with pytest.raises(EcgcapError, match="no annotation file .atr"):
        io.read_annotation(tmp_path / "100")


def test_empty_or_missing_records_list(tmp_path):
    with pytest.raises(EcgcapError, match="no RECORDS file"):
        io.list_records(tmp_path)
    (tmp_path / "RECORDS").write_text("\n\n")
    with pytest.raises(EcgcapError, match="RECORDS list is empty"):
        io.list_records(tmp_path)
