"""ECG commands in the user's words: each bad record is one line naming the file and the
problem (exit code 2), answered before TensorFlow is imported where no model is needed; a
batch classifies every good record past the bad ones; a flaw confined to one annotation or
one header field costs a warning, not the record; beat records end with a summary; and
``score_ecg`` never imports TensorFlow.

Records are real MIT-BIH and CinC 2017 recordings (cropped or copied, then damaged).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import wfdb

from conftest import run_module
from ecgcap.ecg import io

PROG = "python -m ecgcap.classify_ecg"


def _main_in_subprocess(module: str, *args: str) -> subprocess.CompletedProcess:
    """``module.main(args)`` in a fresh interpreter, which then prints its exit code and
    whether TensorFlow or Keras were imported."""
    code = (f"import sys; from {module} import main; rc = main({list(args)!r}); "
            "print(rc, sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)


def _ours(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("python -m ecgcap.")]


@pytest.fixture()
def record_copy(mitdb_dir, tmp_path) -> Path:
    for ext in (".hea", ".dat", ".atr"):
        shutil.copy(mitdb_dir / f"100{ext}", tmp_path / f"100{ext}")
    return tmp_path / "100"


def _break(kind: str, record: Path) -> str:
    """Damage the copy of record 100; return the exact error line expected."""
    hea, dat = record.with_suffix(".hea"), record.with_suffix(".dat")
    if kind == "0-byte header":
        hea.write_bytes(b"")
        return f"{hea}: empty header file"
    if kind == "truncated signal":
        dat.write_bytes(dat.read_bytes()[:700_000])
        return (f"{dat}: 700,000 bytes, the header needs 1,950,000 (2 signals x 650,000 "
                "samples, format 212)")
    if kind == "header with another format":
        hea.write_text(hea.read_text().replace(" 212 ", " 16 "))
        return (f"{dat}: 1,950,000 bytes, the header needs 2,600,000 (2 signals x 650,000 "
                "samples, format 16)")
    if kind == "header with another number of signals":
        lines = hea.read_text().splitlines()
        lines[0] = lines[0].replace("100 2 ", "100 3 ", 1)
        hea.write_text("\n".join(lines) + "\n")
        return f"{hea}: the record line gives 3 signals but 2 signal lines follow"
    if kind == "sampling frequency not a number":
        hea.write_text(hea.read_text().replace("100 2 360 ", "100 2 3x0 ", 1))
        return (f"{hea}: the record line '100 2 3x0 650000': sampling frequency '3x0' is not "
                "a number")
    if kind == "sampling frequency zero":
        hea.write_text(hea.read_text().replace("100 2 360 ", "100 2 0 ", 1))
        return (f"{hea}: the record line '100 2 0 650000': sampling frequency '0' is not "
                "positive")
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["0-byte header", "truncated signal",
                                  "header with another format",
                                  "header with another number of signals",
                                  "sampling frequency not a number",
                                  "sampling frequency zero"])
def test_a_bad_record_is_one_line_before_tensorflow(kind, record_copy):
    expected = _break(kind, record_copy)
    result = _main_in_subprocess("ecgcap.classify_ecg", str(record_copy), "--device", "cpu")
    assert result.stderr.splitlines() == [f"{PROG}: error: {expected}"], result.stderr[-2000:]
    assert result.stdout.strip() == "2 []"  # exit code 2, neither TensorFlow nor Keras loaded


def test_a_folder_of_recordings_with_bad_ones_classifies_the_good_ones(cinc2017_dir, tmp_path):
    folder = tmp_path / "cinc"
    folder.mkdir()
    good, cut = ["A00001", "A00002"], "A00005"
    for name in [*good, cut]:
        for ext in (".hea", ".mat"):
            shutil.copy(cinc2017_dir / f"{name}{ext}", folder / f"{name}{ext}")
    mat = folder / f"{cut}.mat"
    size = mat.stat().st_size
    mat.write_bytes(mat.read_bytes()[:5000])
    (folder / "A99999.hea").write_bytes(b"")  # a 0-byte header among them
    result = run_module("ecgcap.classify_ecg", str(folder), "--task", "rhythm", "--format",
                        "json", "--device", "cpu")
    assert result.returncode == 2, result.stderr[-2000:]
    out = json.loads(result.stdout)  # valid and complete for the good recordings
    assert [r["record"] for r in out] == good
    assert all(r["label"] in "NAO~" for r in out)
    errors = [line for line in _ours(result.stderr) if ": error: " in line]
    assert errors == [
        f"{PROG}: error: {mat}: 5,000 bytes, the header needs {size:,} (1 signal x "
        f"{(size - 24) // 2:,} samples, format 16, after a 24-byte prefix)",
        f"{PROG}: error: {folder / 'A99999.hea'}: empty header file"]
    assert "2 records: " in result.stderr  # the label counts


def test_annotations_past_the_signal_warn_and_the_beats_are_summarised(mitdb_dir, tmp_path):
    """A 40 s crop of record 100 beside the full 30-minute .atr: the annotations past its end
    cost one warning, the beats inside are labelled, and the table ends with a summary."""
    rec = wfdb.rdrecord(str(mitdb_dir / "100"), sampto=360 * 40, physical=False)
    wfdb.wrsamp("100", fs=rec.fs, units=rec.units, sig_name=rec.sig_name, d_signal=rec.d_signal,
                fmt=rec.fmt, adc_gain=rec.adc_gain, baseline=rec.baseline,
                write_dir=str(tmp_path))
    shutil.copy(mitdb_dir / "100.atr", tmp_path / "100.atr")
    result = run_module("ecgcap.classify_ecg", str(tmp_path / "100"), "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in _ours(result.stderr) if ": warning: " in line]
    assert len(warnings) == 1 and f"{tmp_path / '100'}.atr: " in warnings[0]
    assert "beat annotations lie outside the signal (samples 0..14399" in warnings[0]
    assert "skipped" in warnings[0]
    rows, footer = result.stdout.split("\n\n")
    assert 40 <= len(rows.splitlines()) - 1 <= 55  # about 75 beats a minute
    lines = footer.strip().splitlines()
    assert lines[0].startswith("100: ") and "beats, mean heart rate 7" in lines[0]
    assert lines[1].startswith("  N ") and "%)" in lines[1] and "V 0" in lines[1]
    assert lines[2] == "  S at 0:05"  # record 100's first A beat, 5 s in
    assert lines[3].startswith("  ectopic beats (S): 1 in 1 of 1 minutes; most in 0:00-1:00")


def test_score_ecg_never_imports_tensorflow(mitdb_dir, tmp_path):
    ann = io.read_annotation(mitdb_dir / "100")
    wfdb.wrann("100", "copy", np.asarray(ann.sample), symbol=ann.symbol, fs=360,
               write_dir=str(tmp_path))
    result = _main_in_subprocess("ecgcap.score_ecg", str(mitdb_dir / "100"), "--annotator",
                                 "copy", "--ann-dir", str(tmp_path))
    assert result.stdout.strip().splitlines()[-1] == "0 []", result.stderr[-2000:]
    assert "matched beats 2273" in result.stdout
    result = _main_in_subprocess("ecgcap.score_ecg", str(mitdb_dir / "100"), "--annotator",
                                 "nosuch")
    assert result.stderr.splitlines() == [
        f"python -m ecgcap.score_ecg: error: {mitdb_dir / '100'}: no annotation file .nosuch"]
    assert result.stdout.strip() == "2 []"


def test_an_irregular_base_time_is_read_with_a_warning(record_copy):
    header = record_copy.with_suffix(".hea")
    header.write_text(header.read_text().replace("100 2 360 650000",
                                                 "100 2 360 650000 25:61:00 31/02/2001", 1))
    with pytest.warns(UserWarning, match=r"100\.hea: base time and date '25:61:00 31/02/2001' "
                                         r"are not a valid WFDB time"):
        rec = io.read_record(record_copy)
    assert rec.sig_len == 650_000 and rec.base_time is None


def test_a_single_lead_recording_without_the_lead_is_read_on_it_and_told_of_the_rhythm_task(
        cinc2017_dir):
    from ecgcap.ecg.inference import _beat_lead
    from ecgcap.runtime.errors import EcgcapError

    rec = io.read_record(cinc2017_dir / "A00001")
    with pytest.warns(UserWarning) as caught:
        x, used = _beat_lead(rec, "MLII", "A00001")
    assert used == "ECG" and len(x) == rec.sig_len
    assert [str(w.message) for w in caught] == [
        "A00001: no lead 'MLII' (leads: ECG); classified on the first lead, ECG, which the "
        "model was not trained on (for its rhythm use --task rhythm)"]
    with pytest.raises(EcgcapError) as err:  # asked for by name: still an error
        _beat_lead(rec, "MLII", "A00001", explicit=True)
    assert str(err.value) == "--lead: no lead 'MLII' (leads: ECG)"


def test_help_explains_the_labels_and_the_formats():
    from ecgcap.classify_ecg import build_parser

    text = build_parser().format_help()
    for line in ["    V  ventricular ectopic beat", "    S  supraventricular ectopic beat",
                 "    A  atrial fibrillation", "    ~  too noisy to classify",
                 "exit codes: 0 every record classified; 2 bad usage, or records"]:
        assert line in text
    assert "json: a list of per-record" in " ".join(text.split())


def test_beat_summary_counts_rates_and_places_the_ectopic_beats():
    from ecgcap.ecg.inference import beat_summary, format_beat_summary

    fs = 100.0
    labels = ["N"] * 150
    labels[10] = labels[130] = "V"
    labels[70] = "S"
    beats = [{"sample": int(i * fs), "label": lab} for i, lab in enumerate(labels)]  # 60/min
    summary = beat_summary({"record": "r", "fs": fs, "beats": beats})
    assert summary["counts"] == {"N": 147, "S": 1, "V": 2, "F": 0, "Q": 0}
    assert summary["heart_rate"] == 60.0 and summary["per_minute"] == [1, 1, 1]
    assert format_beat_summary(summary) == [
        "r: 150 beats, mean heart rate 60/min",
        "  N 147 (98.0%), S 1 (0.7%), V 2 (1.3%), F 0, Q 0",
        "  S at 1:10",
        "  V at 0:10, 2:10",
        "  ectopic beats (S, V): 3 in 3 of 3 minutes; most in 0:00-1:00 (1), 1:00-2:00 (1), "
        "2:00-3:00 (1)"]
