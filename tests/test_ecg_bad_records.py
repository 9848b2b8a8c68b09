"""Bad ECG records through the public commands: one line naming the record, exit code 2,
nothing written; unknown annotation symbols are ignored with a count.

Records are copies of real MIT-BIH records, damaged the way downloads and disks damage them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import wfdb

from conftest import run_module
from ecgcap.ecg import io
from ecgcap.ecg.processing import describe_ignored, unknown_symbols
from ecgcap.runtime.errors import EcgcapError


@pytest.fixture()
def record_copy(mitdb_dir, tmp_path) -> Path:
    """A copy of record 100 (header, signal, annotations) to damage."""
    for ext in (".hea", ".dat", ".atr"):
        shutil.copy(mitdb_dir / f"100{ext}", tmp_path / f"100{ext}")
    return tmp_path / "100"


def _classify(record: Path, out_dir: Path, *extra: str):
    return run_module("ecgcap.classify_ecg", str(record), "--format", "wfdb", "--out-dir",
                      str(out_dir), "--device", "cpu", *extra)


def _one_line_error(result, *phrases: str) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    ours = [line for line in result.stderr.splitlines() if "ecgcap" in line]
    assert len(ours) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and not result.stdout.strip()
    for phrase in phrases:
        assert phrase in ours[0], ours[0]
    return ours[0]


def test_truncated_signal_file_is_refused_by_name(record_copy, tmp_path):
    dat = record_copy.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:100_000])  # a download cut short
    out = tmp_path / "out"
    _one_line_error(_classify(record_copy, out), f"{dat}: 100,000 bytes, the header needs "
                    "1,950,000 (2 signals x 650,000 samples, format 212)")
    assert not out.exists()
    with pytest.raises(EcgcapError, match="100.dat: 100,000 bytes, the header needs"):
        io.read_record(record_copy)


def test_header_that_disagrees_with_the_signal_is_refused(record_copy):
    header = record_copy.with_suffix(".hea")
    lines = header.read_text().splitlines()
    name, n_sig, fs, length = lines[0].split()[:4]
    lines[0] = lines[0].replace(f"{fs} {length}", f"{fs} {int(length) * 2}", 1)  # length
    header.write_text("\n".join(lines) + "\n")
    with pytest.raises(EcgcapError, match=r"100\.dat: 1,950,000 bytes, the header needs "
                       r"3,900,000 \(2 signals x 1,300,000 samples, format 212\)"):
        io.read_record(record_copy)
    lines = header.read_text().splitlines()
    lines[1] = lines[1].replace(" 212 ", " 16 ", 1)  # format
    lines[2] = lines[2].replace(" 212 ", " 16 ", 1)
    lines[0] = lines[0].replace(str(int(length) * 2), length)
    header.write_text("\n".join(lines) + "\n")
    with pytest.raises(EcgcapError, match=r"the header needs 2,600,000 \(2 signals x 650,000 "
                                          r"samples, format 16\)"):
        io.read_record(record_copy)
    lines[0] = lines[0].replace(length, str(int(length) * 3 // 4))  # shorter, right format
    lines[1] = lines[1].replace(" 16 ", " 212 ", 1)
    lines[2] = lines[2].replace(" 16 ", " 212 ", 1)
    header.write_text("\n".join(lines) + "\n")
    with pytest.raises(EcgcapError, match="the header describes another signal file"):
        io.read_record(record_copy)


def test_unparseable_header_is_named(record_copy):
    record_copy.with_suffix(".hea").write_text("100 two 360 650000\nnot a signal line\n")
    with pytest.raises(EcgcapError, match=r"100\.hea: the record line '100 two 360 650000': "
                                          "number of signals 'two' is not a number"):
        io.read_record(record_copy)


def test_unknown_annotation_symbols_are_ignored_with_a_count(record_copy, tmp_path):
    ann = wfdb.rdann(str(record_copy), "atr", sampto=20_000)
    symbols = list(ann.symbol)
    symbols[3] = symbols[7] = "X"  # not in WFDB's table of codes
    symbols[5] = "%"
    custom = {"label_store": [42, 43], "symbol": ["X", "%"],
              "description": ["site-specific X", "site-specific %"]}
    import pandas as pd

    wfdb.wrann("100", "atr", np.asarray(ann.sample), symbol=symbols,
               custom_labels=pd.DataFrame(custom), write_dir=str(tmp_path))
    assert unknown_symbols(wfdb.rdann(str(record_copy), "atr").symbol) == {"X": 2, "%": 1}
    assert describe_ignored({"X": 2, "%": 1}) == \
        "3 annotations with unknown symbols ignored ('%' 1, 'X' 2)"

    out = tmp_path / "out"
    result = _classify(record_copy, out, "--annotations", "atr")
    assert result.returncode == 0, result.stderr[-2000:]
    warning = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warning) == 1 and "3 annotations with unknown symbols ignored" in warning[0]
    samples = np.asarray(ann.sample)
    beats = [i for i, s in enumerate(symbols) if s in "NLRejAaJSVEF/fQ"]
    written = set(wfdb.rdann(str(out / "100"), "ecgcap").sample.tolist())
    assert not written & {int(samples[i]) for i in (3, 5, 7)}  # the unknown ones: ignored
    classified = [i for i in beats if int(samples[i]) in written]
    assert len(classified) >= len(beats) - 1  # all known beats (but one too near the start)

    from ecgcap.ecg.databases import get_database
    from ecgcap.ecg.dataset import BeatConfig, prepare_record

    with pytest.warns(UserWarning, match="3 annotations with unknown symbols ignored"):
        part = prepare_record(record_copy, get_database("mitdb"), BeatConfig())
    assert len(part["label"]) > 0


def test_model_needing_arbitrary_code_is_refused_in_safe_mode(mitdb_dir, tmp_path):
    import keras

    from ecgcap.runtime.modelfile import save_model

    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    path = tmp_path / "lambda.keras"
    save_model(model, path, {"kind": "ecg-beats", "db": "mitdb", "classes": ["N"]})
    result = run_module("ecgcap.classify_ecg", str(mitdb_dir / "100"), "--model", str(path),
                        "--device", "cpu")
    _one_line_error(result, str(path), "cannot load the model")


def test_record_without_the_lead_is_read_on_its_first_lead_and_a_missing_lead_named(
        mitdb_dir, tmp_path):
    result = run_module("ecgcap.classify_ecg", str(mitdb_dir / "100"), str(mitdb_dir / "102"),
                        "--device", "cpu", "--format", "csv")  # 102 is paced: V5 and V2 only
    assert result.returncode == 0, result.stderr[-2000:]
    warned = [line for line in result.stderr.splitlines() if "ecgcap" in line]
    assert warned == [f"python -m ecgcap.classify_ecg: warning: {mitdb_dir / '102'}: no lead "
                      "'MLII' (leads: V5, V2); classified on the first lead, V5, which the "
                      "model was not trained on (--lead NAME picks another)"]
    rows = result.stdout.splitlines()
    assert rows[0].startswith("record,sample,label")
    assert sum(row.startswith("100,") for row in rows) == 2271
    assert sum(row.startswith("102,") for row in rows) > 2000
    # an explicit --lead that a record lacks is still an error, in one line
    result = run_module("ecgcap.classify_ecg", str(mitdb_dir / "100"), "--lead", "V2",
                        "--device", "cpu", "--format", "csv")
    _one_line_error(result, f"{mitdb_dir / '100'}: --lead: no lead 'V2' (leads: MLII, V5)")
    a_file = tmp_path / "out"
    a_file.write_text("not a folder")
    result = run_module("ecgcap.classify_ecg", str(mitdb_dir / "100"), "--format", "wfdb",
                        "--out-dir", str(a_file), "--device", "cpu")
    _one_line_error(result, f"--out-dir {a_file}: is a file, not a folder")
    assert a_file.read_text() == "not a folder"


def test_sampling_rate_too_low_for_the_filters_is_a_clear_error():
    from ecgcap.ecg.dataset import BeatConfig, beats_from_signal

    x = np.random.default_rng(0).normal(size=3000).astype(np.float32)
    with pytest.raises(EcgcapError, match="sampling rate 50 Hz is too low for the 40 Hz"):
        beats_from_signal(x, 50.0, np.arange(100, 2900, 60), BeatConfig())


def test_unknown_database_leaves_nothing(tmp_path):
    result = run_module("ecgcap.train_ecg", "--db", "nosuch", "--runs-dir", str(tmp_path / "r"),
                        "--device", "cpu")
    _one_line_error(result, "nosuch")
    assert not (tmp_path / "r").exists()


def test_unreadable_annotation_file_is_named(record_copy, tmp_path):
    atr = record_copy.with_suffix(".atr")
    atr.write_bytes(atr.read_bytes()[:3001])  # cut inside a 2-byte annotation word
    result = _classify(record_copy, tmp_path / "out", "--annotations", "atr")
    _one_line_error(result, "100.atr", "unreadable annotation file")
    assert not (tmp_path / "out").exists()


def test_truncated_or_foreign_model_files_are_refused(mitdb_dir, tmp_path):
    shipped = Path(__file__).parents[1] / "models"
    cut = tmp_path / "cut.keras"
    data = (shipped / "mitdb_lstm_beats.keras").read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    for model, phrase in [(cut, "cut.keras"),
                          (shipped / "rsicd_captioner.keras", "not ecg-beats")]:
        result = run_module("ecgcap.classify_ecg", str(mitdb_dir / "100"), "--model",
                            str(model), "--device", "cpu")
        _one_line_error(result, phrase)


def test_negative_class_weight_power_is_refused(tmp_path):
    result = run_module("ecgcap.train_ecg", "--class-weight-power", "-1", "--runs-dir",
                        str(tmp_path / "r"), "--device", "cpu")
    _one_line_error(result, "--class-weight-power -1.0: must be 0 or more")
    assert not (tmp_path / "r").exists()


def test_clipped_signals_are_flagged(mitdb_dir, tmp_path):
    from ecgcap.ecg.processing import clipped_fraction, clipping_note

    rec = io.read_record(mitdb_dir / "100")
    x = io.signal_of(rec)[:, 0]
    assert clipped_fraction(x) < 0.001 and clipping_note(x) is None  # a real, unclipped lead
    lo, hi = np.percentile(x, [1, 95])
    clipped = np.clip(x, lo, hi)  # an amplifier saturating on both sides
    assert clipped_fraction(clipped) > 0.03
    assert "sits flat at its limits (clipped?)" in clipping_note(clipped)

    # through the training pipeline: a clipped copy of record 100 is flagged by name
    signals = np.clip(io.signal_of(rec), lo, hi)
    wfdb.wrsamp("100", fs=rec.fs, units=rec.units, sig_name=rec.sig_name, p_signal=signals,
                fmt=["212", "212"], adc_gain=rec.adc_gain, baseline=rec.baseline,
                write_dir=str(tmp_path))
    shutil.copy(mitdb_dir / "100.atr", tmp_path / "100.atr")
    from ecgcap.ecg.databases import get_database
    from ecgcap.ecg.dataset import BeatConfig, prepare_record

    with pytest.warns(UserWarning, match=r"100: .*% of the signal sits flat at its limits"):
        prepare_record(tmp_path / "100", get_database("mitdb"), BeatConfig())


def _write_lead(folder: Path, name: str, signal: np.ndarray, fs: float = 360.0) -> Path:
    wfdb.wrsamp(name, fs=fs, units=["mV"], sig_name=["MLII"], p_signal=signal[:, None],
                fmt=["16"], adc_gain=[200.0], baseline=[0], write_dir=str(folder))
    return folder / name


def _damage(kind: str, record: Path) -> tuple[Path, list[str]]:
    """Damage the copy of record 100 the way ``kind`` says; return the record to classify
    and extra options."""
    folder = record.parent
    if kind == "missing record":
        return folder / "nosuch", []
    if kind == "missing folder":
        return folder / "nosuch" / "100", []
    if kind == "header without signal file":
        record.with_suffix(".dat").unlink()
    elif kind == "corrupt signal file":  # same length, some bytes zeroed: only the checksum knows
        dat = record.with_suffix(".dat")
        data = bytearray(dat.read_bytes())
        data[5000:5012] = bytes(12)
        dat.write_bytes(bytes(data))
    elif kind == "header with another number of signals":
        header = record.with_suffix(".hea")
        lines = header.read_text().splitlines()
        lines[0] = lines[0].replace("100 2 ", "100 3 ", 1)
        lines.insert(3, lines[2].replace("V5", "V6"))
        header.write_text("\n".join(lines) + "\n")
    elif kind == "missing annotation file":
        record.with_suffix(".atr").unlink()
        return record, ["--annotations", "atr"]
    elif kind == "all-zero signal":
        return _write_lead(folder, "zero", np.zeros(7200)), []
    elif kind == "NaN signal":
        return _write_lead(folder, "nan", np.full(7200, np.nan)), []
    elif kind == "shorter than one window":
        return _write_lead(folder, "short", np.random.default_rng(0).normal(0, 0.1, 100)), []
    return record, []


@pytest.mark.parametrize("kind, phrase", [
    ("missing record", "no header file (.hea)"),
    ("missing folder", "no such record folder"),
    ("header without signal file", "signal file missing (100.dat)"),
    ("corrupt signal file", "do not add up to the header's checksum"),
    ("header with another number of signals", "the header needs 2,925,000 (3 signals"),
    ("missing annotation file", "no annotation file .atr"),
    ("all-zero signal", "signal is constant"),
    ("NaN signal", "no valid samples"),
    ("shorter than one window", "shorter than the 2 s minimum"),
])
def test_damaged_records_are_one_line_through_classify_ecg(kind, phrase, record_copy, tmp_path):
    record, extra = _damage(kind, record_copy)
    out = tmp_path / "out"
    _one_line_error(_classify(record, out, *extra), str(record), phrase)
    assert not out.exists()


def test_a_record_at_another_sampling_rate_is_resampled(record_copy, tmp_path):
    """A minute of record 100 written at 250 Hz: the beat model (180 Hz) still labels it."""
    from scipy.signal import resample_poly

    x = io.signal_of(io.read_record(record_copy))[:360 * 60, 0]
    record = _write_lead(tmp_path, "r250", resample_poly(x, 25, 36), fs=250.0)
    result = run_module("ecgcap.classify_ecg", str(record), "--format", "json",
                        "--device", "cpu", "-q")
    assert result.returncode == 0, result.stderr[-2000:]
    [out] = json.loads(result.stdout)
    assert out["fs"] == 250.0 and out["positions"] == "xqrs"
    assert 60 <= len(out["beats"]) <= 90  # record 100: about 75 beats a minute
    assert sum(b["label"] == "N" for b in out["beats"]) >= 0.9 * len(out["beats"])


def test_empty_records_list_or_missing_record_is_one_line_through_train_ecg(tmp_path):
    """... and the run folder made for the run is removed again (prepared data is cached
    apart from it, and a cache never answers for a record that is not there)."""
    db = tmp_path / "mitdb"
    db.mkdir()
    (db / "RECORDS").write_text("\n")
    command = ["ecgcap.train_ecg", "--data-dir", str(db), "--runs-dir", str(tmp_path / "runs"),
               "--device", "cpu"]
    _one_line_error(run_module(*command), "RECORDS", "the RECORDS list is empty")
    assert not (tmp_path / "runs").exists()
    (db / "RECORDS").write_text("100\n101\n")  # listed, but not in the folder
    _one_line_error(run_module(*command), str(db / "101"), "no header file (.hea)")
    assert not (tmp_path / "runs").exists()

    # --overwrite of an earlier run that then fails on the data leaves that run as it was
    old = tmp_path / "runs" / "mine"
    old.mkdir(parents=True)
    (old / "model.keras").write_bytes(b"earlier run")
    _one_line_error(run_module(*command, "--name", "mine", "--overwrite"), str(db / "101"),
                    "no header file (.hea)")
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["mine"]
    assert (old / "model.keras").read_bytes() == b"earlier run"
